"""Type stub of the compiled protocol.decoder (see decoder.pyx for the documentation)."""
from enum import IntEnum
from typing import Any

__all__ = ["DecodeStatus", "NEED_MORE", "SESSION_MESSAGE", "RING_FULL", "MALFORMED", "UNKNOWN_TEMPLATE",
           "decode_orders"]

from protocol.symbols import SymbolTable

_Buffer = bytes | bytearray | memoryview

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

def decode_orders(buffer: _Buffer, start: int, end: int, ring: Any, session_id: int,
                  symbols: SymbolTable, recv_ts: int, sofh: bool = True, account_id: int = 0,
                  stp_default: int = 0) -> tuple[int, int, int]: ...
