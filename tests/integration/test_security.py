"""Access control through the real gateway on 127.0.0.1: token checks (HS256, RS256, ES256,
expiry, nbf, iss, aud, alg none, another key), role rules, login rate limit, sessions per
account, connections per address, the audit log."""
from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from support.gateway_harness import limit as order
from support.gateway_harness import make_config, metric_value, raw_exchange, running_gateway, scrape

from gateway.clients.tcp import LoginError, OrderClient
from gateway.config.schema import Config
from gateway.security.auth import mint_token
from matching.records import LoginRejectReason, RejectReason, Side
from protocol import codec
from protocol.messages import (
    CancelOrder,
    CancelRejected,
    Execution,
    Login,
    LoginRejected,
    Logout,
    Message,
    OrderAccepted,
    PositionQuery,
    PositionReport,
    SessionReject,
)
from protocol.session import LogoutReason

L = LoginRejectReason
BUY, SELL = Side.SIDE_BUY, Side.SIDE_SELL


async def raw_messages(cfg: Config, data: bytes, timeout: float = 3.0) -> list[Message]:
    """Send bytes on a fresh connection and read until the server closes it."""
    return (await raw_exchange(cfg, data, timeout))[0]


def hostport(cfg: Config) -> tuple[str, int]:
    host, port = cfg.listen.rsplit(":", 1)
    return host, int(port)


async def connect(cfg: Config, token: str, **kw: Any) -> OrderClient:
    return await OrderClient.connect(*hostport(cfg), token, **kw)


async def refused(cfg: Config, token: str) -> int:
    """The LoginRejectReason the gateway answers a Login with ``token``."""
    with pytest.raises(LoginError) as e:
        c = await connect(cfg, token)
        await c.close()
    return e.value.reason


def audit_lines(cfg: Config) -> list[dict[str, Any]]:
    path = Path(cfg.journal_dir) / "audit.log"
    return [json.loads(line) for line in path.read_text().splitlines()]


def write_keys(tmp_path: Path, kind: str) -> tuple[str, Path]:
    """A fresh key pair: (private PEM text, path of the public PEM file)."""
    key: Any = (rsa.generate_private_key(public_exponent=65537, key_size=2048) if kind == "RS256"
                else ec.generate_private_key(ec.SECP256R1()))
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    pub = tmp_path / f"{kind}.pub.pem"
    pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, pub


def hs256_with_key(key: bytes, claims: dict[str, Any]) -> str:
    """An HS256 token whose HMAC key is ``key`` (for the algorithm-confusion attack: the
    server's public key used as a shared secret); built by hand since pyjwt refuses to."""
    def b64(b: bytes) -> str:
        return base64.urlsafe_b64encode(b).rstrip(b"=").decode()

    signing_input = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()) + "." + \
        b64(json.dumps(claims).encode())
    return signing_input + "." + b64(hmac.new(key, signing_input.encode(), hashlib.sha256).digest())


# -- tokens ---------------------------------------------------------------------------------------
async def test_hs256_token_claims_are_checked(tmp_path: Path) -> None:
    cfg = make_config(tmp_path / "j", jwt_issuer="hftgw-idp", jwt_audience="hftgw-orders",
                      jwt_leeway_s=5)
    sec = cfg.jwt_secret

    def tok(**kw: Any) -> str:
        base: dict[str, Any] = dict(issuer="hftgw-idp", audience="hftgw-orders")
        base.update(kw)
        return mint_token(sec, "alice", **base)

    async with running_gateway(cfg):
        ok = await connect(cfg, tok())
        await ok.logout()
        now = time.time()
        assert await refused(cfg, tok(ttl_s=10, now=now - 60)) == L.LOGIN_TOKEN_EXPIRED
        # expired 2 s ago, within the 5 s leeway: accepted
        late = await connect(cfg, tok(ttl_s=10, now=now - 12))
        await late.logout()
        assert await refused(cfg, tok(not_before_s=60)) == L.LOGIN_BAD_TOKEN         # nbf future
        assert await refused(cfg, tok(issuer="someone-else")) == L.LOGIN_BAD_TOKEN
        assert await refused(cfg, tok(issuer="")) == L.LOGIN_BAD_TOKEN               # iss missing
        assert await refused(cfg, tok(audience="other")) == L.LOGIN_BAD_TOKEN
        other_key = mint_token("another-secret-another-secret-0000", "alice", issuer="hftgw-idp",
                               audience="hftgw-orders")
        assert await refused(cfg, other_key) == L.LOGIN_BAD_TOKEN
        none_tok = jwt.encode({"sub": "alice", "exp": int(now) + 60, "iss": "hftgw-idp",
                               "aud": "hftgw-orders"}, key=None, algorithm="none")  # type: ignore[arg-type]
        assert await refused(cfg, none_tok) == L.LOGIN_BAD_TOKEN
        assert await refused(cfg, "not.a.jwt") == L.LOGIN_BAD_TOKEN
        unknown_role = jwt.encode({"sub": "alice", "roles": ["root"], "exp": int(now) + 60,
                                   "iss": "hftgw-idp", "aud": "hftgw-orders"}, sec, algorithm="HS256")
        assert await refused(cfg, unknown_role) == L.LOGIN_BAD_TOKEN
    # the audit log has every attempt, outcome and reason, never a token
    lines = audit_lines(cfg)
    logins = [x for x in lines if x["event"] == "login"]
    assert [x["outcome"] for x in logins].count("accepted") == 2
    reasons = [x["reason"] for x in logins if x["outcome"] == "rejected"]
    assert reasons == ["token_expired", "not_yet_valid", "wrong_issuer", "bad_token",
                       "wrong_audience", "bad_signature", "bad_algorithm", "bad_token", "bad_claims"]
    assert all({"time", "address", "account", "outcome"} <= set(x) for x in logins)
    assert logins[0]["account"] == "alice" and logins[0]["address"].startswith("127.0.0.1:")
    text = (Path(cfg.journal_dir) / "audit.log").read_text()
    assert tok()[:20] not in text and "eyJ" not in text


@pytest.mark.parametrize("alg", ["RS256", "ES256"])
async def test_public_key_tokens(tmp_path: Path, alg: str) -> None:
    private, pub = write_keys(tmp_path, alg)
    cfg = make_config(tmp_path / "j", jwt_algorithm=alg, jwt_public_key_file=str(pub))
    async with running_gateway(cfg):
        c = await connect(cfg, mint_token(private, "alice", algorithm=alg))
        c.send(order(1, BUY, 1_000_000, 5))
        assert isinstance(await c.recv(), OrderAccepted)
        await c.logout()
        (tmp_path / "other").mkdir()
        other, _ = write_keys(tmp_path / "other", alg)
        assert await refused(cfg, mint_token(other, "bob", algorithm=alg)) == L.LOGIN_BAD_TOKEN
        # the configured secret or the public key used as an HS256 secret: refused (one algorithm)
        assert await refused(cfg, mint_token(cfg.jwt_secret, "bob")) == L.LOGIN_BAD_TOKEN
        assert await refused(cfg, hs256_with_key(pub.read_bytes(), {"sub": "bob", "exp": 2**40})) \
            == L.LOGIN_BAD_TOKEN
        expired = mint_token(private, "bob", algorithm=alg, ttl_s=5, now=time.time() - 100)
        assert await refused(cfg, expired) == L.LOGIN_TOKEN_EXPIRED


# -- roles ----------------------------------------------------------------------------------------
async def test_roles_on_order_entry(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, max_role_violations=3)
    sec = cfg.jwt_secret
    async with running_gateway(cfg) as gw:
        # a market-data token may not open an order-entry session; an admin-only one may, for
        # EndOfSession only (its orders are refused)
        assert await refused(cfg, mint_token(sec, "mdfeed", "md")) == L.LOGIN_NOT_AUTHORIZED
        ops = await connect(cfg, mint_token(sec, "ops", "admin"))
        ops.send(order(99, BUY, 1_000_000, 1))
        rej = await ops.recv()
        assert isinstance(rej, SessionReject) and rej.reason == RejectReason.REJ_NOT_AUTHORIZED
        await ops.logout()
        # a trader trades for its own account only: bob cannot touch alice's order
        alice = await connect(cfg, mint_token(sec, "alice", ["trader", "admin"]))
        bob = await connect(cfg, mint_token(sec, "bob"))
        alice.send(order(1, SELL, 1_000_000, 10))
        assert isinstance(await alice.recv(), OrderAccepted)
        bob.send(CancelOrder(cl_ord_id=2, orig_cl_ord_id=1, symbol="AAPL"))
        cr = await bob.recv()
        assert isinstance(cr, CancelRejected) and cr.reason == RejectReason.REJ_UNKNOWN_ORDER
        assert gw.engine.core.order_count() == 1
        # drop copy: read-only copy of alice's messages, with alice's sequence numbers
        dc = await connect(cfg, mint_token(sec, "alice", "dropcopy"))
        assert dc.session_id == alice.session_id and dc.next_seq_num == 2
        bob.send(order(3, BUY, 1_000_000, 4))
        await bob.recv_until(lambda m: isinstance(m, Execution))
        a_fill, d_fill = await alice.recv(), await dc.recv()
        assert isinstance(a_fill, Execution) and d_fill == a_fill and d_fill.seq_num == 2
        dc.send(PositionQuery(request_id=7, symbol="AAPL"))
        rep = await dc.recv()
        assert isinstance(rep, PositionReport) and rep.net_position == -4 and rep.open_sell_qty == 6
        # orders from the drop copy are refused, and the third refusal ends the session
        for cl in (10, 11, 12):
            dc.send(order(cl, BUY, 1_000_000, 1))
        msgs = [await dc.recv() for _ in range(4)]
        assert [type(m).__name__ for m in msgs] == ["SessionReject"] * 3 + ["Logout"]
        assert all(m.reason == RejectReason.REJ_NOT_AUTHORIZED and m.ref_template_id == 10 for m in msgs[:3])
        assert msgs[3].reason == LogoutReason.POLICY_VIOLATION
        assert gw.engine.core.order_count() == 1
        await asyncio.sleep(0.05)
        _, text = scrape(cfg)
        assert metric_value(text, "hftgw_role_violations_total") == 4
        assert metric_value(text, "hftgw_policy_disconnects_total") == 1
        assert metric_value(text, "hftgw_rejects_total", 'reason="not_authorized"') == 4
        assert metric_value(text, "hftgw_login_failures_total", 'reason="not_authorized"') == 1
        await alice.logout()
        await bob.logout()


async def test_orders_before_login_count_as_violations(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, max_role_violations=2)
    async with running_gateway(cfg):
        msgs = await raw_messages(cfg, codec.encode(order(1, BUY, 1_000_000, 1)) * 5)
        assert [type(m).__name__ for m in msgs] == ["SessionReject", "SessionReject", "Logout"]
        assert msgs[0].reason == RejectReason.REJ_NOT_LOGGED_IN
        assert msgs[-1].reason == LogoutReason.POLICY_VIOLATION


# -- login rate, sessions per account, connections per address --------------------------------------
async def test_login_attempts_are_rate_limited_per_address(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, login_rate_per_address=0.5, login_burst_per_address=3)
    async with running_gateway(cfg):
        bad = mint_token("another-secret-another-secret-0000", "mallory")
        for _ in range(3):
            assert await refused(cfg, bad) == L.LOGIN_BAD_TOKEN
        # the bucket is empty: even a good token is refused now, without being verified
        assert await refused(cfg, mint_token(cfg.jwt_secret, "alice")) == L.LOGIN_RATE_LIMITED
        await asyncio.sleep(2.1)                      # one token back at 0.5/s
        ok = await connect(cfg, mint_token(cfg.jwt_secret, "alice"))
        await ok.logout()
        _, text = scrape(cfg)
        assert metric_value(text, "hftgw_login_rate_limited_total") == 1
        assert metric_value(text, "hftgw_login_failures_total", 'reason="rate_limited"') == 1
    assert [x["reason"] for x in audit_lines(cfg) if x["outcome"] == "rejected"] == \
        ["bad_signature"] * 3 + ["rate_limited"]


async def test_sessions_per_account_limit(tmp_path: Path) -> None:
    # drop copies are counted apart from trading sessions (test_account_sessions.py)
    cfg = make_config(tmp_path, max_sessions_per_account=2, max_dropcopy_per_account=1)
    sec = cfg.jwt_secret
    async with running_gateway(cfg):
        t = await connect(cfg, mint_token(sec, "alice"))
        d1 = await connect(cfg, mint_token(sec, "alice", "dropcopy"))
        assert await refused(cfg, mint_token(sec, "alice", "dropcopy")) == L.LOGIN_SESSION_LIMIT
        other = await connect(cfg, mint_token(sec, "bob", "dropcopy"))   # per account
        await d1.logout()
        await asyncio.sleep(0.05)
        d2 = await connect(cfg, mint_token(sec, "alice", "dropcopy"))  # a slot is free again
        for c in (t, d2, other):
            await c.logout()


async def test_connections_per_address_limit(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, max_connections_per_address=20)
    async with running_gateway(cfg) as gw:
        conns = [await asyncio.open_connection(*hostport(cfg)) for _ in range(60)]
        closed_with_reason = 0
        for reader, _ in conns[20:]:
            data = await asyncio.wait_for(reader.read(), 3.0)          # until EOF
            msgs, _ = codec.decode_frames(data)
            if msgs and isinstance(msgs[0], Logout) and msgs[0].reason == LogoutReason.CONNECTION_LIMIT:
                closed_with_reason += 1
        assert closed_with_reason == 40
        assert gw.engine.addresses.open_from("127.0.0.1") == 20
        # the 20 admitted connections still work
        r, w = conns[0]
        w.write(codec.encode(Login(heartbeat_interval_ms=1000, next_expected_seq_num=0,
                                   cancel_on_disconnect=0, token=mint_token(cfg.jwt_secret, "z"))))
        msgs, _ = codec.decode_frames(await asyncio.wait_for(r.read(4096), 3.0))
        assert type(msgs[0]).__name__ == "LoginAccepted"
        for _, writer in conns:
            writer.close()
        await asyncio.sleep(0.1)
        assert gw.engine.addresses.open_from("127.0.0.1") == 0
        _, text = scrape(cfg)
        assert metric_value(text, "hftgw_connections_refused_total", 'limit="per_address"') == 40


async def test_login_rejected_message_for_each_refusal_is_clean(tmp_path: Path) -> None:
    """A refused login gets LoginRejected and a close, never a crash or a hang."""
    cfg = make_config(tmp_path)
    async with running_gateway(cfg):
        msgs = await raw_messages(cfg, codec.encode(Login(heartbeat_interval_ms=0, next_expected_seq_num=0,
                                                         cancel_on_disconnect=0, token="x" * 60000)))
        assert isinstance(msgs[0], LoginRejected) and msgs[0].reason == L.LOGIN_BAD_TOKEN
        bad_role = mint_token(cfg.jwt_secret, "alice", "md")
        msgs = await raw_messages(cfg, codec.encode(Login(heartbeat_interval_ms=0, next_expected_seq_num=0,
                                                         cancel_on_disconnect=0, token=bad_role)))
        assert [type(m) for m in msgs] == [LoginRejected]
        assert isinstance(msgs[0], LoginRejected) and msgs[0].reason == L.LOGIN_NOT_AUTHORIZED
        assert not any(isinstance(m, SessionReject) for m in msgs)


async def test_server_templates_from_a_client_are_role_violations(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, max_role_violations=2)
    async with running_gateway(cfg):
        from protocol.messages import LoginAccepted, OrderAccepted

        forged = OrderAccepted(seq_num=1, transact_time=0, cl_ord_id=1, order_id=1, price=1, order_qty=1,
                               leaves_qty=1, symbol="AAPL", side=1, ord_type=1, time_in_force=1)
        login = codec.encode(Login(heartbeat_interval_ms=1000, next_expected_seq_num=0,
                                   cancel_on_disconnect=0, token=mint_token(cfg.jwt_secret, "mallory")))
        msgs = await raw_messages(cfg, login + codec.encode(forged)
                                 + codec.encode(LoginAccepted(session_id=1, next_seq_num=1,
                                                              heartbeat_interval_ms=1)))
        assert [type(m).__name__ for m in msgs] == ["LoginAccepted", "SessionReject", "SessionReject",
                                                    "Logout"]
        assert [(m.reason, m.ref_template_id) for m in msgs[1:3]] == \
            [(RejectReason.REJ_NOT_AUTHORIZED, 20), (RejectReason.REJ_NOT_AUTHORIZED, 2)]
        assert msgs[3].reason == LogoutReason.POLICY_VIOLATION
