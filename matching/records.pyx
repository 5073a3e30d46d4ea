# cython: language_level=3
"""Fixed-size command and event records (DESIGN §1), seen from Python.

The C layouts live in ``records.pxd``; this module exposes the enums to Python and a
``struct`` format for each record so that tests and tools can build and read records
without C.  Both formats are checked against ``sizeof`` at import, so the two cannot drift.
"""
import struct


from matching.records cimport CMD_SYMBOL_ADD, Command, Event

COMMAND_RECORD_SIZE = sizeof(Command)
EVENT_RECORD_SIZE = sizeof(Event)
UNKNOWN_SYMBOL = 0xFFFFFFFF

#: field names in record order, and the little-endian struct format of a Command
COMMAND_FIELDS = ("seq", "ts", "session_id", "symbol_id", "type", "side", "ord_type", "tif",
                  "flags", "stp", "depth", "cl_ord_id", "orig_cl_ord_id", "price", "qty",
                  "stop_price", "display_qty", "account_id", "scope", "pad0", "pad1", "reserved")
COMMAND_STRUCT = struct.Struct("<QQIIBBBBBBHQQqQqQIBBHQ")
#: field names in record order, and the little-endian struct format of an Event
EVENT_FIELDS = ("seq", "ts", "session_id", "symbol_id", "type", "side", "reason",
                "contra_session", "cl_ord_id", "order_id", "price", "qty", "leaves", "ref",
                "contra_cl_ord_id", "contra_order_id", "contra_leaves", "count", "count2",
                "ord_type", "tif", "flags", "pad0", "pad1", "recv_ts")
EVENT_STRUCT = struct.Struct("<QQIIBBHIQQqQQQQQQIIBBBBIQ")

if COMMAND_STRUCT.size != sizeof(Command) or sizeof(Command) != 96:
    raise ImportError(f"Command record is {sizeof(Command)} bytes, struct says {COMMAND_STRUCT.size}")
if EVENT_STRUCT.size != sizeof(Event) or sizeof(Event) != 128:
    raise ImportError(f"Event record is {sizeof(Event)} bytes, struct says {EVENT_STRUCT.size}")


def pack_command(**fields) -> bytes:
    """Build one 96-byte Command record; missing fields are 0.

    ``account`` (str, at most 32 ASCII bytes) may be given for CMD_SESSION_OPEN instead of
    the order fields (bytes 32..64), with ``session_name`` (str, at most 16 ASCII bytes; bytes
    64..80); ``symbol`` (str, at most 8 ASCII bytes) for CMD_SYMBOL_ADD
    (bytes 32..40).  Raises KeyError for an unknown field name, struct.error for a value out of
    range, ValueError for a name too long or not ASCII.
    """
    account = fields.pop("account", None)
    session_name = fields.pop("session_name", None)
    symbol = fields.pop("symbol", None)
    for k in fields:
        if k not in COMMAND_FIELDS:
            raise KeyError(k)
    rec = bytearray(COMMAND_STRUCT.pack(*[fields.get(k, 0) for k in COMMAND_FIELDS]))
    if account is not None:
        raw = account.encode("ascii")
        if len(raw) > 32:
            raise ValueError("account longer than 32 bytes")
        rec[32:64] = raw.ljust(32, b"\0")
    if session_name is not None:
        raw = session_name.encode("ascii")
        if len(raw) > 16:
            raise ValueError("session name longer than 16 bytes")
        rec[64:80] = raw.ljust(16, b"\0")
    if symbol is not None:
        raw = symbol.encode("ascii")
        if len(raw) > 8:
            raise ValueError("symbol longer than 8 bytes")
        rec[32:40] = raw.ljust(8, b"\0")
    return bytes(rec)


def unpack_command(data, offset: int = 0) -> dict:
    """Read one Command record at ``offset`` of a bytes-like object into a dict."""
    return dict(zip(COMMAND_FIELDS, COMMAND_STRUCT.unpack_from(data, offset)))


def command_account(data, offset: int = 0) -> str:
    """The account name carried by a CMD_SESSION_OPEN record."""
    return bytes(data[offset + 32:offset + 64]).rstrip(b"\0").decode("ascii")


def command_session_name(data, offset: int = 0) -> str:
    """The session name carried by a CMD_SESSION_OPEN record ("" = the account's default
    session, as in every journal written before sessions had names)."""
    return bytes(data[offset + 64:offset + 80]).rstrip(b"\0").decode("ascii")


cdef Command _probe
#: byte offset of the 8-byte symbol name in a CMD_SYMBOL_ADD record (the cl_ord_id field)
SYMBOL_NAME_OFFSET = <Py_ssize_t>(<char *>&_probe.cl_ord_id - <char *>&_probe)


def pack_symbol_add(symbol_id: int, name: str, tick: int, max_qty: int, ts: int = 0) -> bytes:
    """Build one CMD_SYMBOL_ADD record: define symbol id ``symbol_id`` as ``name`` (1 to 8
    ASCII characters) with ``tick`` (price units, > 0) and ``max_qty`` (lots, > 0); ``ts`` in ns.
    Raises ValueError for a bad name, struct.error for values out of range."""
    raw = name.encode("ascii")
    if not 1 <= len(raw) <= 8 or b"\0" in raw:
        raise ValueError(f"symbol name must be 1 to 8 ASCII characters, got {name!r}")
    rec = bytearray(pack_command(type=CMD_SYMBOL_ADD, symbol_id=symbol_id, price=tick, qty=max_qty,
                                 ts=ts))
    rec[SYMBOL_NAME_OFFSET:SYMBOL_NAME_OFFSET + 8] = raw.ljust(8, b"\0")
    return bytes(rec)


def command_symbol_name(data, offset: int = 0) -> str:
    """The symbol name carried by a CMD_SYMBOL_ADD record."""
    start = offset + SYMBOL_NAME_OFFSET
    return bytes(data[start:start + 8]).rstrip(b"\0").decode("ascii")


def pack_event(**fields) -> bytes:
    """Build one 128-byte Event record; missing fields are 0.  Raises KeyError, struct.error."""
    for k in fields:
        if k not in EVENT_FIELDS:
            raise KeyError(k)
    return EVENT_STRUCT.pack(*[fields.get(k, 0) for k in EVENT_FIELDS])


def unpack_event(data, offset: int = 0) -> dict:
    """Read one Event record at ``offset`` of a bytes-like object into a dict."""
    return dict(zip(EVENT_FIELDS, EVENT_STRUCT.unpack_from(data, offset)))
