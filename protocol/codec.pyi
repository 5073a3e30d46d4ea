"""Type stub of the compiled protocol.codec (see codec.pyx for the documentation)."""
from array import array
from collections.abc import Iterable
from enum import IntEnum
from typing import Any

from protocol.messages import Message
from protocol.messages import ProtocolError as ProtocolError

_Buffer = bytes | bytearray | memoryview
_Fields = list[tuple[str, int, int, str]]

class DecodeStatus(IntEnum):
    NEED_MORE = 0
    SESSION_MESSAGE = 1
    RING_FULL = 2
    MALFORMED = 3
    UNKNOWN_TEMPLATE = 4

NEED_MORE: DecodeStatus
SESSION_MESSAGE: DecodeStatus
RING_FULL: DecodeStatus
MALFORMED: DecodeStatus
UNKNOWN_TEMPLATE: DecodeStatus

SCHEMA_ID: int
SCHEMA_VERSION: int
SOFH_ENCODING: int
MAX_FRAME_SIZE: int
MIN_FRAME_SIZE: int
UNKNOWN_SYMBOL: int
LAYOUT: dict[int, tuple[str, int, _Fields]]
GROUPS: dict[int, list[tuple[str, int, _Fields]]]
VAR_DATA: dict[int, list[tuple[str, str]]]

class SymbolTable:
    count: int
    def __init__(self, names: Iterable[str]) -> None: ...
    def __len__(self) -> int: ...
    @property
    def names(self) -> list[str]: ...
    def lookup(self, symbol: str | bytes) -> int: ...
    def name(self, symbol_id: int) -> str: ...
    def add(self, name: str) -> int: ...

def encode(msg: Message, sofh: bool = True) -> bytes: ...
def decode_message(buf: _Buffer) -> Message: ...
def decode_frames(buf: _Buffer, start: int = 0, sofh: bool = True) -> tuple[list[Message], int]: ...
def decode_next(buf: _Buffer, start: int = 0, sofh: bool = True) -> tuple[Message | None, int]: ...
def message_length(buf: _Buffer, pos: int = 0) -> int: ...
def decode_orders(buffer: _Buffer, start: int, end: int, ring: Any, session_id: int,
                  symbols: SymbolTable, recv_ts: int, sofh: bool = True, account_id: int = 0,
                  stp_default: int = 0) -> tuple[int, int, int]: ...
def scan_responses(buf: _Buffer, start: int = 0) -> tuple[array[int], int]: ...
def is_order_template(template_id: int) -> bool: ...
def strip_sofh(data: _Buffer) -> bytes: ...
def sofh_scan(data: _Buffer, skip: int = 0) -> tuple[int, int]: ...
