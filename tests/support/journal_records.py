"""Numbered command records for the journal tests: record ``seq`` is the same bytes in every test
and in a child process, so what a test reads back can be compared with what it wrote."""
from __future__ import annotations

from matching.records import CommandType, Side, pack_command


def cmd(seq: int) -> bytes:
    return pack_command(seq=seq, ts=1_700_000_000_000_000_000 + seq, session_id=7, symbol_id=seq % 3,
                        type=CommandType.CMD_NEW, side=Side.SIDE_BUY if seq % 2 else Side.SIDE_SELL,
                        ord_type=1, tif=1, cl_ord_id=seq * 10, price=100 * (seq % 50 + 1), qty=seq)


def cmds(first: int, n: int) -> bytes:
    """Records first .. first + n - 1, back to back."""
    return b"".join(cmd(s) for s in range(first, first + n))
