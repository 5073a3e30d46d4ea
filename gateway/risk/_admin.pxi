# Included by pretrade.pyx: admin actions (halt/resume, kill switch, limit changes) as
# CMD_ADMIN records, and how one is applied to the risk state.

class AdminAction(IntEnum):
    """CMD_ADMIN actions (the record's ``side`` byte)."""

    HALT = 1
    RESUME = 2
    BLOCK = 3            # kill switch: new orders refused (the engine also cancels the orders)
    RELEASE = 4
    SET_SYMBOL_LIMIT = 5
    SET_ACCOUNT_LIMIT = 6


class RiskField(IntEnum):
    """Limits a CMD_ADMIN may change (the record's ``ord_type`` byte).

    Units: quantities in lots, notional in price units x lots, prices in price units, the band
    in ticks or in millionths (ppm) of the reference price (1 % = 10000).
    """

    MAX_ORDER_QTY = 1        # symbol or account
    MAX_NOTIONAL = 2         # symbol or account
    MAX_OPEN_ORDERS = 3      # account
    MAX_POSITION_NET = 4     # account, one symbol or all
    MAX_POSITION_GROSS = 5   # account, one symbol or all
    PRICE_BAND_TICKS = 6     # symbol
    PRICE_BAND_PPM = 7       # symbol
    REFERENCE_PRICE = 8      # symbol


SYMBOL_FIELDS = frozenset({RiskField.MAX_ORDER_QTY, RiskField.MAX_NOTIONAL, RiskField.PRICE_BAND_TICKS,
                           RiskField.PRICE_BAND_PPM, RiskField.REFERENCE_PRICE})
ACCOUNT_FIELDS = frozenset({RiskField.MAX_ORDER_QTY, RiskField.MAX_NOTIONAL, RiskField.MAX_OPEN_ORDERS,
                            RiskField.MAX_POSITION_NET, RiskField.MAX_POSITION_GROSS})
# seq, ts, value, type, action, field, 0, 0, 0, symbol+1, account, then zeros to the 96-byte record
_ADMIN = struct.Struct("<QQqBBBBBBH32s32x")


def admin_record(action: int, *, account: str = "", symbol_id: int | None = None, field: int = 0,
                 value: int = 0, ts: int = 0) -> bytes:
    """One 96-byte CMD_ADMIN record (COMMAND_RECORD_SIZE; layout in matching/records.pxd).

    Raises ValueError for an account that is not 1-32 ASCII bytes when given, a symbol id over
    65534, or a value outside int64.
    """
    raw = account.encode("ascii") if account.isascii() else b"\xff" * 33
    if len(raw) > ACCOUNT_NAME_BYTES:
        raise ValueError("account must be at most 32 ASCII characters")
    if symbol_id is not None and not (0 <= symbol_id < 0xFFFF):
        raise ValueError(f"symbol id {symbol_id} out of range")
    if not (-(1 << 63) <= value < (1 << 63)):
        raise ValueError("value out of int64 range")
    return _ADMIN.pack(0, ts, value, CMD_ADMIN, int(action), int(field), 0, 0, 0,
                       0 if symbol_id is None else symbol_id + 1, raw)


def parse_admin(record) -> dict:
    """The fields of a CMD_ADMIN record: action, field, value, symbol_id (None), account."""
    _, ts, value, typ, action, field, _, _, _, sym1, raw = _ADMIN.unpack_from(record, 0)
    if typ != CMD_ADMIN:
        raise ValueError(f"not a CMD_ADMIN record (type {typ})")
    return {"action": action, "field": field, "value": value, "ts": ts,
            "symbol_id": None if sym1 == 0 else sym1 - 1,
            "account": raw.rstrip(b"\0").decode("ascii", "replace")}


cdef dict _apply_admin(RiskEngine r, record):
    # apply one CMD_ADMIN record: halt/resume, kill switch, or a limit change
    d = parse_admin(record)
    action, field, value, symbol_id, account = (d["action"], d["field"], d["value"],
                                                d["symbol_id"], d["account"])
    if symbol_id is not None and symbol_id >= r.n_symbols:
        raise ValueError(f"unknown symbol id {symbol_id}")
    if action in (AdminAction.HALT, AdminAction.RESUME):
        if symbol_id is None:
            raise ValueError("halt/resume needs a symbol")
        r.sym[symbol_id].halted = action == AdminAction.HALT
        return d
    if action in (AdminAction.BLOCK, AdminAction.RELEASE, AdminAction.SET_ACCOUNT_LIMIT) and not account:
        raise ValueError("this action needs an account")
    if action in (AdminAction.BLOCK, AdminAction.RELEASE):
        r._account(account).blocked = action == AdminAction.BLOCK
        return d
    if value < 0:
        raise ValueError("limits are >= 0 (0 = no limit)")
    if action == AdminAction.SET_SYMBOL_LIMIT:
        if symbol_id is None or field not in SYMBOL_FIELDS:
            raise ValueError("a symbol limit needs a symbol and one of "
                             + ", ".join(f.name for f in sorted(SYMBOL_FIELDS)))
        _set_symbol_limit(&r.sym[symbol_id], field, value)
        return d
    if action == AdminAction.SET_ACCOUNT_LIMIT:
        if field not in ACCOUNT_FIELDS:
            raise ValueError("an account limit is one of "
                             + ", ".join(f.name for f in sorted(ACCOUNT_FIELDS)))
        if symbol_id is not None and field not in (RiskField.MAX_POSITION_NET,
                                                   RiskField.MAX_POSITION_GROSS):
            raise ValueError(f"{RiskField(field).name} is per account, not per symbol")
        _set_account_limit(r, r._account(account), account, symbol_id, field, value)
        return d
    raise ValueError(f"unknown admin action {action}")


cdef void _set_symbol_limit(SymbolRisk *sy, int field, int64_t value) except *:
    # one symbol limit (field in SYMBOL_FIELDS, value >= 0); raises ValueError for a
    # reference price off the tick
    if field == RiskField.MAX_ORDER_QTY:
        sy.max_order_qty = value
    elif field == RiskField.MAX_NOTIONAL:
        sy.max_notional = value
    elif field == RiskField.PRICE_BAND_TICKS:
        sy.band_ticks = value
    elif field == RiskField.PRICE_BAND_PPM:
        sy.band_ppm = value
    else:
        if value % sy.tick:
            raise ValueError("the reference price must be a multiple of the tick")
        sy.ref_price = value


cdef void _set_account_limit(RiskEngine r, AccountRisk *ar, str account, symbol_id, int field,
                             int64_t value) except *:
    # one account limit (field in ACCOUNT_FIELDS, value >= 0), in one symbol or all
    cdef uint32_t s
    if field == RiskField.MAX_ORDER_QTY:
        ar.max_order_qty = value
    elif field == RiskField.MAX_NOTIONAL:
        ar.max_notional = value
    elif field == RiskField.MAX_OPEN_ORDERS:
        ar.max_open_orders = value
    else:
        if symbol_id is None:
            # symbols defined later inherit it too
            r._limits[account] = dict(r._limits[account])
            r._limits[account]["max_position_net" if field == RiskField.MAX_POSITION_NET
                               else "max_position_gross"] = value
        for s in range(r.n_symbols):
            if symbol_id is None or s == symbol_id:
                if field == RiskField.MAX_POSITION_NET:
                    ar.pos[s].max_net = value
                else:
                    ar.pos[s].max_gross = value
