"""JWT login tokens (RFC 7519), HS256 with the configured secret, through pyjwt.

The account is the ``sub`` claim and the role the ``role`` claim; ``exp`` is required and checked.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import jwt

from matching.records import LoginRejectReason

ROLES = ("trader", "md", "admin", "dropcopy")
MAX_ACCOUNT_LEN = 32  # the account travels in a 32-byte field of the session-open command


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a verified token speaks for: account (``sub``), role, and expiry (s since epoch)."""

    account: str
    role: str
    expires_at: int


class LoginFailure(Exception):
    """A token was refused; ``reason`` is the LoginRejectReason sent to the client."""

    def __init__(self, reason: int, detail: str) -> None:
        super().__init__(detail)
        self.reason = int(reason)


def mint_token(secret: str, account: str, role: str = "trader", ttl_s: int = 3600,
               now: float | None = None) -> str:
    """A HS256 JWT for ``account`` with ``role``, valid for ``ttl_s`` seconds.

    Raises ValueError for an unknown role, an empty or over-long account, or ttl_s <= 0.
    """
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}")
    if not account or len(account.encode()) > MAX_ACCOUNT_LEN or not account.isascii():
        raise ValueError(f"account must be 1 to {MAX_ACCOUNT_LEN} ASCII characters")
    if ttl_s <= 0:
        raise ValueError("ttl must be positive")
    t = int(time.time() if now is None else now)
    return jwt.encode({"sub": account, "role": role, "iat": t, "exp": t + ttl_s}, secret,
                      algorithm="HS256")


def verify_token(token: str, secret: str, required_role: str = "trader") -> Identity:
    """Check signature (HS256 only: ``alg: none`` and other algorithms are refused) and expiry.

    Raises LoginFailure(LOGIN_TOKEN_EXPIRED) for an expired token, LoginFailure(LOGIN_BAD_TOKEN)
    for any other defect, LoginFailure(LOGIN_NOT_AUTHORIZED) for a role other than
    ``required_role`` (or admin).
    """
    try:
        claims = jwt.decode(token, secret, algorithms=["HS256"],
                            options={"require": ["exp", "sub"]})
    except jwt.ExpiredSignatureError:
        raise LoginFailure(LoginRejectReason.LOGIN_TOKEN_EXPIRED, "token expired") from None
    except jwt.PyJWTError as exc:
        raise LoginFailure(LoginRejectReason.LOGIN_BAD_TOKEN, f"bad token: {exc}") from None
    account = claims.get("sub")
    role = claims.get("role", "trader")
    if (not isinstance(account, str) or not account or not account.isascii()
            or len(account) > MAX_ACCOUNT_LEN):
        raise LoginFailure(LoginRejectReason.LOGIN_BAD_TOKEN, "bad sub claim")
    if role not in (required_role, "admin"):
        raise LoginFailure(LoginRejectReason.LOGIN_NOT_AUTHORIZED, f"role {role!r} may not trade")
    return Identity(account, str(role), int(claims["exp"]))
