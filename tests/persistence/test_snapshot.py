"""Snapshots (issue 4 item 2): the file format of persistence/snapshot.py, the risk state's
snapshot (gateway/risk/pretrade.pyx), and an Engine restarted from snapshot + journal tail against an
uninterrupted run and a full replay."""
from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import signal
from pathlib import Path
from typing import Any

import msgspec
import pytest
from support.command_stream import ADD, SESSIONS, SYMBOLS, account_of, seeded_stream
from support.gateway_harness import limit, login, make_config, metric_value, scrape, serve_process

from gateway.engine import Engine, SnapshotMismatch
from gateway.risk.pretrade import AdminAction, RiskEngine, RiskField, admin_record
from matching.core import MatchingCore
from matching.records import (
    COMMAND_RECORD_SIZE,
    EVENT_STRUCT,
    UNKNOWN_SYMBOL,
    CommandType,
    EventType,
    Side,
    pack_command,
    unpack_event,
)
from matching.ring import SpscRing
from persistence.snapshot import (
    SnapshotError,
    decode,
    encode,
    list_snapshots,
    load_latest,
    prune,
    read_snapshot,
    snapshot_name,
    write_snapshot,
)
from protocol.codec import decode_frames
from protocol.messages import BookQuery, BookSnapshot, Execution, OrderAccepted
from protocol.outbound import Outbound

BUY, SELL = Side.SIDE_BUY, Side.SIDE_SELL

PARTS = {"core": b"\x01\x02\x03" * 50, "engine": b'{"v": 1}', "empty": b"", "risk": bytes(range(256))}


# -- file format ------------------------------------------------------------------------------------
def test_encode_decode_round_trip() -> None:
    data = encode(42, PARTS, time_ns=123)
    seq, ts, parts = decode(data)
    assert (seq, ts, parts) == (42, 123, PARTS)
    assert list(parts) == list(PARTS)          # order kept: parts are restored in file order


def test_write_load_prune(tmp_path: Any) -> None:
    d = str(tmp_path / "snaps")
    calls: list[str] = []

    def hook() -> None:
        # runs before the rename: the file is not visible under its final name yet
        calls.append("hook")
        assert not os.path.exists(os.path.join(d, snapshot_name(10)))

    p10 = write_snapshot(d, 10, PARTS, [hook])
    assert calls == ["hook"] and os.path.basename(p10) == "snapshot-00000000000000000010.snap"
    write_snapshot(d, 20, {"core": b"x"})
    write_snapshot(d, 30, {"core": b"y"})
    assert [s for s, _ in list_snapshots(d)] == [10, 20, 30]
    assert load_latest(d) == (30, {"core": b"y"}, os.path.join(d, snapshot_name(30)))
    assert read_snapshot(p10) == (10, PARTS)
    # a temp file left by a crash while writing is neither listed nor kept
    with open(os.path.join(d, snapshot_name(40) + ".tmp"), "wb") as f:
        f.write(b"partial")
    assert [s for s, _ in list_snapshots(d)] == [10, 20, 30]
    removed = prune(d, 2)
    assert sorted(os.path.basename(p) for p in removed) == [snapshot_name(10), snapshot_name(40) + ".tmp"]
    assert [s for s, _ in list_snapshots(d)] == [20, 30]
    with pytest.raises(ValueError):
        prune(d, 0)
    assert load_latest(str(tmp_path / "none")) is None


def test_failing_pre_commit_hook_leaves_no_snapshot(tmp_path: Any) -> None:
    def boom() -> None:
        raise OSError("fsync of the message store failed")

    with pytest.raises(OSError, match="message store"):
        write_snapshot(str(tmp_path), 5, PARTS, [boom])
    assert os.listdir(tmp_path) == []


def test_corrupt_newest_falls_back_to_older(tmp_path: Any, caplog: pytest.LogCaptureFixture) -> None:
    d = str(tmp_path)
    write_snapshot(d, 100, {"core": b"old"})
    newest = write_snapshot(d, 200, {"core": b"new" * 100})
    with open(newest, "r+b") as f:
        f.seek(60)
        b = f.read(1)
        f.seek(60)
        f.write(bytes([b[0] ^ 0x40]))
    with caplog.at_level(logging.ERROR, logger="hftgw.snapshot"):
        got = load_latest(d)
    assert got is not None and got[0] == 100 and got[1] == {"core": b"old"}
    lines = [r for r in caplog.records if getattr(r, "event", "") == "snapshot.unusable"]
    assert len(lines) == 1 and newest in lines[0].getMessage() and "CRC32C" in lines[0].getMessage()
    # a snapshot renamed to another seq is refused too
    os.rename(got[2], os.path.join(d, snapshot_name(150)))
    with pytest.raises(SnapshotError, match="name says 150"):
        read_snapshot(os.path.join(d, snapshot_name(150)))
    assert load_latest(d) is None


def test_truncated_at_every_offset_is_refused(tmp_path: Any) -> None:
    data = encode(7, {"core": b"abc" * 5, "risk": b"r" * 9, "x": b""}, time_ns=1)
    path = str(tmp_path / snapshot_name(7))
    for cut in range(len(data)):
        with pytest.raises(SnapshotError) as exc:
            decode(data[:cut], path)
        assert exc.value.path == path and 0 <= exc.value.offset <= max(cut, 0) + 32
    # every single-bit flip is refused too (CRC32C of the whole file and of each part)
    for off in range(len(data)):
        bad = bytearray(data)
        bad[off] ^= 0x01
        with pytest.raises(SnapshotError):
            decode(bytes(bad), path)
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    assert load_latest(str(tmp_path)) is None


def test_other_format_version_is_refused() -> None:
    data = bytearray(encode(1, {"a": b"b"}))
    data[8] = 99
    with pytest.raises(SnapshotError, match="format version 99"):
        decode(bytes(data), "f")


def test_outbound_state_round_trip() -> None:
    ob = Outbound(["AAA"], 64)
    ob.set_next_seq(3, 11)
    ob.set_next_seq(40, 2)
    data = ob.export_state()
    other = Outbound(["AAA"], 64)
    other.import_state(data)
    assert [other.next_seq(s) for s in (0, 3, 5, 40, 63)] == [1, 11, 1, 2, 1]
    with pytest.raises(ValueError):
        Outbound(["AAA"], 8).import_state(data)          # more sessions than max_sessions
    with pytest.raises(ValueError):
        other.import_state(data[:-1])
    with pytest.raises(ValueError):
        other.import_state(b"HFTGWOUT\x09\x00\x00\x00\x00\x00\x00\x00")


# -- risk state -------------------------------------------------------------------------------------
LIMITS: dict[str, dict[str, Any]] = {
    "acct1": {"max_position_net": 60, "max_open_orders": 12},
    "acct2": {"max_position_gross": 90, "max_order_qty": 30},
    "acct3": {"max_notional": 40_000_000, "symbols": {"s1": {"max_position_net": 25}}},
    "acct4": {},
}
RISK_SYMBOLS = [{"name": f"s{i}", "tick": t, "max_order_qty": 35 if i == 2 else 0,
                 "band_ticks": 40 if i == 0 else 0} for i, (t, _) in enumerate(SYMBOLS)]


class RiskPipe:
    """inbound ring -> risk check -> core -> risk observes the events, as the engine runs them."""

    def __init__(self, core: MatchingCore | None = None, risk_snapshot: bytes | None = None,
                 n_symbols: int = len(SYMBOLS)) -> None:
        self.core = core or MatchingCore(SYMBOLS)
        self.risk = RiskEngine(RISK_SYMBOLS, self.core, 64, lambda n: LIMITS.get(n, {}))
        for sid in range(len(RISK_SYMBOLS), n_symbols):
            self.risk.define_symbol(sid, {"name": f"s{sid}", "tick": 10})
        # the engine binds the sessions from its own part before the risk part is restored;
        # half of them here, the snapshot's bindings give the rest
        for s in range(1, SESSIONS + 1, 2):
            self.risk.bind_session(s, f"acct{account_of(s)}")
        if risk_snapshot is not None:
            self.risk.restore(risk_snapshot)
        else:
            for s in range(2, SESSIONS + 1, 2):
                self.risk.bind_session(s, f"acct{account_of(s)}")
        self.inbound = SpscRing(4096, COMMAND_RECORD_SIZE)
        self.events = SpscRing(1 << 16, 128)
        self.outcomes: list[tuple[int, int, int, int]] = []   # (type, session, cl_ord_id, reason)

    def run(self, batch: list[bytes], admin: list[bytes]) -> None:
        for rec in admin:
            self.risk.apply_admin(rec)
            assert self.inbound.push(rec) == 1
        for rec in batch:
            # type at offset 24, symbol id at 20 (records.pxd)
            if rec[24] == ADD and int.from_bytes(rec[20:24], "little") == self.risk.n_symbols:
                self.risk.define_symbol(self.risk.n_symbols, {"name": f"s{self.risk.n_symbols}", "tick": 10})
        assert self.inbound.push(b"".join(batch)) == len(batch)
        self.risk.check_recent(self.inbound, len(batch))
        self.core.process(self.inbound, self.events)
        self.risk.observe_events(self.events)
        self.risk.clear_pending()
        raw = self.events.pop()
        for t in EVENT_STRUCT.iter_unpack(raw):
            e = dict(zip(unpack_event(raw[:128]).keys(), t, strict=True))
            if e["type"] in (EventType.EVT_REJECTED, EventType.EVT_ACCEPTED, EventType.EVT_FILL):
                self.outcomes.append((e["type"], e["session_id"], e["cl_ord_id"], e["reason"]))

    def state(self) -> dict[str, Any]:
        r = self.risk
        return {"positions": {(a, s): r.position(a, s) for a in sorted(r.accounts())
                              for s in range(r.n_symbols)},
                "accounts": {a: r.account_state(a) for a in sorted(r.accounts())},
                "symbols": [r.symbol_state(s) for s in range(r.n_symbols)],
                "halted": r.halted(), "blocked": sorted(r.blocked())}


def _risk_stream(seed: int, n: int) -> list[tuple[list[bytes], list[bytes]]]:
    """Batches of command records with, now and then, admin records queued before them."""
    rng = random.Random(seed)
    stream = [pack_command(**c) for c in seeded_stream(n, seed)]
    out: list[tuple[list[bytes], list[bytes]]] = []
    i = 0
    while i < len(stream):
        k = rng.randint(1, 40)
        admin: list[bytes] = []
        if rng.random() < 0.15:
            acct = f"acct{rng.randint(1, 4)}"
            sym = rng.randrange(len(SYMBOLS))
            admin.append(rng.choice([
                admin_record(AdminAction.HALT, symbol_id=sym),
                admin_record(AdminAction.RESUME, symbol_id=sym),
                admin_record(AdminAction.BLOCK, account=acct),
                admin_record(AdminAction.RELEASE, account=acct),
                admin_record(AdminAction.SET_ACCOUNT_LIMIT, account=acct,
                             field=RiskField.MAX_POSITION_NET, value=rng.randint(10, 80)),
                admin_record(AdminAction.SET_ACCOUNT_LIMIT, account=acct, symbol_id=sym,
                             field=RiskField.MAX_POSITION_GROSS, value=rng.randint(20, 120)),
                admin_record(AdminAction.SET_SYMBOL_LIMIT, symbol_id=sym,
                             field=RiskField.MAX_ORDER_QTY, value=rng.randint(0, 40)),
            ]))
        out.append((stream[i:i + k], admin))
        i += k
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_risk_snapshot_restore_matches_uninterrupted_run(seed: int) -> None:
    batches = _risk_stream(seed, 12_000)
    cut = random.Random(seed).randrange(len(batches) // 4, len(batches))
    whole = RiskPipe()
    for i, (batch, admin) in enumerate(batches):
        if i == cut:
            risk_snap = whole.risk.snapshot()
            core_snap = whole.core.snapshot()
            n_symbols = whole.risk.n_symbols
            before = len(whole.outcomes)
        whole.run(batch, admin)
    rejects = [o for o in whole.outcomes if o[0] == EventType.EVT_REJECTED and o[3] >= 33]
    assert len(rejects) > 50, "the stream must exercise the risk checks"

    restored = RiskPipe(MatchingCore.restore(core_snap), risk_snap, n_symbols)
    assert restored.risk.snapshot() == risk_snap
    for batch, admin in batches[cut:]:
        restored.run(batch, admin)
    assert restored.outcomes == whole.outcomes[before:]
    assert restored.state() == whole.state()


def test_risk_restore_refuses_bad_input() -> None:
    pipe = RiskPipe()
    for batch, admin in _risk_stream(5, 2000):
        pipe.run(batch, admin)
    snap = pipe.risk.snapshot()
    for cut in range(0, len(snap), max(1, len(snap) // 200)):
        with pytest.raises(ValueError):
            RiskPipe(risk_snapshot=snap[:cut])
    with pytest.raises(ValueError, match="symbols"):
        RiskPipe(risk_snapshot=snap, n_symbols=len(SYMBOLS) + 2)
    with pytest.raises(ValueError, match="admin"):
        pipe.risk.restore(snap)                   # not fresh


# -- the engine: snapshot + journal tail vs an uninterrupted run and a full replay ------------------
ENGINE_SYMBOLS = json.dumps([{"name": f"S{i}", "tick": t, "max_qty": q} for i, (t, q) in enumerate(SYMBOLS)])
ENGINE_RISK = json.dumps({"max_position_net": 70, "accounts": {"acct2": {"max_order_qty": 30},
                                                               "acct3": {"max_open_orders": 15}}})


class Collector:
    """A session's transport as the engine sees it: keeps every byte delivered."""

    def __init__(self) -> None:
        self.data = bytearray()

    def deliver(self, data: bytes, now_ns: int) -> None:
        self.data += data


def _engine(directory: Path, **overrides: object) -> Engine:
    cfg = make_config(directory, symbols=ENGINE_SYMBOLS, risk=ENGINE_RISK, **overrides)
    return Engine(cfg)


def _attach(engine: Engine) -> dict[int, Collector]:
    out = {}
    for sid in range(1, SESSIONS + 1):
        out[sid] = engine.writers[sid] = Collector()  # type: ignore[assignment]
        engine.outbound.set_session(sid, True, True)
    return out


def _open_sessions(engine: Engine) -> None:
    # what Engine.login does for a new account's session, without the JWT
    for sid in range(1, SESSIONS + 1):
        account, account_id = f"acct{account_of(sid)}", account_of(sid)
        engine._register_session(sid, account, account_id)
        engine.inbound_push(pack_command(type=CommandType.CMD_SESSION_OPEN, session_id=sid, ts=1,
                                         symbol_id=UNKNOWN_SYMBOL, account=account,
                                         account_id=account_id))
    engine.pump()


def _engine_batches(seed: int, n: int) -> list[list[bytes]]:
    rng = random.Random(seed)
    # symbol additions go through the config (apply_symbols), not the stream
    stream = [pack_command(**c) for c in seeded_stream(n, seed) if c["type"] != ADD]
    out = []
    i = 0
    while i < len(stream):
        k = rng.randint(1, 64)
        out.append(stream[i:i + k])
        i += k
    return out


def _feed(engine: Engine, batches: list[list[bytes]], admin_every: int = 0) -> None:
    for i, batch in enumerate(batches):
        if admin_every and i % admin_every == admin_every - 1:
            acct = f"acct{1 + (i // admin_every) % 4}"
            engine.admin(AdminAction.BLOCK if (i // admin_every) % 3 == 0 else AdminAction.RELEASE,
                         account=acct)
            engine.admin(AdminAction.SET_ACCOUNT_LIMIT, account=acct, field=RiskField.MAX_POSITION_GROSS,
                         value=40 + i % 50)
        assert engine.inbound.push(b"".join(batch)) == len(batch)
        engine.risk.check_recent(engine.inbound, len(batch))   # as the session's decode does
        engine.pump()


def _state(engine: Engine) -> dict[str, Any]:
    core, risk = engine.core, engine.risk
    return {
        "core": core.snapshot(),
        "books": [(core.book_levels(s, side, 1000), core.stop_orders(s, side))
                  for s in range(core.n_symbols) for side in (1, 2)],
        "next_seq": engine.sequencer.next_seq,
        "session_seq": [engine.outbound.next_seq(sid) for sid in range(1, SESSIONS + 1)],
        "positions": {(a, s): risk.position(a, s) for a in sorted(risk.accounts())
                      for s in range(risk.n_symbols)},
        "accounts": {a: risk.account_state(a) for a in sorted(risk.accounts())},
        "symbols": [risk.symbol_state(s) for s in range(risk.n_symbols)],
        "sessions": (engine.account_of_session, engine.account_id_of_session, engine.accounts),
    }


def _messages(data: bytearray) -> list[Any]:
    msgs, end = decode_frames(bytes(data))
    assert end == len(data)
    return [msgspec.structs.replace(m, transact_time=0) if hasattr(m, "transact_time") else m
            for m in msgs]


def test_engine_restart_from_snapshot_equals_uninterrupted_and_full_replay(tmp_path: Path) -> None:
    batches = _engine_batches(11, 30_000)
    cut = len(batches) * 2 // 3
    # the uninterrupted run, no snapshot; then a full replay of its journal
    full = _engine(tmp_path / "full", snapshot_interval_commands=0)
    full.recover()
    _open_sessions(full)
    _feed(full, batches[:cut], admin_every=97)
    out_full = _attach(full)
    _feed(full, batches[cut:], admin_every=97)
    want = _state(full)
    assert sum(p["bought"] for p in want["positions"].values()) > 1000
    assert full.risk.blocked() or full.risk.counters()["checked"]
    full.close()
    replayed = _engine(tmp_path / "full", snapshot_interval_commands=0)
    stats = replayed.recover()
    assert stats.snapshot_seq == 0 and stats.snapshot_path == ""
    assert _state(replayed) == want
    replayed.close()

    # the same stream with periodic snapshots and small journal segments, "killed" at the cut
    seg = 200 * 104
    snap = _engine(tmp_path / "snap", snapshot_interval_commands=3000, journal_segment_bytes=seg,
                   snapshot_keep=2)
    snap.recover()
    _open_sessions(snap)
    _feed(snap, batches[:cut], admin_every=97)
    assert snap.snap_stats.written >= 3
    snap.close()                       # no shutdown snapshot: as after kill -9
    kept = list_snapshots(str(tmp_path / "snap"))
    assert len(kept) == 2
    # journal segments went only behind the oldest kept snapshot
    restarted = _engine(tmp_path / "snap", snapshot_interval_commands=3000, journal_segment_bytes=seg,
                        snapshot_keep=2)
    restarted.journal.open()
    first = restarted.journal.first_seq
    assert 1 < first <= kept[0][0] + 1
    assert kept[0][0] + 1 - first < 200        # and everything behind it did go
    restarted.close()

    stats = restarted.recover()
    assert (stats.snapshot_seq, stats.snapshot_path) == kept[1]
    assert stats.commands == restarted.sequencer.next_seq - 1 - kept[1][0] > 0
    out_snap = _attach(restarted)
    _feed(restarted, batches[cut:], admin_every=97)
    assert _state(restarted) == want
    # every session got the very same messages after the restart as in the uninterrupted run
    # (but their times: the admin actions are stamped with the wall clock, which moves every
    # later command's stamp forward)
    for sid in out_full:
        got, want_msgs = _messages(out_snap[sid].data), _messages(out_full[sid].data)
        assert len(got) > 100 and got == want_msgs
    # a clean shutdown snapshot, then a start from it replays nothing
    path = restarted.write_snapshot(background=False)
    assert path is not None and restarted.snap_stats.last_seq == want["next_seq"] - 1
    restarted.close()
    again = _engine(tmp_path / "snap", snapshot_interval_commands=3000, journal_segment_bytes=seg)
    stats = again.recover()
    assert stats.snapshot_path == path and stats.commands == 0
    assert _state(again) == want
    again.close()


def test_engine_falls_back_to_older_snapshot_and_refuses_a_gap(tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    batches = _engine_batches(12, 8000)
    seg = 100 * 104
    eng = _engine(tmp_path, snapshot_interval_commands=1500, journal_segment_bytes=seg, snapshot_keep=2)
    eng.recover()
    _open_sessions(eng)
    _feed(eng, batches)
    want = _state(eng)
    eng.close()
    (older_seq, _), (newest_seq, newest) = list_snapshots(str(tmp_path))
    with open(newest, "r+b") as f:            # damage the newest: a torn write
        f.truncate(os.path.getsize(newest) - 5)
    fallback = _engine(tmp_path, snapshot_interval_commands=0, journal_segment_bytes=seg)
    with caplog.at_level(logging.ERROR, logger="hftgw.snapshot"):
        stats = fallback.recover()
    assert stats.snapshot_seq == older_seq < newest_seq
    assert any(newest in r.getMessage() for r in caplog.records)
    assert _state(fallback) == want
    fallback.close()
    # with the older snapshot gone too and its journal tail partly removed: a clear error
    os.unlink(newest)
    os.unlink(list_snapshots(str(tmp_path))[0][1])
    write_snapshot(str(tmp_path), 10, {})     # an unusable "snapshot" with no parts
    bad = _engine(tmp_path, snapshot_interval_commands=0, journal_segment_bytes=seg)
    with pytest.raises(SnapshotError, match="missing"):
        bad.recover()
    bad.close()
    os.unlink(os.path.join(tmp_path, snapshot_name(10)))
    nosnap = _engine(tmp_path, snapshot_interval_commands=0, journal_segment_bytes=seg)
    with pytest.raises(SnapshotMismatch, match=r"starts at seq \d+ and there is no usable snapshot"):
        nosnap.recover()                      # a full replay of a journal whose head was removed
    nosnap.close()


# -- a real server process: background snapshots under load, kill -9, restart ------------------------
async def test_server_snapshots_in_background_and_restarts_from_one_after_kill(tmp_path: Path) -> None:
    env = {"HFTGW_SNAPSHOT_INTERVAL_COMMANDS": "40", "HFTGW_SNAPSHOT_KEEP": "2",
           "HFTGW_JOURNAL_SEGMENT_BYTES": "4096"}
    with serve_process(tmp_path, env) as (cfg, proc):
        a = await login(cfg, "alice")
        b = await login(cfg, "bob")
        text = ""
        for rnd in range(5):                 # rounds: each one passes the interval once
            for i in range(30 * rnd, 30 * rnd + 30):
                a.send(limit(1 + i, SELL, 1_000_000 + 100 * (i % 7), 5))
                if i % 3 == 0:
                    b.send(limit(1 + i, BUY, 1_000_000 + 100 * (i % 4), 4))
            await a.recv_until(lambda m, r=rnd: isinstance(m, OrderAccepted) and m.cl_ord_id == 30 * r + 30)
            await b.recv_until(lambda m, r=rnd: isinstance(m, (OrderAccepted, Execution))
                               and m.cl_ord_id == 30 * r + 28)
            for _ in range(200):             # the background write of this round
                text = scrape(cfg)[1]
                if metric_value(text, "hftgw_snapshots_written_total") >= rnd + 1:
                    break
                await asyncio.sleep(0.02)
        a.send(BookQuery(request_id=1, symbol="AAPL", depth=20))
        before = (await a.recv_until(lambda m: isinstance(m, BookSnapshot)))[-1]
        assert metric_value(text, "hftgw_snapshots_written_total") >= 3
        assert metric_value(text, "hftgw_snapshot_last_seq") > 0
        assert metric_value(text, "hftgw_journal_segments_removed_total") > 0
        assert metric_value(text, "hftgw_snapshot_capture_seconds") > 0
        proc.kill()                          # no shutdown snapshot
        proc.wait()
    kept = list_snapshots(str(tmp_path))
    assert len(kept) == 2
    with serve_process(tmp_path, env) as (cfg, proc):
        text = scrape(cfg)[1]
        assert metric_value(text, "hftgw_snapshot_last_seq") == kept[-1][0]
        assert metric_value(text, "hftgw_recovery_seconds") > 0
        a = await login(cfg, "alice")
        assert a.next_seq_num == before.seq_num + 1
        a.send(BookQuery(request_id=2, symbol="AAPL", depth=20))
        after = await a.recv()
        assert isinstance(after, BookSnapshot) and after.seq_num == before.seq_num + 1
        assert (after.bids, after.asks) == (before.bids, before.asks) and after.asks
        await a.logout()
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
        out = proc.stdout.read().decode() if proc.stdout else ""
    assert f"from snapshot {kept[-1][1]} (seq {kept[-1][0]})" in out
    # the clean shutdown wrote one more, at the last seq
    assert list_snapshots(str(tmp_path))[-1][0] > kept[-1][0]
