"""Journaled symbol definitions (CMD_SYMBOL_ADD): the core grows its books, the codec's symbol
table grows, and symbol ids survive restarts whatever the order of the symbols in the config."""
from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest
from support.gateway_harness import limit, login, make_config, running_gateway

from gateway.engine import Engine, LegacyJournalError
from matching.core import MatchingCore
from matching.records import (
    COMMAND_RECORD_SIZE,
    EVENT_RECORD_SIZE,
    CommandType,
    EventType,
    RejectReason,
    Side,
    command_symbol_name,
    pack_command,
    pack_symbol_add,
    unpack_command,
    unpack_event,
)
from matching.ring import SpscRing
from persistence.journal import Journal
from protocol.messages import BookQuery, BookSnapshot, OrderAccepted, OrderRejected
from protocol.symbols import UNKNOWN_SYMBOL, SymbolTable

BUY, SELL = Side.SIDE_BUY, Side.SIDE_SELL


def _events(ring: SpscRing) -> list[dict[str, int]]:
    raw = ring.pop()
    return [unpack_event(raw, off) for off in range(0, len(raw), 128)]


def test_core_symbol_add_grows_updates_and_rejects() -> None:
    core = MatchingCore([])
    cmds, evs = SpscRing(1024, COMMAND_RECORD_SIZE), SpscRing(1024, EVENT_RECORD_SIZE)
    for i in range(37):  # past several doublings of the books array
        cmds.push(pack_symbol_add(i, f"S{i}", 100 + i, 1000))
    cmds.push(pack_symbol_add(40, "GAP", 100, 1000))        # ids must be contiguous
    cmds.push(pack_symbol_add(37, "ZERO", 0, 1000))         # tick must be positive
    assert core.process(cmds, evs) == 39
    assert core.n_symbols == 37
    rejects = _events(evs)
    assert [(e["type"], e["reason"], e["symbol_id"]) for e in rejects] == [
        (EventType.EVT_REJECTED, RejectReason.REJ_INVALID_FIELD, 40),
        (EventType.EVT_REJECTED, RejectReason.REJ_INVALID_FIELD, 37)]
    # every book works, including the last grown one; the tick is the one defined
    for sym in (0, 36):
        tick = 100 + sym
        cmds.push(pack_command(type=CommandType.CMD_NEW, session_id=1, symbol_id=sym, side=SELL,
                               ord_type=1, tif=1, cl_ord_id=sym + 1, price=tick * 50, qty=10))
    cmds.push(pack_command(type=CommandType.CMD_NEW, session_id=1, symbol_id=36, side=SELL,
                           ord_type=1, tif=1, cl_ord_id=99, price=100 * 50, qty=10))  # off tick 136
    core.process(cmds, evs)
    got = _events(evs)
    assert [e["type"] for e in got] == [EventType.EVT_ACCEPTED] * 2 + [EventType.EVT_REJECTED]
    assert got[2]["reason"] == RejectReason.REJ_INVALID_PRICE
    assert core.book_levels(36, SELL) == [(136 * 50, 10, 1)]
    # redefining an existing id changes tick/max_qty and keeps the resting order
    cmds.push(pack_symbol_add(36, "S36", 1, 5))
    cmds.push(pack_command(type=CommandType.CMD_NEW, session_id=2, symbol_id=36, side=BUY,
                           ord_type=1, tif=1, cl_ord_id=1, price=136 * 50, qty=6))
    cmds.push(pack_command(type=CommandType.CMD_NEW, session_id=2, symbol_id=36, side=BUY,
                           ord_type=1, tif=1, cl_ord_id=2, price=136 * 50 + 1, qty=5))
    core.process(cmds, evs)
    got = _events(evs)
    assert got[0]["type"] == EventType.EVT_REJECTED and got[0]["reason"] == RejectReason.REJ_INVALID_QUANTITY
    assert [e["type"] for e in got[1:]] == [EventType.EVT_ACCEPTED, EventType.EVT_FILL]
    assert core.n_symbols == 37
    # an all-symbol mass cancel walks the grown books
    cmds.push(pack_command(type=CommandType.CMD_MASS_CANCEL, session_id=1, symbol_id=UNKNOWN_SYMBOL,
                           depth=1, cl_ord_id=7))
    core.process(cmds, evs)
    assert _events(evs)[-1]["count"] == 2  # symbol 0, and what is left on the last symbol
    assert core.order_count() == 0


def test_symbol_add_record_layout() -> None:
    rec = pack_symbol_add(3, "BRK.A", 10_000, 7)
    assert len(rec) == COMMAND_RECORD_SIZE
    fields = unpack_command(rec)
    assert (fields["type"], fields["symbol_id"], fields["price"], fields["qty"]) == (
        CommandType.CMD_SYMBOL_ADD, 3, 10_000, 7)
    assert command_symbol_name(rec) == "BRK.A"
    with pytest.raises(ValueError):
        pack_symbol_add(0, "TOOLONGNAME", 1, 1)


def test_symbol_table_add_keeps_every_lookup() -> None:
    table = SymbolTable(["AAPL"])
    names = ["AAPL"] + [f"X{i}" for i in range(300)]
    for n in names[1:]:
        assert table.add(n) == names.index(n)
    assert len(table) == len(names)
    assert all(table.lookup(n) == i for i, n in enumerate(names))
    assert table.lookup(b"X299    ") == 300 and table.lookup("NOPE") == UNKNOWN_SYMBOL
    with pytest.raises(ValueError):
        table.add("X7")
    with pytest.raises(ValueError):
        table.add("")


def _symbols_env(*specs: tuple[str, int]) -> str:
    return json.dumps([{"name": n, "tick": t} for n, t in specs])


async def test_symbol_ids_survive_a_reordered_config(tmp_path: Path) -> None:
    """The bug this fixes: ids were the config order, so a reordered or extended config
    silently moved resting orders to another book on replay."""
    cfg = make_config(tmp_path, symbols=_symbols_env(("AAPL", 100), ("MSFT", 100)))
    async with running_gateway(cfg) as gw:
        assert gw.engine.symbol_names == ["AAPL", "MSFT"]
        c = await login(cfg, "alice")
        c.send(limit(1, SELL, 3_000_000, 10, symbol="MSFT"))
        assert isinstance(await c.recv(), OrderAccepted)
        await c.logout()
    # reordered (the old code gave MSFT id 0 here, its order would replay onto the new GOOG), a
    # new symbol, MSFT's tick made coarser
    cfg2 = make_config(tmp_path, listen=cfg.listen, metrics_listen=cfg.metrics_listen,
                       symbols=_symbols_env(("MSFT", 10_000), ("GOOG", 100), ("AAPL", 100)))
    async with running_gateway(cfg2) as gw:
        assert gw.engine.symbol_names == ["AAPL", "MSFT", "GOOG"]
        assert gw.engine.symbol_params["MSFT"] == (10_000, 10_000_000)
        c = await login(cfg2, "alice")
        c.send(BookQuery(request_id=1, symbol="MSFT", depth=5))
        snap = await c.recv()
        assert isinstance(snap, BookSnapshot)
        assert [(lv.price, lv.size) for lv in snap.asks] == [(3_000_000, 10)]
        c.send(BookQuery(request_id=2, symbol="AAPL", depth=5))
        snap = await c.recv()
        assert isinstance(snap, BookSnapshot) and snap.asks == [] and snap.bids == []
        c.send(limit(2, SELL, 3_000_100, 10, symbol="MSFT"))  # not a multiple of the new tick
        rej = await c.recv()
        assert isinstance(rej, OrderRejected) and rej.reason == RejectReason.REJ_INVALID_PRICE
        c.send(limit(3, BUY, 2_000_000, 10, symbol="GOOG"))
        assert isinstance(await c.recv(), OrderAccepted)
        await c.logout()
    # a third start replays the definitions and journals nothing new
    journal = Journal(str(tmp_path))
    journal.open()
    types = [unpack_command(chunk, off)["type"] for chunk in journal.replay()
             for off in range(0, len(chunk), COMMAND_RECORD_SIZE)]
    journal.close()
    # a full replay (the shutdown snapshots left aside) ...
    engine = Engine(msgspec.structs.replace(cfg2, snapshot_dir=str(tmp_path / "no-snapshots")))
    stats = engine.recover()
    assert stats.symbols == types.count(CommandType.CMD_SYMBOL_ADD) == 4  # 2 + GOOG + MSFT's tick
    assert engine.sequencer.next_seq == len(types) + 1
    assert engine.symbol_names == ["AAPL", "MSFT", "GOOG"]
    engine.close()
    # ... and a start from the shutdown snapshot agree
    engine = Engine(cfg2)
    stats = engine.recover()
    assert stats.snapshot_seq == len(types) and stats.commands == 0
    assert engine.symbol_names == ["AAPL", "MSFT", "GOOG"]
    assert engine.symbol_params["MSFT"] == (10_000, 10_000_000)
    engine.close()


def test_legacy_journal_is_refused(tmp_path: Path) -> None:
    # a journal of the previous version starts with a session open, not a symbol definition
    rec = bytearray(pack_command(type=CommandType.CMD_SESSION_OPEN, session_id=1, account="alice"))
    rec[0:8] = (1).to_bytes(8, "little")
    with Journal(str(tmp_path)) as j:
        j.append(bytes(rec))
    engine = Engine(make_config(tmp_path))
    with pytest.raises(LegacyJournalError, match="before symbol definitions"):
        engine.recover()
    engine.close()
