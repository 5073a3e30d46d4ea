"""On-demand fuzzing of the framing, the SBE decoder and the session state machine with atheris
(libFuzzer for Python).  The bounded CI run is tests/protocol/test_fuzz.py (hypothesis).

    python tools/fuzz_decoder.py --target codec   -runs=10000000           # the decoders
    python tools/fuzz_decoder.py --target session -runs=10000000           # session + risk gate + core
    python tools/fuzz_decoder.py --asan --target codec -runs=10000000      # the same, see below

Any other argument goes to libFuzzer (``-timeout=5`` and ``-rss_limit_mb`` are set unless given:
an input that takes over 5 s counts as a hang, a process over the limit as unbounded memory;
both stop the run with a crash report).  The corpus starts from valid frames of every client
template (tests/support/fuzz_inputs.py).  libFuzzer prints "Done N runs in T second(s)" at the end.

Coverage feedback.  atheris instruments the Python modules (protocol.session,
protocol.messages, the helpers).  The Cython extensions are C: by default they run as built,
without feedback from inside.  ``--asan`` first builds a private copy of every extension under
build/fuzz-asan/ with gcc's AddressSanitizer and ``-fsanitize-coverage=trace-cmp`` (every
comparison in the decoder reports its operands to libFuzzer, used with ``-use_value_profile=1``),
then runs with atheris's ASan + libFuzzer runtime preloaded: an out-of-bounds read or write in
the decoder is a crash, and the comparisons guide the search through the length checks.

Invariants checked on every input (an AssertionError is a crash for libFuzzer):

* codec: decode_frames / decode_next / message_length raise nothing but ProtocolError, with an
  offset inside the buffer; decode_orders consumes only whole frames and writes one record per
  order frame with the given session id; its stop status agrees with decode_next;
  scan_responses agrees with decode_frames on the frame count.
* session: receive_data never raises; every byte the session writes decodes as whole frames;
  the bytes it holds back never exceed one frame (65535) plus the latest read; every record it
  puts in the ring carries its session id.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import atheris

ROOT = Path(__file__).resolve().parents[1]
ASAN_ROOT = ROOT / "build" / "fuzz-asan"
# HFTGW_FUZZ_ROOT: where the packages are imported from (the instrumented copy with --asan)
sys.path[:0] = [os.environ.get("HFTGW_FUZZ_ROOT", str(ROOT)), str(ROOT / "tests")]

with atheris.instrument_imports():
    from fuzz_inputs import BOOK_ONLY_TOKEN, DROPCOPY_TEMPLATES, DROPCOPY_TOKEN, GOOD_TOKEN, seed_frames

    from gateway.risk.pretrade import RiskEngine
    from matching.core import MatchingCore
    from matching.records import COMMAND_RECORD_SIZE, COMMAND_STRUCT, LoginRejectReason
    from matching.ring import SpscRing
    from protocol import codec
    from protocol.messages import Login, Message, PositionQuery, PositionReport, ProtocolError
    from protocol.session import LoginDecision, ServerSession

SYMBOLS = codec.SymbolTable(["AAPL", "MSFT"])
RING = SpscRing(64, COMMAND_RECORD_SIZE)


def fuzz_codec(data: bytes) -> None:
    for sofh in (True, False):
        try:
            _, end = codec.decode_frames(data, 0, sofh)
            assert 0 <= end <= len(data)
        except ProtocolError as exc:
            assert 0 <= exc.offset <= len(data) and exc.reason in (1, 2)
        pos = 0
        while True:
            pos2, n, status = codec.decode_orders(data, pos, len(data), RING, 5, SYMBOLS, 1, sofh)
            assert pos <= pos2 <= len(data) and n == len(RING)
            for k in range(n):
                assert COMMAND_STRUCT.unpack_from(RING.peek(k))[2] == 5
            RING.pop()
            if status == codec.RING_FULL:
                pos = pos2
                continue
            if status == codec.SESSION_MESSAGE:
                msg, pos = codec.decode_next(data, pos2, sofh)
                assert msg is not None
                continue
            break
        if status == codec.NEED_MORE:
            assert codec.decode_next(data, pos2, sofh) == (None, pos2)
    try:
        assert 0 <= codec.message_length(data, 0) <= len(data)
    except ProtocolError:
        pass
    try:
        triples, end = codec.scan_responses(data)
        assert len(triples) % 3 == 0 and end <= len(data)
        assert len(codec.decode_frames(data[:end])[0]) == len(triples) // 3
    except ProtocolError:
        pass


class Harness:
    """One matching core and risk gate shared by every input, a new session per input."""

    def __init__(self) -> None:
        self.core = MatchingCore([(100, 1_000_000), (100, 1_000_000)])
        self.risk = RiskEngine([{"tick": 100, "reference_price": 1_000_000, "band_ticks": 100},
                                {"tick": 100}], self.core, 16,
                               lambda name: {"max_open_orders": 50, "max_position_net": 10_000})
        self.risk.bind_session(1, "fuzz")
        self.ring = SpscRing(64, COMMAND_RECORD_SIZE)
        self.events = SpscRing(1024, 128)
        self.core.on_events_full = lambda: self.events.pop()

    def positions(self, q: PositionQuery) -> list[Message]:
        return [PositionReport(request_id=q.request_id, symbol="AAPL", net_position=0, avg_price=0,
                               realized_pnl=0, open_buy_qty=0, open_sell_qty=0, bought_qty=0,
                               sold_qty=0, report_index=1, report_count=1)]

    def login(self, msg: Login) -> LoginDecision:
        if msg.token == GOOD_TOKEN:
            return LoginDecision(True, session_id=1, next_seq_num=1, positions=self.positions)
        if msg.token == DROPCOPY_TOKEN:
            return LoginDecision(True, session_id=1, next_seq_num=1, allowed=DROPCOPY_TEMPLATES,
                                 positions=self.positions)
        if msg.token == BOOK_ONLY_TOKEN:
            return LoginDecision(True, session_id=1, next_seq_num=1, allowed=frozenset({14}))
        return LoginDecision(False, reason=LoginRejectReason.LOGIN_BAD_TOKEN)

    def pump(self) -> None:
        ring = self.ring
        for k in range(len(ring)):
            assert COMMAND_STRUCT.unpack_from(ring.peek(k))[2] == 1
        while len(ring):
            self.core.process(ring, self.events)
            self.risk.observe_events(self.events)
            self.events.pop()
        self.risk.clear_pending()

    def run(self, data: bytes) -> None:
        fdp = atheris.FuzzedDataProvider(data)
        sofh = fdp.ConsumeBool()
        cuts = sorted(fdp.ConsumeIntInRange(0, 4096) for _ in range(fdp.ConsumeIntInRange(0, 8)))
        stream = fdp.ConsumeBytes(fdp.remaining_bytes())
        s = ServerSession(SYMBOLS, self.ring, self.login, now_ns=1_000, sofh=sofh, gate=self.risk,
                          login_timeout_ms=0, max_violations=3)
        out = bytearray()
        prev = 0
        for cut in [c for c in cuts if c < len(stream)] + [len(stream)]:
            s.receive_data(stream[prev:cut], 1_000)
            while s.ring_full:
                self.pump()
                s.receive_data(b"", 1_000)
            assert len(s._buf) - s._pos <= 65535 + len(stream[prev:cut])
            out += s.data_to_send()
            self.pump()
            prev = cut
        s.tick(10**18)                                       # timers on a finished input
        out += s.data_to_send()
        _, end = codec.decode_frames(bytes(out), 0, sofh)
        assert end == len(out), "the session wrote a partial frame"


# gcc's trace-cmp also traces float compares, which libFuzzer does not take: no-ops
_SHIM = """void __sanitizer_cov_trace_cmpf(float a, float b) { (void)a; (void)b; }
void __sanitizer_cov_trace_cmpd(double a, double b) { (void)a; (void)b; }
"""
PACKAGES = ("gateway", "matching", "protocol", "persistence", "monitoring")


def build_instrumented(dest: Path) -> None:
    """A copy of the packages with every extension built with ASan and trace-cmp coverage."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for name in PACKAGES:
        shutil.copytree(ROOT / name, dest / name,
                        ignore=shutil.ignore_patterns("*.so", "*.c", "__pycache__"))
    for name in ("setup.py", "pyproject.toml"):
        shutil.copy(ROOT / name, dest / name)
    (dest / "shim.c").write_text(_SHIM)
    subprocess.run(["gcc", "-shared", "-fPIC", "-O2", "-o", str(dest / "libcmpfd.so"),
                    str(dest / "shim.c")], check=True)
    # ASan in the compiler only: the runtime comes from atheris (preloaded), not gcc's libasan
    env = dict(os.environ,
               CC="gcc -fsanitize=address -fsanitize-coverage=trace-cmp -fno-omit-frame-pointer",
               LDSHARED="gcc -shared")
    subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace", "-q"], cwd=dest, env=env,
                   check=True, stdout=subprocess.DEVNULL)


def stale(dest: Path) -> bool:
    """The instrumented copy is missing or older than a source file of the packages."""
    marker = dest / "libcmpfd.so"
    if not marker.exists():
        return True
    built = marker.stat().st_mtime
    return any(f.stat().st_mtime > built for name in PACKAGES for f in (ROOT / name).iterdir()
               if f.suffix in (".pyx", ".pxd", ".py", ".h"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", choices=["codec", "session"], required=True)
    ap.add_argument("--asan", action="store_true",
                    help="build and use ASan + trace-cmp instrumented extensions (build/fuzz-asan)")
    ap.add_argument("--rebuild", action="store_true",
                    help="with --asan: rebuild the copy even when no source is newer than it")
    args, rest = ap.parse_known_args()
    if args.asan and "HFTGW_FUZZ_ROOT" not in os.environ:
        if args.rebuild or stale(ASAN_ROOT):
            print(f"building instrumented extensions in {ASAN_ROOT} ...", file=sys.stderr)
            build_instrumented(ASAN_ROOT)
        env = dict(os.environ, HFTGW_FUZZ_ROOT=str(ASAN_ROOT),
                   ASAN_OPTIONS="detect_leaks=0:detect_odr_violation=0",
                   LD_PRELOAD=f"{atheris.path()}/asan_with_fuzzer.so {ASAN_ROOT}/libcmpfd.so")
        extra = [] if any(a.startswith("-use_value_profile=") for a in rest) else ["-use_value_profile=1"]
        os.execve(sys.executable, [sys.executable, __file__, "--target", args.target, *rest, *extra], env)
    if not any(a.startswith("-timeout=") for a in rest):
        rest.append("-timeout=5")
    if not any(a.startswith("-rss_limit_mb=") for a in rest):
        rest.append("-rss_limit_mb=" + ("2048" if "HFTGW_FUZZ_ROOT" in os.environ else "1024"))
    corpus = tempfile.mkdtemp(prefix=f"hftgw-fuzz-{args.target}-")
    frames = seed_frames(True) + seed_frames(False)
    for i, f in enumerate(frames):
        if args.target == "session":
            f = (b"\x01" if i < len(frames) // 2 else b"\x00") + f    # first byte: SOFH or not
        Path(corpus, f"seed{i:03d}").write_bytes(f)
    Path(corpus, "login-then-orders").write_bytes(b"\x01\x00" + b"".join(seed_frames(True)))
    target = fuzz_codec if args.target == "codec" else Harness().run
    print(f"hftgw fuzz {args.target}: packages from {codec.__file__}", file=sys.stderr)
    atheris.Setup([sys.argv[0], *rest, corpus], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
