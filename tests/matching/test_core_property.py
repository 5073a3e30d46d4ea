"""Differential tests: matching.core.MatchingCore against tests/support/reference_book.py (the oracle).

Command streams (tests/support/command_stream.py: every order type, cancels, replaces, stops, icebergs,
self-trade prevention in every mode, accounts shared by sessions, mass cancels, end of session,
book queries, a symbol added at run time, invalid commands) go through both; the event tuples must
be identical, event by event, and the final state equal: books level by level and order by order,
pending stops in trigger order, last trade prices, every order's fields, id counters.
Hypothesis generates short adversarial streams; a seeded 50k-command stream runs in CI and a
1M-command one behind ``-m slow``.
"""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.command_stream import (
    FIELD_RANGES,
    HYP_SESSIONS,
    HYP_SYMBOLS,
    SESSIONS,
    SYMBOLS,
    iter_seeded_stream,
    make_command,
)
from support.core_harness import Differential

from matching.core import MatchingCore
from matching.records import CommandType, EventType

command_tuple = st.tuples(*(st.integers(lo, hi) for lo, hi in FIELD_RANGES))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(command_tuple, max_size=150), st.sampled_from([8, 16, 4096]),
       st.sampled_from([1, 7, 1000]))
def test_core_matches_reference(tuples: list[tuple[int, ...]], events_capacity: int, batch: int) -> None:
    d = Differential(HYP_SYMBOLS, events_capacity, batch)
    d.feed(make_command(i + 1, t) for i, t in enumerate(tuples))
    d.assert_same_state(HYP_SESSIONS, range(1, 13))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(command_tuple, max_size=120), st.integers(0, 120))
def test_snapshot_restore_continues_identically(tuples: list[tuple[int, ...]], cut: int) -> None:
    """Restore from a snapshot taken at any point, then the rest of the stream: the same events
    as the uninterrupted run, and the same final state."""
    cmds = [make_command(i + 1, t) for i, t in enumerate(tuples)]
    cut = min(cut, len(cmds))
    whole = Differential(HYP_SYMBOLS, 4096, 1000)
    whole.feed(cmds[:cut])
    restored = Differential(HYP_SYMBOLS, 4096, 1000, core=MatchingCore.restore(whole.core.snapshot()))
    restored.ref = whole.ref                         # the oracle goes on from the cut
    restored.feed(cmds[cut:])
    restored.assert_same_state(HYP_SESSIONS, range(1, 13))


def run_seeded(n: int, seed: int, events_capacity: int = 1 << 10, batch: int = 4096) -> Differential:
    d = Differential(SYMBOLS, events_capacity, batch)
    d.feed(iter_seeded_stream(n, seed))
    d.assert_same_state(SESSIONS, range(1, 50))
    return d


def assert_stream_exercises_everything(d: Differential, n: int) -> None:
    """The stream must reach every rule, not just rejects."""
    E = EventType
    c = d.counts
    assert c.get(E.EVT_FILL, 0) > n // 20, c
    assert c.get(E.EVT_TRIGGERED, 0) > n // 1000, c
    assert c.get(E.EVT_REPLACED, 0) > n // 50, c
    assert c.get(E.EVT_CANCELED, 0) > n // 10, c
    assert c.get(E.EVT_MASS_CANCEL_DONE, 0) > n // 200, c
    assert c.get(E.EVT_REJECTED, 0) > n // 100, c
    assert d.core.n_symbols == len(SYMBOLS) + 1             # the book added half-way
    assert d.core.order_count() > 50


def test_seeded_50k_commands() -> None:
    d = run_seeded(50_000, seed=20240601)
    assert_stream_exercises_everything(d, 50_000)


def test_seeded_stream_with_a_tiny_events_ring() -> None:
    # on_events_full mid-command (sweeps, stop cascades, mass cancels) on most batches; 64
    # slots still hold the largest book snapshot of the stream (depth 20: 41 records)
    run_seeded(5_000, seed=7, events_capacity=64, batch=64)


@pytest.mark.slow
def test_seeded_1m_commands() -> None:
    """The long run (python -m pytest -m slow): 1,000,000 commands, compared event by event."""
    d = run_seeded(1_000_000, seed=1)
    assert_stream_exercises_everything(d, 1_000_000)


def test_command_kinds_cover_the_schema() -> None:
    kinds = {make_command(1, (k, 1, 0, 1, 1, 1, 0, 1, 0, 0))["type"] for k in range(24)}
    assert {int(t) for t in (CommandType.CMD_NEW, CommandType.CMD_CANCEL, CommandType.CMD_REPLACE,
                             CommandType.CMD_MASS_CANCEL, CommandType.CMD_BOOK_QUERY,
                             CommandType.CMD_END_OF_SESSION)} <= kinds


def _grid_command(seq: int, op: int, side: int, price: int, qty: int, cl: int) -> dict[str, int]:
    base = dict.fromkeys(("side", "ord_type", "tif", "flags", "stp", "depth", "cl_ord_id",
                          "orig_cl_ord_id", "price", "qty", "stop_price", "display_qty", "scope",
                          "pad0", "pad1", "reserved"), 0)
    base |= dict(seq=seq, ts=1_700_000_000_000_000_000 + seq, session_id=1, account_id=1, symbol_id=0)
    if op == 0:
        return base | dict(type=CommandType.CMD_NEW, side=side, ord_type=1, tif=1, cl_ord_id=cl,
                           price=price, qty=qty)
    if op == 1:
        return base | dict(type=CommandType.CMD_CANCEL, side=side, cl_ord_id=10_000 + seq,
                           orig_cl_ord_id=cl)
    return base | dict(type=CommandType.CMD_SYMBOL_ADD, price=price, qty=1000)   # a new tick


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 9), st.integers(1, 2), st.integers(1, 60), st.integers(1, 9),
                          st.integers(1, 40), st.sampled_from([1, 2, 3, 5, 7, 10])), max_size=200))
def test_levels_found_after_tick_redefinitions(ops: list[tuple[int, ...]]) -> None:
    """A redefined tick leaves resting levels on the older grid; level search bounds itself by
    the grid (the gcd of every level price), so sparse and dense sides, old and new ticks must
    all resolve to the reference's levels."""
    d = Differential([(10, 1000)], 4096, 7)        # coarse first, then finer and other ticks
    tick = 10
    cmds = []
    for seq, (kind, side, steps, qty, cl, new_tick) in enumerate(ops, start=1):
        if kind == 9:                               # one in ten: redefine the tick
            tick = new_tick
            cmds.append(_grid_command(seq, 2, 0, tick, 0, 0))
        elif kind >= 6:
            cmds.append(_grid_command(seq, 1, side, 0, 0, cl))
        else:                                       # bids below 1000, asks above, some crossing
            px = (1000 - steps * tick) if side == 1 else (1000 + steps * tick)
            if kind == 5:
                px = 1000 + (30 * tick if side == 1 else -30 * tick)
            cmds.append(_grid_command(seq, 0, side, px - px % tick if px > tick else tick, qty, cl))
    d.feed(cmds)
    d.assert_same_state(1, range(1, 41))
