"""The ``hftgw`` command: serve, config, probe, directory, reload, token, client, md, replay-lobster."""
from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from gateway.cli.render import describe, price_units
from gateway.config.directory import Directory, DirectoryError, load_directory
from gateway.config.load import load_config
from gateway.config.schema import Config, ConfigError, parse_hostport

if TYPE_CHECKING:
    from protocol.messages import Message


# -- serve ------------------------------------------------------------------------------------
def _start_errors() -> tuple[type[BaseException], ...]:
    """What a start refuses with on its files: each says in one line what and where."""
    from gateway.engine import LegacyJournalError, SnapshotMismatch
    from persistence.journal import JournalCorrupt
    from persistence.reconcile import JournalBehind
    from persistence.segment_log import SegmentLogCorrupt
    from persistence.snapshot import SnapshotError

    return (DirectoryError, LegacyJournalError, SnapshotMismatch, JournalBehind, JournalCorrupt,
            SegmentLogCorrupt, SnapshotError)


def cmd_serve(args: argparse.Namespace) -> int:
    from gateway import logs

    cfg = load_config(args.config)
    logs.configure(args.log_level or cfg.log_level, cfg.log_format, cfg.log_event_burst,
                   cfg.log_summary_interval_s)
    import uvloop

    from gateway.server import serve

    try:
        uvloop.run(serve(cfg, args.config))
    except _start_errors() as exc:
        logging.getLogger("hftgw.server").error("cannot start: %s", exc)
        return 2
    return 0


def cmd_repair(args: argparse.Namespace) -> int:
    from gateway.engine import repair

    cfg = load_config(args.config)
    try:
        report = repair.run(cfg, args.apply)
    except BlockingIOError as exc:
        print(f"error: {exc.filename} is locked: stop the gateway first", file=sys.stderr)
        return 2
    except _start_errors() as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for line in report.lines():
        print(line)
    if report.problems and not args.apply:
        print("nothing was changed; run again with --apply to do it")
        return 3
    return 0


# -- config -----------------------------------------------------------------------------------
def cmd_config(args: argparse.Namespace) -> int:
    import msgspec

    from gateway.config.reference import masked, reference_markdown
    from gateway.config.schema import warnings_for

    if args.action == "reference":
        print(reference_markdown(), end="")
        return 0
    if args.action == "show":
        cfg = load_config(args.file or args.config)
        data = masked(cfg)
        if args.format == "json":
            print(msgspec.json.format(msgspec.json.encode(data).decode(), indent=2))
        else:
            print(msgspec.toml.encode(data).decode(), end="")
        return 0
    status = 0
    for path in args.files:
        try:
            cfg = load_config(path)
            problems = []
            if cfg.directory_file:
                problems = _directory_problems(cfg)
        except ConfigError as exc:
            problems = exc.errors
        if problems:
            status = 2
            for line in problems:
                print(line if line.startswith(f"{path}: ") else f"{path}: {line}", file=sys.stderr)
            continue
        for w in warnings_for(cfg):
            print(f"{path}: warning: {w}", file=sys.stderr)
        print(f"{path}: ok (partition {cfg.partition}, {len(cfg.symbols)} symbols: "
              f"{' '.join(s.name for s in cfg.symbols)})")
    return status


def _directory_problems(cfg: Config) -> list[str]:
    """The directory file of ``cfg`` must load and must not give its symbols to another
    partition."""
    from gateway.config.directory import PartitionEntry, with_entry

    try:
        d = load_directory(cfg.directory_file)
        own = next((p for p in d.partitions if p.name == cfg.partition), None)
        entry = PartitionEntry(cfg.partition, own.order_entry if own else cfg.listen,
                               [s.name for s in cfg.symbols], own.metrics if own else "")
        with_entry(d, entry)
    except DirectoryError as exc:
        return [f"directory_file: {exc}"]
    return []


# -- probe ------------------------------------------------------------------------------------
def cmd_probe(args: argparse.Namespace) -> int:
    """GET /health or /ready of this config's side port: exit 0 on 200, 1 otherwise (for a
    container HEALTHCHECK, where there is no curl)."""
    import urllib.error
    import urllib.request

    host, port = parse_hostport(load_config(args.config).metrics_listen, "metrics_listen")
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    url = f"http://{host}:{port}/{args.what}"
    try:
        with urllib.request.urlopen(url, timeout=args.timeout) as r:
            body = r.read().decode()
            ok = r.status == 200
    except urllib.error.HTTPError as exc:
        body, ok = exc.read().decode(), False
    except OSError as exc:
        body, ok = f"cannot reach {url}: {exc}", False
    print(body.strip())
    return 0 if ok else 1


# -- reload -----------------------------------------------------------------------------------
def serve_pids() -> list[int]:
    """Process ids of this user's ``hftgw serve`` processes (from /proc; Linux)."""
    me, found = os.getuid(), []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if entry.stat().st_uid != me:
                continue
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if b"serve" in argv and any(a.endswith((b"hftgw", b"gateway.cli")) for a in argv):
            found.append(int(entry.name))
    return sorted(found)


def cmd_reload(args: argparse.Namespace) -> int:
    """SIGHUP to the gateway: ``--pid``, or the only ``hftgw serve`` of this user (PID 1 in the
    container)."""
    import signal

    pids = [args.pid] if args.pid else serve_pids()
    if len(pids) != 1:
        found = f": {' '.join(map(str, pids))}" if pids else ""
        print(f"error: {len(pids)} hftgw serve processes found{found}; give --pid", file=sys.stderr)
        return 2
    os.kill(pids[0], signal.SIGHUP)
    print(f"SIGHUP sent to {pids[0]}: the gateway logs config.reloaded or config.reload_refused")
    return 0


# -- directory --------------------------------------------------------------------------------
def _directory(source: str | None) -> Directory | None:
    return load_directory(source) if source else None


def cmd_directory(args: argparse.Namespace) -> int:
    if not args.source:
        print("error: give a directory FILE or URL (or set HFTGW_DIRECTORY)", file=sys.stderr)
        return 2
    d = load_directory(args.source)
    for p in d.partitions:
        print(f"{p.name:<10} {p.order_entry:<30} {p.metrics:<30} {' '.join(p.symbols)}")
    return 0


# -- token ------------------------------------------------------------------------------------
def _secret(config: str | None) -> str:
    return load_config(config).jwt_secret


def cmd_token(args: argparse.Namespace) -> int:
    from gateway.security.auth import mint_token

    cfg = load_config(args.config)
    if cfg.jwt_algorithm != "HS256" and not args.key_file:
        print(f"error: jwt_algorithm is {cfg.jwt_algorithm}: give the issuer's private key with "
              "--key-file", file=sys.stderr)
        return 2
    key = cfg.jwt_secret
    if args.key_file:
        with open(args.key_file) as f:
            key = f.read()
    print(mint_token(key, args.account, args.role or ["trader"], args.ttl,
                     algorithm=cfg.jwt_algorithm, issuer=cfg.jwt_issuer, audience=cfg.jwt_audience,
                     roles_claim=cfg.jwt_roles_claim, session=args.session))
    return 0


# -- client -----------------------------------------------------------------------------------
STP_CHOICES = ("none", "cancel-newest", "cancel-oldest", "cancel-both", "decrement")  # StpMode order


async def _client_main(args: argparse.Namespace) -> int:
    from gateway.security.auth import mint_token

    token = args.token or mint_token(_secret(args.config), args.account, args.role)
    directory = _directory(args.directory)
    endpoints = [args.connect]
    if directory is not None:
        if args.symbol:
            endpoints = [directory.route(args.symbol).order_entry]
        else:  # a mass cancel without a symbol goes to every partition
            endpoints = [p.order_entry for p in directory.partitions]
    status = 0
    for endpoint in endpoints:
        status = max(status, await _client_request(args, endpoint, token, len(endpoints) > 1))
    return status


async def _client_request(args: argparse.Namespace, endpoint: str, token: str, say_where: bool) -> int:
    from gateway.clients.tcp import OrderClient
    from matching.records import OrdType, Side, TimeInForce
    from protocol.messages import (
        BookQuery,
        CancelOrder,
        EndOfSession,
        MassCancel,
        NewOrder,
        PositionQuery,
        ReplaceOrder,
    )

    host, port = parse_hostport(endpoint, "--connect")
    client = await OrderClient.connect(host, port, token, next_expected_seq_num=args.next_seq,
                                       default_stp_mode=STP_CHOICES.index(args.stp_default))
    print(f"logged in{f' to {endpoint}' if say_where else ''}: session {client.session_id}, "
          f"next seq {client.next_seq_num}")
    cl = args.cl_ord_id or time.time_ns() // 1000
    if args.action == "new":
        side = Side.SIDE_BUY if args.side == "buy" else Side.SIDE_SELL
        market = args.price is None
        if args.stop is not None:
            ord_type = OrdType.ORD_STOP if market else OrdType.ORD_STOP_LIMIT
        else:
            ord_type = OrdType.ORD_MARKET if market else OrdType.ORD_LIMIT
        msg: Message = NewOrder(cl_ord_id=cl, price=0 if market else args.price, order_qty=args.qty,
                            symbol=args.symbol, side=side, ord_type=ord_type,
                            time_in_force={"gtc": TimeInForce.TIF_GTC, "ioc": TimeInForce.TIF_IOC,
                                           "fok": TimeInForce.TIF_FOK, "day": TimeInForce.TIF_DAY}[args.tif],
                            flags=1 if args.post_only else 0, stp_mode=STP_CHOICES.index(args.stp),
                            stop_px=args.stop or 0, display_qty=args.display)
    elif args.action == "cancel":
        msg = CancelOrder(cl_ord_id=cl, orig_cl_ord_id=args.orig, symbol=args.symbol)
    elif args.action == "replace":
        msg = ReplaceOrder(cl_ord_id=args.new_cl_ord_id or args.orig, orig_cl_ord_id=args.orig,
                           price=args.price, order_qty=args.qty, symbol=args.symbol)
    elif args.action == "mass-cancel":
        msg = MassCancel(cl_ord_id=cl, symbol=args.symbol or "",
                         side=("both", "buy", "sell").index(args.side),
                         scope=("session", "account").index(args.scope))
    elif args.action == "end-of-session":
        msg = EndOfSession(cl_ord_id=cl, symbol=args.symbol or "")
    elif args.action == "positions":
        msg = PositionQuery(request_id=cl, symbol=args.symbol or "")
    else:
        msg = BookQuery(request_id=cl, symbol=args.symbol, depth=args.depth)
    print(f"> {describe(msg)}")
    client.send(msg)
    # print everything that arrives until the line goes quiet for --wait seconds
    while True:
        try:
            m = await client.recv(timeout=args.wait)
        except TimeoutError:
            break
        except ConnectionError as exc:
            print(f"connection closed: {exc}")
            return 1
        print(f"< {describe(m)}")
    await client.logout()
    return 0


def _run_order_session(main: Coroutine[Any, Any, int], *, os_error: str = "",
                       also: tuple[type[Exception], ...] = ()) -> int:
    """Run a command that logs in to order entry; a refused login, an unknown symbol or a bad
    directory (KeyError, DirectoryError), an OSError (said after ``os_error``) or one of
    ``also`` ends it with status 2 and one line on stderr."""
    from gateway.clients.tcp import LoginError

    refused: tuple[type[Exception], ...] = (LoginError, DirectoryError, *also)
    try:
        return asyncio.run(main)
    except KeyError as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
    except OSError as exc:
        print(f"error: {os_error}{exc}", file=sys.stderr)
    except refused as exc:
        print(f"error: {exc}", file=sys.stderr)
    return 2


def cmd_client(args: argparse.Namespace) -> int:
    return _run_order_session(_client_main(args), os_error="cannot reach the gateway: ")


# -- md ---------------------------------------------------------------------------------------
async def _md_main(args: argparse.Namespace) -> int:
    from websockets.asyncio.client import connect

    from protocol import codec
    from protocol.mdjson import Request, encoder

    url = f"ws://{args.connect}/md"
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else None
    async with connect(url, additional_headers=headers, compression=None, max_size=None) as ws:
        req = Request(op="subscribe", id=1, channels=args.channels.split(","), symbols=args.symbols,
                      encoding=args.encoding, levels=args.levels)
        text = encoder.encode(req).decode()
        print(f"> {text}")
        await ws.send(text)
        n = 0
        async for data in ws:
            if isinstance(data, str):
                print(f"< {data}")
            elif args.hex:
                print(f"< binary {len(data)} bytes: {data.hex(' ')}")
            else:
                msgs, _ = codec.decode_frames(data, sofh=False)
                for m in msgs:
                    print(f"< {describe(m)}")
            n += 1
            if args.count and n >= args.count:
                break
    return 0


def cmd_md(args: argparse.Namespace) -> int:
    from websockets.exceptions import InvalidHandshake, WebSocketException

    try:
        return asyncio.run(_md_main(args))
    except (OSError, InvalidHandshake) as exc:
        print(f"error: cannot subscribe at {args.connect}: {exc}", file=sys.stderr)
        return 2
    except WebSocketException as exc:
        print(f"connection closed: {exc}", file=sys.stderr)
        return 1


# -- replay-lobster ---------------------------------------------------------------------------
async def _replay_main(args: argparse.Namespace) -> int:
    from gateway.clients.lobster import read_lobster, replay
    from gateway.clients.tcp import OrderClient
    from gateway.security.auth import mint_token

    msgs, books = read_lobster(args.message_csv, args.orderbook_csv, args.limit)
    directory = _directory(args.directory)
    endpoint = directory.route(args.symbol).order_entry if directory else args.connect
    host, port = parse_hostport(endpoint, "--connect")
    token = args.token or mint_token(_secret(args.config), args.account)
    client = await OrderClient.connect(host, port, token, heartbeat_ms=5000)
    try:
        result = await replay(client, msgs, books, args.symbol)
    finally:
        await client.logout()
    d = result.as_dict()
    if args.json:
        print(json.dumps(d))
    else:
        for k, v in d.items():
            print(f"{k:>22}: {v:.3f}" if isinstance(v, float) else f"{k:>22}: {v}")
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    # ValueError: a malformed LOBSTER file, or a bad --connect
    return _run_order_session(_replay_main(args), also=(ValueError,))


# -- parser -----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hftgw", description="Exchange order gateway and matching engine")
    p.add_argument("--config", default=os.environ.get("HFTGW_CONFIG"),
                   help="TOML config file (default: embedded defaults + HFTGW_* variables)")
    sub = p.add_subparsers(dest="command", required=True)
    _add_operator_commands(sub)
    _add_client_command(sub)
    _add_md_and_replay_commands(sub)
    return p


_Subparsers = argparse._SubParsersAction  # the type add_subparsers returns


def _add_operator_commands(sub: _Subparsers[argparse.ArgumentParser]) -> None:
    """serve, repair, config, probe, reload, directory, token."""
    s = sub.add_parser("serve", help="run the gateway")
    s.add_argument("--config", default=argparse.SUPPRESS, help="TOML config file")
    s.add_argument("--log-level", default=None)
    s.set_defaults(func=cmd_serve)

    rep = sub.add_parser("repair", help="check the partition's files against its journal and "
                         "move aside what the journal no longer explains (docs/durability.md)")
    rep.add_argument("--config", default=argparse.SUPPRESS, help="TOML config file")
    rep.add_argument("--apply", action="store_true",
                     help="do it (without: only say what was found and what would be done)")
    rep.set_defaults(func=cmd_repair)

    cf = sub.add_parser("config", help="check, show or document the configuration")
    cfs = cf.add_subparsers(dest="action", required=True)
    ck = cfs.add_parser("check", help="validate config files without starting (exit 2 if invalid)")
    ck.add_argument("files", nargs="+", metavar="FILE")
    sh = cfs.add_parser("show", help="print the effective config (file + HFTGW_* variables), "
                                     "secrets masked")
    sh.add_argument("file", nargs="?", default=None, help="TOML file (default: --config)")
    sh.add_argument("--format", choices=["toml", "json"], default="toml")
    cfs.add_parser("reference", help="print every key with its default as a Markdown table")
    cf.set_defaults(func=cmd_config)

    pr = sub.add_parser("probe", help="GET /health or /ready of the side port; exit 0 if 200")
    pr.add_argument("what", choices=["health", "ready"], nargs="?", default="health")
    pr.add_argument("--timeout", type=float, default=3.0)
    pr.set_defaults(func=cmd_probe)

    rl = sub.add_parser("reload", help="SIGHUP the gateway: re-read its config (live keys)")
    rl.add_argument("--pid", type=int, default=None, help="default: the only hftgw serve process")
    rl.set_defaults(func=cmd_reload)

    di = sub.add_parser("directory", help="print the partition directory (FILE or URL)")
    di.add_argument("source", nargs="?", default=os.environ.get("HFTGW_DIRECTORY"),
                    help="file or http://HOST:PORT/directory (default: HFTGW_DIRECTORY)")
    di.set_defaults(func=cmd_directory)

    t = sub.add_parser("token", help="print a JWT for the configured algorithm, issuer and audience")
    t.add_argument("--account", required=True)
    t.add_argument("--role", action="append", choices=["trader", "md", "admin", "dropcopy"],
                   help="a role (repeat for several; default trader)")
    t.add_argument("--ttl", type=int, default=3600, help="seconds of validity")
    t.add_argument("--session", default="",
                   help="the session claim: which of the account's trading sessions (default: none)")
    t.add_argument("--key-file", default=None,
                   help="PEM private key for RS256/ES256 (default: the HS256 jwt_secret)")
    t.set_defaults(func=cmd_token)


def _conn_args(q: argparse.ArgumentParser, account: str) -> None:
    """The order-entry connection options of ``client`` and ``replay-lobster``."""
    q.add_argument("--connect", default=os.environ.get("HFTGW_CONNECT", "127.0.0.1:7001"),
                   help="HOST:PORT of order entry")
    q.add_argument("--token", default=None,
                   help="JWT (default: one minted from HFTGW_JWT_SECRET for --account)")
    q.add_argument("--account", default=account)
    q.add_argument("--directory", default=os.environ.get("HFTGW_DIRECTORY"),
                   help="partition directory, FILE or http://HOST:PORT/directory: connect to "
                        "the partition serving the symbol instead of --connect")


def _add_client_command(sub: _Subparsers[argparse.ArgumentParser]) -> None:
    """client and its requests: new, cancel, replace, mass-cancel, end-of-session, positions, book."""
    c = sub.add_parser("client", help="log in, send one request, print the responses")
    _conn_args(c, "demo")
    c.add_argument("--role", default="trader", choices=["trader", "admin"],
                   help="role of the token minted for --account (admin may send end-of-session)")
    c.add_argument("--stp-default", choices=STP_CHOICES, default="none",
                   help="the session's default self-trade prevention, for orders sent without --stp")
    c.add_argument("--wait", type=float, default=0.5,
                   help="stop after this many seconds with no new message")
    c.add_argument("--cl-ord-id", type=int, default=None)
    c.add_argument("--next-seq", type=int, default=0, metavar="N",
                   help="nextExpectedSeqNum of the Login: the server first resends the session's "
                        "messages from N (0 = none)")
    csub = c.add_subparsers(dest="action", required=True)
    n = csub.add_parser("new", help="new order: SYMBOL buy|sell QTY [PRICE] (no price = market)")
    n.add_argument("symbol")
    n.add_argument("side", choices=["buy", "sell"])
    n.add_argument("qty", type=int)
    n.add_argument("price", type=price_units, nargs="?", default=None, help="e.g. 150.25")
    n.add_argument("--tif", choices=["gtc", "ioc", "fok", "day"], default="gtc")
    n.add_argument("--post-only", action="store_true")
    n.add_argument("--stop", type=price_units, default=None, metavar="PRICE",
                   help="stop trigger price: a stop (no PRICE) or stop-limit (with PRICE) order")
    n.add_argument("--display", type=int, default=0, metavar="QTY",
                   help="iceberg: lots shown at a time")
    n.add_argument("--stp", choices=STP_CHOICES, default="none",
                   help="self-trade prevention (none = the session default)")
    x = csub.add_parser("cancel", help="cancel: SYMBOL ORIG_CL_ORD_ID")
    x.add_argument("symbol")
    x.add_argument("orig", type=int)
    r = csub.add_parser("replace", help="replace: SYMBOL ORIG_CL_ORD_ID PRICE QTY")
    r.add_argument("symbol")
    r.add_argument("orig", type=int)
    r.add_argument("price", type=price_units)
    r.add_argument("qty", type=int, help="new total order quantity")
    r.add_argument("--new-cl-ord-id", type=int, default=None)
    m = csub.add_parser("mass-cancel", help="cancel this session's orders [on SYMBOL]")
    m.add_argument("symbol", nargs="?", default="")
    m.add_argument("--side", choices=["both", "buy", "sell"], default="both")
    m.add_argument("--scope", choices=["session", "account"], default="session",
                   help="account: every order of the account, whichever session sent it")
    e = csub.add_parser("end-of-session", help="expire DAY orders [of SYMBOL] (needs --role admin)")
    e.add_argument("symbol", nargs="?", default="")
    pq = csub.add_parser("positions", help="the account's positions [in SYMBOL]")
    pq.add_argument("symbol", nargs="?", default="")
    b = csub.add_parser("book", help="in-sequence book query: SYMBOL")
    b.add_argument("symbol")
    b.add_argument("--depth", type=int, default=5)
    c.set_defaults(func=cmd_client)


def _add_md_and_replay_commands(sub: _Subparsers[argparse.ArgumentParser]) -> None:
    """md (market data) and replay-lobster."""
    md = sub.add_parser("md", help="subscribe to market data over WebSocket and print it")
    md.add_argument("symbols", nargs="+")
    md.add_argument("--connect", default=os.environ.get("HFTGW_WS_CONNECT", "127.0.0.1:7002"),
                    help="HOST:PORT of the WebSocket port")
    md.add_argument("--channels", default="bbo,trades,depth", help="comma-separated: bbo,trades,depth")
    md.add_argument("--encoding", choices=["json", "binary"], default="json")
    md.add_argument("--levels", type=int, choices=[5, 10, 20], default=10, help="depth levels per side")
    md.add_argument("--count", type=int, default=0, help="stop after N messages (0: until interrupted)")
    md.add_argument("--hex", action="store_true", help="binary messages as hex bytes, not decoded")
    md.add_argument("--token", default=None, help="JWT of role md, when the server requires one")
    md.set_defaults(func=cmd_md)

    rp = sub.add_parser("replay-lobster", help="replay a LOBSTER message file through the gateway")
    rp.add_argument("message_csv")
    rp.add_argument("orderbook_csv")
    rp.add_argument("--symbol", default="AMZN")
    rp.add_argument("--limit", type=int, default=None)
    rp.add_argument("--json", action="store_true")
    _conn_args(rp, "lobster")
    rp.set_defaults(func=cmd_replay)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        for line in exc.errors:
            print(f"config error: {line}", file=sys.stderr)
        return 2
    except DirectoryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
