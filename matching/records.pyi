"""Type stub of the compiled matching.records (see records.pyx and records.pxd for the
documentation; the enums are the cpdef enums of records.pxd)."""
import struct
from enum import IntEnum
from typing import Any

COMMAND_RECORD_SIZE: int
EVENT_RECORD_SIZE: int
UNKNOWN_SYMBOL: int
SYMBOL_NAME_OFFSET: int
COMMAND_FIELDS: tuple[str, ...]
COMMAND_STRUCT: struct.Struct
EVENT_FIELDS: tuple[str, ...]
EVENT_STRUCT: struct.Struct


class Side(IntEnum):
    SIDE_BUY = 1
    SIDE_SELL = 2

class OrdType(IntEnum):
    ORD_LIMIT = 1
    ORD_MARKET = 2
    ORD_STOP = 3
    ORD_STOP_LIMIT = 4

class TimeInForce(IntEnum):
    TIF_DAY = 0
    TIF_GTC = 1
    TIF_IOC = 3
    TIF_FOK = 4

class OrderFlags(IntEnum):
    FLAG_POST_ONLY = 1

class MassCancelScope(IntEnum):
    SCOPE_SESSION = 0
    SCOPE_ACCOUNT = 1

class StpMode(IntEnum):
    STP_NONE = 0
    STP_CANCEL_NEWEST = 1
    STP_CANCEL_OLDEST = 2
    STP_CANCEL_BOTH = 3
    STP_DECREMENT = 4

class CommandType(IntEnum):
    CMD_NEW = 1
    CMD_CANCEL = 2
    CMD_REPLACE = 3
    CMD_MASS_CANCEL = 4
    CMD_BOOK_QUERY = 5
    CMD_END_OF_SESSION = 6
    CMD_SESSION_OPEN = 10
    CMD_SYMBOL_ADD = 11
    CMD_SESSION_STATE = 12
    CMD_RISK_REJECT = 20
    CMD_ADMIN = 21

class EventType(IntEnum):
    EVT_ACCEPTED = 1
    EVT_REJECTED = 2
    EVT_FILL = 3
    EVT_CANCELED = 4
    EVT_REPLACED = 5
    EVT_CANCEL_REJECTED = 6
    EVT_MASS_CANCEL_DONE = 7
    EVT_BOOK_SNAPSHOT = 8
    EVT_BOOK_LEVEL = 9
    EVT_TRIGGERED = 10

class RejectReason(IntEnum):
    REJ_NONE = 0
    REJ_MALFORMED = 1
    REJ_UNKNOWN_TEMPLATE = 2
    REJ_NOT_LOGGED_IN = 3
    REJ_UNKNOWN_SYMBOL = 4
    REJ_INVALID_PRICE = 5
    REJ_INVALID_QUANTITY = 6
    REJ_DUPLICATE_CL_ORD_ID = 7
    REJ_UNKNOWN_ORDER = 8
    REJ_INVALID_FIELD = 9
    REJ_POST_ONLY_WOULD_TAKE = 10
    REJ_UNSUPPORTED = 11
    REJ_THROTTLED = 12
    REJ_NOT_AUTHORIZED = 13
    REJ_PRICE_BAND = 33
    REJ_MAX_ORDER_QTY = 34
    REJ_MAX_NOTIONAL = 35
    REJ_MAX_OPEN_ORDERS = 36
    REJ_MAX_POSITION_NET = 37
    REJ_MAX_POSITION_GROSS = 38
    REJ_ACCOUNT_BLOCKED = 39
    REJ_SYMBOL_HALTED = 40
    REJ_NO_REFERENCE_PRICE = 41

class CancelReason(IntEnum):
    CXL_USER = 1
    CXL_IOC_REMAINDER = 2
    CXL_NO_LIQUIDITY = 3
    CXL_MASS_CANCEL = 4
    CXL_FOK_UNFILLED = 5
    CXL_DISCONNECT = 6
    CXL_SELF_TRADE = 7
    CXL_EXPIRED = 8
    CXL_KILL_SWITCH = 32

class LoginRejectReason(IntEnum):
    LOGIN_BAD_TOKEN = 1
    LOGIN_TOKEN_EXPIRED = 2
    LOGIN_SESSION_IN_USE = 3
    LOGIN_INVALID_SEQUENCE = 4
    LOGIN_NOT_AUTHORIZED = 5
    LOGIN_ALREADY_LOGGED_IN = 6
    LOGIN_RATE_LIMITED = 32
    LOGIN_SESSION_LIMIT = 33

class Liquidity(IntEnum):
    LIQ_MAKER = 1
    LIQ_TAKER = 2


def pack_command(**fields: Any) -> bytes: ...
def unpack_command(data: Any, offset: int = 0) -> dict[str, int]: ...
def command_account(data: Any, offset: int = 0) -> str: ...
def command_session_name(data: Any, offset: int = 0) -> str: ...
def pack_symbol_add(symbol_id: int, name: str, tick: int, max_qty: int, ts: int = 0) -> bytes: ...
def command_symbol_name(data: Any, offset: int = 0) -> str: ...
def pack_event(**fields: int) -> bytes: ...
def unpack_event(data: Any, offset: int = 0) -> dict[str, int]: ...
