"""The order path's cost of the pre-trade risk layer (issue 6: target <= 10 % slowdown).

    python bench/risk_bench.py                       # 1 M requests per run, 7 runs per variant
    python bench/risk_bench.py --requests 2000000 --runs 9 --sessions 8

In process, no sockets, so that the figure is the risk layer's and not the kernel's: pre-encoded
SOFH frames go through the real ``ServerSession.receive_data`` (batch decode into the inbound
ring) in reads of ``--read`` frames per session, round robin over the sessions, and after each
round the real ``Engine.pump`` (stamp, journal write, matching core, outbound encoding, delivery
to a writer that counts the bytes).  Three variants, run alternately in the same process so
that machine noise hits them alike; each run gets a fresh engine and journal:

* ``none``: no risk layer at all (no check pass, no event observation), i.e. the order path as
  it was before issue 6;
* ``risk``: every check active but none binding (throttles, halt/kill flags, max qty, price band
  around a reference, notional, open orders, worst-case net and gross position), plus the
  observation of every event (open quantities, positions, P&L);
* ``risk+rejects``: the same with limits that refuse about a third of the new orders, to show
  the cost of the refusals themselves (they become sequenced, journaled rejects).

Times are CPU seconds of the process (``time.process_time``), so that other processes on a shared
machine disturb the comparison less; the ratio per pair of runs is printed too.

Stream per session (seeded): 55 % limit orders at mid +- 0..9 ticks with the sides overlapping
(about half cross), 30 % cancels of the order sent 30 requests earlier, 15 % replaces of it
(quantity up or down).  Prints requests/s per variant (median of the runs), the slowdown of
``risk`` against ``none`` measured in the same run, and the cost per request in ns.  Noisy on a
shared 2-core VM: compare the ratio, not the absolute rates.
"""
from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from gateway.config.load import load_config  # noqa: E402
from gateway.config.schema import DEV_JWT_SECRET  # noqa: E402
from gateway.engine import Engine  # noqa: E402
from gateway.security.auth import mint_token  # noqa: E402
from matching.records import OrdType, Side, TimeInForce  # noqa: E402
from protocol import codec  # noqa: E402
from protocol.messages import CancelOrder, Login, NewOrder, ReplaceOrder  # noqa: E402
from protocol.session import LoginDecision, ServerSession  # noqa: E402

MID = 1_000_000
TICK = 100
SYMBOLS = ["AAPL", "MSFT", "GOOG", "AMZN"]


class CountingWriter:
    def __init__(self) -> None:
        self.bytes = 0

    def deliver(self, data: bytes, now_ns: int) -> None:
        self.bytes += len(data)


def make_stream(n: int, seed: int) -> list[bytes]:
    """n pre-encoded requests (ClOrdID 1..n) of one session."""
    rnd = random.Random(seed)
    out = []
    for cl in range(1, n + 1):
        r = rnd.random()
        if cl > 30 and r < 0.30:
            out.append(codec.encode(CancelOrder(cl_ord_id=cl, orig_cl_ord_id=cl - 30,
                                                symbol=SYMBOLS[(cl - 30) % len(SYMBOLS)])))
            continue
        if cl > 30 and r < 0.45:
            out.append(codec.encode(ReplaceOrder(cl_ord_id=cl, orig_cl_ord_id=cl - 30,
                                                 price=MID + TICK * rnd.randrange(-5, 6),
                                                 order_qty=1 + rnd.randrange(15),
                                                 symbol=SYMBOLS[(cl - 30) % len(SYMBOLS)])))
            continue
        sym = SYMBOLS[cl % len(SYMBOLS)]
        side = Side.SIDE_BUY if rnd.random() < 0.5 else Side.SIDE_SELL
        off = rnd.randrange(10)
        price = MID - off * TICK if side == Side.SIDE_BUY else MID + off * TICK
        price += 5 * TICK if side == Side.SIDE_BUY else -5 * TICK
        out.append(codec.encode(NewOrder(cl_ord_id=cl, price=price, order_qty=1 + rnd.randrange(10),
                                         symbol=sym, side=side, ord_type=OrdType.ORD_LIMIT,
                                         time_in_force=TimeInForce.TIF_GTC)))
    return out


def config_env(jdir: str, variant: str) -> dict[str, str]:
    loose = variant == "risk"
    symbols = [{"name": s, "tick": TICK, "reference_price": MID,
                "price_band_pct": 10.0 if loose else 0.03,      # +-3 ticks: refuses the far ones
                "max_order_qty": 1_000_000, "max_notional": 10**9} for s in SYMBOLS]
    risk = {"max_order_qty": 1_000_000, "max_notional": 10**12, "max_open_orders": 10**9,
            "max_position_net": 10**12, "max_position_gross": 10**12}
    throttle = {"trader": {"session_rate": 1e9, "session_burst": 1e9,
                           "account_rate": 1e9, "account_burst": 1e9}}
    return {"HFTGW_JOURNAL_DIR": jdir, "HFTGW_SYMBOLS": json.dumps(symbols),
            "HFTGW_RISK": json.dumps(risk), "HFTGW_THROTTLE": json.dumps(throttle),
            "HFTGW_LOG_LEVEL": "WARNING", "HFTGW_MAX_SESSIONS_PER_ACCOUNT": "4",
            "HFTGW_PRE_TRADE_RISK": "false" if variant == "none" else "true"}


def login(eng: Engine, writer: CountingWriter, msg: Login) -> LoginDecision:
    return eng.login(msg, writer, "127.0.0.1:1")


def run(variant: str, streams: list[list[bytes]], read: int) -> tuple[float, int, int]:
    """One run on a fresh engine: (CPU seconds of this process, requests, rejects by the risk
    layer).  CPU time, not wall time: on a shared machine another process's bursts stretch the
    wall clock of whichever variant they hit; the order path is one thread doing everything,
    the journal write included (the page cache absorbs it), so its CPU time is its cost.
    Inside an event loop, as in the gateway: a login schedules a pump on the running loop."""
    async def in_loop() -> tuple[float, int, int]:
        return _run(variant, streams, read)

    return asyncio.run(in_loop())


def _run(variant: str, streams: list[list[bytes]], read: int) -> tuple[float, int, int]:
    jdir = tempfile.mkdtemp(prefix="hftgw-riskbench-")
    try:
        cfg = load_config(None, config_env(jdir, variant))
        eng = Engine(cfg)       # pre_trade_risk = false for "none": no gate, no event observer
        eng.recover()
        sessions = []
        for i in range(len(streams)):
            s = ServerSession(eng.symbols, eng.inbound, functools.partial(login, eng, CountingWriter()),
                              now_ns=time.time_ns(), gate=None if variant == "none" else eng.risk)
            s.receive_data(codec.encode(Login(heartbeat_interval_ms=60000, next_expected_seq_num=0,
                                              cancel_on_disconnect=0,
                                              token=mint_token(DEV_JWT_SECRET, f"acct{i}"))), time.time_ns())
            assert s.session_id, "login failed"
            sessions.append(s)
        reads = [[b"".join(st[k:k + read]) for k in range(0, len(st), read)] for st in streams]
        n_reads = max(len(r) for r in reads)
        gc.collect()
        t0 = time.process_time()
        for k in range(n_reads):
            now = time.time_ns()
            for s, r in zip(sessions, reads, strict=True):
                if k < len(r):
                    s.receive_data(r[k], now)
                    while s.ring_full:
                        eng.pump()
                        s.receive_data(b"", now)
            eng.pump()
        took = time.process_time() - t0
        rejected = sum(eng.risk.counters()["rejected"].values())
        eng.close()
        return took, sum(len(st) for st in streams), rejected
    finally:
        shutil.rmtree(jdir, ignore_errors=True)


def tcp_compare(args: argparse.Namespace) -> None:
    """The same comparison end to end over TCP: two ``hftgw serve`` processes (no risk layer /
    every check active) on core 0, the load generator of bench/e2e_bench.py on core 1, runs
    alternating between them; wall-clock requests/s (the generator waits for every answer)."""
    import os
    import subprocess

    import uvloop
    from e2e_bench import free_port, throughput, wait_ready
    from e2e_bench import make_stream as e2e_stream

    per = args.requests // args.sessions
    streams = [e2e_stream(per, args.seed + i) for i in range(args.sessions)]
    gc.collect()
    gc.freeze()
    procs: dict[str, tuple[subprocess.Popen[bytes], int, str]] = {}
    try:
        for v in ("none", "risk"):
            jdir = tempfile.mkdtemp(prefix=f"hftgw-riskbench-tcp-{v}-")
            port, mport = free_port(), free_port()
            env = dict(os.environ)
            env.update(config_env(jdir, v))
            env.update(HFTGW_LISTEN=f"127.0.0.1:{port}", HFTGW_METRICS_LISTEN=f"127.0.0.1:{mport}",
                       HFTGW_SYMBOLS=json.dumps([{"name": "AAPL", "tick": TICK, "reference_price": MID,
                                                  "price_band_pct": 10.0, "max_order_qty": 1_000_000,
                                                  "max_notional": 10**9}]))
            p = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve"], env=env, cwd=ROOT)
            procs[v] = (p, port, jdir)
            if (os.cpu_count() or 1) >= 2:
                os.sched_setaffinity(p.pid, {0})
            wait_ready(f"http://127.0.0.1:{mport}/ready", p)
        if (os.cpu_count() or 1) >= 2:
            os.sched_setaffinity(0, {1})
        rates: dict[str, list[float]] = {"none": [], "risk": []}
        for i in range(args.runs):
            for v in (("none", "risk") if i % 2 == 0 else ("risk", "none")):
                rate = uvloop.run(throughput("127.0.0.1", procs[v][1], False, streams, 20_000,
                                             f"r{i}{v}"))
                rates[v].append(rate)
            print(f"tcp run {i + 1}: none {rates['none'][-1] / 1e6:.3f} M/s  "
                  f"risk {rates['risk'][-1] / 1e6:.3f} M/s", flush=True)
        pair = [r / n for r, n in zip(rates["risk"], rates["none"], strict=True)]
        med_n, med_r = statistics.median(rates["none"]), statistics.median(rates["risk"])
        print(f"\nover TCP, {args.requests:,} requests per run ({args.sessions} sessions, bench/e2e_bench "
              f"stream: 2/3 new orders, 1/3 cancels), median of {args.runs}:")
        print(f"  none {med_n / 1e6:.3f} M requests/s, risk {med_r / 1e6:.3f} M requests/s; "
              f"risk/none per run: {', '.join(f'{x:.3f}' for x in pair)}; median slowdown "
              f"{(1 / statistics.median(pair) - 1) * 100:.1f} % (target <= 10 %)")
    finally:
        for p, _, jdir in procs.values():
            p.terminate()
            p.wait(15)
            shutil.rmtree(jdir, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=1_000_000, help="per run, over all sessions")
    ap.add_argument("--sessions", type=int, default=4)
    ap.add_argument("--read", type=int, default=256, help="frames per read per session")
    ap.add_argument("--runs", type=int, default=11)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--tcp", action="store_true",
                    help="also compare end to end over TCP (two gateway processes)")
    args = ap.parse_args()
    per = args.requests // args.sessions
    streams = [make_stream(per, args.seed + i) for i in range(args.sessions)]
    variants = ["none", "risk", "risk+rejects"]
    rates: dict[str, list[float]] = {v: [] for v in variants}
    rejects: dict[str, int] = {}
    run("risk", streams, args.read)                        # warm-up (imports, allocator)
    for i in range(args.runs):
        order = variants if i % 2 == 0 else list(reversed(variants))
        for v in order:
            took, n, rej = run(v, streams, args.read)
            rates[v].append(n / took)
            rejects[v] = rej
        print(f"run {i + 1}: " + "  ".join(f"{v} {rates[v][-1] / 1e6:.3f} M/s" for v in variants),
              flush=True)
    med = {v: statistics.median(rates[v]) for v in variants}
    base = med["none"]
    print(f"\n{args.requests:,} requests per run ({args.sessions} sessions, reads of {args.read} "
          f"frames), median of {args.runs} runs, same process, alternating order, CPU time:")
    for v in variants:
        slow = (base / med[v] - 1) * 100
        per_req = (1 / med[v] - 1 / base) * 1e9
        print(f"  {v:<13} {med[v] / 1e6:7.3f} M requests/s   vs none: {slow:+6.1f} % time, "
              f"{per_req:+6.1f} ns/request   (refused by risk: {rejects[v]:,})")
    pair = [r / n for r, n in zip(rates["risk"], rates["none"], strict=True)]
    print(f"  risk/none ratio per run: {', '.join(f'{x:.3f}' for x in pair)}; "
          f"median slowdown {(1 / statistics.median(pair) - 1) * 100:.1f} % (target <= 10 %)")
    if args.tcp:
        tcp_compare(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
