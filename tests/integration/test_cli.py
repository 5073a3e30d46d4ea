"""The ``hftgw`` command as a user runs it: a ``serve`` process, ``token``, ``client``, and the
full AMZN LOBSTER day through ``replay-lobster`` with the exact figures of a price-time engine."""
from __future__ import annotations

import json
from pathlib import Path

import jwt
from support.gateway_harness import BOOKS, MESSAGES, hftgw, metric_value, scrape, serve_process

from gateway.config.schema import DEV_JWT_SECRET


def test_token_command_signs_with_the_configured_secret() -> None:
    out = hftgw("token", "--account", "alice", "--ttl", "60")
    assert out.returncode == 0, out.stderr
    claims = jwt.decode(out.stdout.strip(), DEV_JWT_SECRET, algorithms=["HS256"])
    assert claims["sub"] == "alice" and claims["roles"] == "trader"
    assert claims["exp"] - claims["iat"] == 60
    bad = hftgw("token", "--account", "alice", "--role", "root")
    assert bad.returncode != 0


def test_token_command_signs_rs256_with_a_key_file(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    priv, pub = tmp_path / "issuer.pem", tmp_path / "issuer.pub.pem"
    priv.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
    conf = tmp_path / "gw.toml"
    conf.write_text(f'jwt_algorithm = "RS256"\njwt_public_key_file = "{pub}"\njwt_issuer = "idp"\n')
    out = hftgw("--config", str(conf), "token", "--account", "ops", "--role", "admin",
                "--role", "trader", "--key-file", str(priv))
    assert out.returncode == 0, out.stderr
    claims = jwt.decode(out.stdout.strip(), pub.read_text(), algorithms=["RS256"], issuer="idp")
    assert claims["sub"] == "ops" and claims["roles"] == ["admin", "trader"]
    missing = hftgw("--config", str(conf), "token", "--account", "ops")
    assert missing.returncode == 2 and "--key-file" in missing.stderr


def test_quick_start_client_sees_ack_and_fill(tmp_path: Path) -> None:
    with serve_process(tmp_path) as (cfg, _proc):
        sell = hftgw("client", "--connect", cfg.listen, "--account", "alice", "--cl-ord-id", "1",
                     "new", "AAPL", "sell", "100", "150.00")
        assert sell.returncode == 0, sell.stderr
        assert "OrderAccepted" in sell.stdout and "price=150" in sell.stdout
        buy = hftgw("client", "--connect", cfg.listen, "--account", "bob", "--cl-ord-id", "2",
                    "new", "AAPL", "buy", "40", "150.01")
        assert buy.returncode == 0, buy.stderr
        assert "Execution" in buy.stdout and "last_qty=40" in buy.stdout
        assert "liquidity=TAKER" in buy.stdout
        book = hftgw("client", "--connect", cfg.listen, "--account", "alice", "book", "AAPL")
        assert "asks=[150 x 60 (1)]" in book.stdout, book.stdout
        pos = hftgw("client", "--connect", cfg.listen, "--account", "alice", "positions", "AAPL")
        assert "PositionReport" in pos.stdout and "net_position=-40" in pos.stdout, pos.stdout
        assert "avg_price=150 " in pos.stdout and "open_sell_qty=60" in pos.stdout
        _, text = scrape(cfg)
        assert metric_value(text, "hftgw_fills_total") == 1
        down = hftgw("client", "--connect", "127.0.0.1:1", "book", "AAPL")
        assert down.returncode == 2 and "cannot reach" in down.stderr


def test_serve_process_restart_keeps_the_book(tmp_path: Path) -> None:
    with serve_process(tmp_path) as (cfg, proc):
        out = hftgw("client", "--connect", cfg.listen, "--account", "alice", "--cl-ord-id", "5",
                    "new", "INTC", "buy", "300", "30.25")
        assert "OrderAccepted" in out.stdout
    assert proc.returncode == 0  # SIGTERM is a clean exit
    with serve_process(tmp_path) as (cfg, _):
        book = hftgw("client", "--connect", cfg.listen, "--account", "alice", "book", "INTC")
        assert "bids=[30.25 x 300 (1)]" in book.stdout, book.stdout


def test_full_amzn_day_through_replay_lobster(tmp_path: Path) -> None:
    assert MESSAGES.exists(), f"LOBSTER sample missing: {MESSAGES}"
    with serve_process(tmp_path) as (cfg, _):
        out = hftgw("replay-lobster", str(MESSAGES), str(BOOKS), "--symbol", "AMZN", "--json",
                    "--connect", cfg.listen, timeout=400)
        assert out.returncode == 0, out.stderr
        got = json.loads(out.stdout)
    expected = {"rows": 57515, "new": 27845, "ioc": 8974, "fills": 19755, "traded_qty": 904518,
                "cancel": 11662, "reduce": 8, "skipped_unknown": 6581, "bbo_agree": 1435,
                "resting_orders_at_end": 1533}
    assert {k: got[k] for k in expected} == expected
    assert got["rejects"] == 0
    assert got["skipped_other"] == 57515 - 27845 - 8974 - 11662 - 8 - 6581


def client(cfg_listen: str, account: str, *args: str, role: str = "trader") -> str:
    out = hftgw("client", "--connect", cfg_listen, "--account", account, "--role", role, "--wait", "0.3",
                *args)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_client_every_order_type_and_stp_mode(tmp_path: Path) -> None:
    """``hftgw client`` as a user types it, against a ``serve`` process: DAY, IOC, FOK, market,
    post-only, iceberg, stop, stop-limit, replace, mass cancel by side and scope, every
    self-trade prevention mode and the session default, end of session (admin only)."""
    with serve_process(tmp_path) as (cfg, _):
        L = cfg.listen
        # DAY limit, then a trader's end-of-session is refused and an admin's expires it
        out = client(L, "dana", "--cl-ord-id", "1", "new", "INTC", "buy", "10", "30.00", "--tif", "day")
        assert "time_in_force=DAY" in out and "OrderAccepted" in out
        out = client(L, "dana", "end-of-session", "INTC")
        assert "SessionReject reason=NOT_AUTHORIZED ref_template_id=15" in out
        out = client(L, "ops", "--cl-ord-id", "7", "end-of-session", role="admin")
        assert "MassCancelDone cl_ord_id=7 canceled_count=1" in out
        # iceberg: the book shows one slice; post-only that would take is rejected
        out = client(L, "ivy", "--cl-ord-id", "2", "new", "GOOG", "sell", "100", "120.00", "--display", "10")
        assert "OrderAccepted" in out
        assert "asks=[120 x 10 (1)]" in client(L, "ivy", "book", "GOOG")
        out = client(L, "pat", "--cl-ord-id", "3", "new", "GOOG", "buy", "5", "120.00", "--post-only")
        assert "OrderRejected" in out and "reason=POST_ONLY_WOULD_TAKE" in out
        # FOK too big, then IOC and market
        out = client(L, "pat", "--cl-ord-id", "4", "new", "GOOG", "buy", "500", "120.00", "--tif", "fok")
        assert "reason=FOK_UNFILLED" in out and "Execution" not in out
        out = client(L, "pat", "--cl-ord-id", "5", "new", "GOOG", "buy", "15", "120.00", "--tif", "ioc")
        assert out.count("Execution") == 2 and "reason=IOC_REMAINDER" not in out     # 10 + 5, filled
        out = client(L, "pat", "--cl-ord-id", "6", "new", "GOOG", "buy", "90")
        assert "ord_type=MARKET" in out and "reason=NO_LIQUIDITY" in out
        # a buy stop at 121.00 and a sell stop-limit, fired by a trade at 121.00
        out = client(L, "sam", "--cl-ord-id", "8", "new", "GOOG", "buy", "2", "--stop", "121.00")
        assert "ord_type=STOP " in out
        out = client(L, "sam", "--cl-ord-id", "9", "new", "GOOG", "sell", "1", "100.00", "--stop", "99.00")
        assert "ord_type=STOP_LIMIT" in out
        client(L, "ivy", "--cl-ord-id", "10", "new", "GOOG", "sell", "5", "121.00")
        out = client(L, "pat", "--cl-ord-id", "11", "new", "GOOG", "buy", "1", "121.00")
        assert "Execution" in out
        out = client(L, "sam", "book", "GOOG")        # sam was away: the stop traded meanwhile
        assert "asks=[121 x 2 (1)]" in out, out
        # replace quantity down keeps the order; mass cancel by side and by account scope
        out = client(L, "ivy", "replace", "GOOG", "10", "121.00", "4")
        assert "OrderReplaced" in out and "leaves_qty=1" in out       # 3 of the 4 are filled
        out = client(L, "ivy", "mass-cancel", "GOOG", "--side", "buy")
        assert "canceled_count=0" in out
        out = client(L, "ivy", "mass-cancel", "--scope", "account")
        assert "canceled_count=1" in out and "reason=MASS_CANCEL" in out
        # self-trade prevention: each mode against the account's own resting sell
        client(L, "stp", "--cl-ord-id", "20", "new", "MSFT", "sell", "10", "300.00")
        out = client(L, "stp", "--cl-ord-id", "21", "new", "MSFT", "buy", "4", "300.00",
                     "--stp", "cancel-newest")
        assert "orig_cl_ord_id=21" in out and "reason=SELF_TRADE" in out and "Execution" not in out
        out = client(L, "stp", "--cl-ord-id", "22", "new", "MSFT", "buy", "4", "300.00",
                     "--stp", "decrement")
        assert "canceled_qty=4" in out and "leaves_qty=6" in out and "Execution" not in out
        out = client(L, "stp", "--cl-ord-id", "23", "new", "MSFT", "buy", "4", "300.00",
                     "--stp", "cancel-both")
        assert "orig_cl_ord_id=20" in out and "orig_cl_ord_id=23" in out
        client(L, "stp", "--cl-ord-id", "24", "new", "MSFT", "sell", "10", "300.00")
        client(L, "mm", "--cl-ord-id", "1", "new", "MSFT", "sell", "3", "300.00")
        out = client(L, "stp", "--cl-ord-id", "25", "new", "MSFT", "buy", "3", "300.00",
                     "--stp", "cancel-oldest")
        assert "orig_cl_ord_id=24" in out and "Execution" in out and "last_qty=3" in out
        client(L, "stp", "--cl-ord-id", "26", "new", "MSFT", "sell", "5", "301.00")
        out = client(L, "stp", "--stp-default", "cancel-newest", "--cl-ord-id", "27",
                     "new", "MSFT", "buy", "5", "301.00")
        assert "orig_cl_ord_id=27" in out and "reason=SELF_TRADE" in out
        _, text = scrape(cfg)
        assert metric_value(text, "hftgw_cancels_total", 'reason="self_trade"') == 7     # 1+2+2+1+1
