"""How the ``hftgw`` command reads prices from its arguments and prints decoded messages (prices
in 1e-4 currency units on the wire, as decimal text here)."""
from __future__ import annotations

import argparse
from decimal import Decimal, InvalidOperation
from enum import IntEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from protocol.messages import Message

PRICE_SCALE = 10_000  # price units per currency unit (1e-4, as Nasdaq ITCH Price(4))


def price_units(text: str) -> int:
    """'150.25' (currency) -> 1502500 price units.  Raises argparse.ArgumentTypeError."""
    try:
        d = Decimal(text) * PRICE_SCALE
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"not a price: {text!r}") from None
    if d != d.to_integral_value():
        raise argparse.ArgumentTypeError(f"{text} is finer than 1e-4")
    return int(d)


def fmt_price(units: int) -> str:
    """1502500 price units -> '150.25'."""
    return f"{Decimal(units) / PRICE_SCALE:.4f}".rstrip("0").rstrip(".")


def describe(m: Message) -> str:
    """A readable one-line rendering of a decoded protocol message."""
    from matching.records import (
        CancelReason,
        Liquidity,
        LoginRejectReason,
        MassCancelScope,
        OrdType,
        RejectReason,
        Side,
        StpMode,
        TimeInForce,
    )

    def enum_name(cls: type[IntEnum], v: int, prefix: str) -> str:
        try:
            return str(cls(v).name).removeprefix(prefix)
        except ValueError:
            return str(v)

    name = type(m).__name__
    parts = [f"seq={m.seq_num}"] if hasattr(m, "seq_num") else []
    parts.append(name)
    for f in m.__struct_fields__:
        if f in ("seq_num", "transact_time"):
            continue
        v = getattr(m, f)
        if f in ("side", "aggressor_side"):
            v = enum_name(Side, v, "SIDE_")
        elif f == "time_in_force":
            v = enum_name(TimeInForce, v, "TIF_")
        elif f == "ord_type":
            v = enum_name(OrdType, v, "ORD_")
        elif f == "stp_mode":
            v = enum_name(StpMode, v, "STP_")
        elif f == "scope":
            v = enum_name(MassCancelScope, v, "SCOPE_")
        elif f == "flags":
            v = "POST_ONLY" if v & 1 else "-"
        elif f == "liquidity":
            v = enum_name(Liquidity, v, "LIQ_")
        elif f == "reason":
            cls = {"OrderCanceled": CancelReason, "LoginRejected": LoginRejectReason}.get(name, RejectReason)
            v = enum_name(cls, v, {CancelReason: "CXL_", LoginRejectReason: "LOGIN_"}.get(cls, "REJ_"))
        elif f in ("price", "last_px", "stop_px", "bid_price", "ask_price", "avg_price", "realized_pnl"):
            v = fmt_price(v)           # realized P&L: price units x lots = 1e-4 currency too
        elif f in ("bids", "asks"):
            v = "[" + ", ".join(f"{fmt_price(lv.price)} x {lv.size} ({lv.order_count})" for lv in v) + "]"
        parts.append(f"{f}={v}")
    return " ".join(str(p) for p in parts)
