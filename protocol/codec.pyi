"""Type stub of the compiled protocol.codec (see codec.pyx for the documentation)."""
from array import array

from protocol.decoder import MALFORMED as MALFORMED
from protocol.decoder import NEED_MORE as NEED_MORE
from protocol.decoder import RING_FULL as RING_FULL
from protocol.decoder import SESSION_MESSAGE as SESSION_MESSAGE
from protocol.decoder import UNKNOWN_TEMPLATE as UNKNOWN_TEMPLATE
from protocol.decoder import DecodeStatus as DecodeStatus
from protocol.decoder import decode_orders as decode_orders
from protocol.framing import GROUPS as GROUPS
from protocol.framing import LAYOUT as LAYOUT
from protocol.framing import SINCE_VERSION as SINCE_VERSION
from protocol.framing import VAR_DATA as VAR_DATA
from protocol.framing import is_order_template as is_order_template
from protocol.messages import Message
from protocol.messages import ProtocolError as ProtocolError
from protocol.symbols import UNKNOWN_SYMBOL as UNKNOWN_SYMBOL
from protocol.symbols import SymbolTable as SymbolTable

__all__ = [
    "DecodeStatus", "NEED_MORE", "SESSION_MESSAGE", "RING_FULL", "MALFORMED", "UNKNOWN_TEMPLATE",
    "LAYOUT", "GROUPS", "VAR_DATA", "SCHEMA_ID", "SCHEMA_VERSION", "SOFH_ENCODING", "MAX_FRAME_SIZE",
    "MIN_FRAME_SIZE", "SINCE_VERSION",
    "ProtocolError", "SymbolTable", "encode", "decode_message", "decode_frames", "decode_next",
    "message_length", "decode_orders", "scan_responses", "UNKNOWN_SYMBOL", "is_order_template",
]

_Buffer = bytes | bytearray | memoryview

SCHEMA_ID: int
SCHEMA_VERSION: int
SOFH_ENCODING: int
MAX_FRAME_SIZE: int
MIN_FRAME_SIZE: int

def encode(msg: Message, sofh: bool = True) -> bytes: ...
def decode_message(buf: _Buffer) -> Message: ...
def decode_frames(buf: _Buffer, start: int = 0, sofh: bool = True) -> tuple[list[Message], int]: ...
def decode_next(buf: _Buffer, start: int = 0, sofh: bool = True) -> tuple[Message | None, int]: ...
def message_length(buf: _Buffer, pos: int = 0) -> int: ...
def scan_responses(buf: _Buffer, start: int = 0) -> tuple[array[int], int]: ...
def strip_sofh(data: _Buffer) -> bytes: ...
def sofh_scan(data: _Buffer, skip: int = 0) -> tuple[int, int]: ...
