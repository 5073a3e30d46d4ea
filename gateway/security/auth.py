"""Login tokens (JWT, RFC 7519) through pyjwt, and what each role may do.

Signature: HS256 with the configured secret, or RS256 / ES256 with a PEM public key read from
``jwt_public_key_file`` (the issuer keeps the private key).  Exactly one algorithm is accepted,
the configured one, so ``alg: none`` and algorithm-confusion tokens (an RS256 public key used as
an HS256 secret) are refused.  Claims (RFC 7519 §4.1): ``sub`` = the account (1-32 ASCII
characters), ``exp`` required, ``nbf`` and ``iat`` checked when present, ``iss`` / ``aud``
required and checked when configured, all with ``jwt_leeway_s`` of clock skew.  Roles come from
the ``jwt_roles_claim`` claim (default ``roles``: a string or a list of strings; ``role`` is read
as well), defaulting to ``trader`` when the token carries none.  ``session`` (optional, 1-16
printable ASCII characters) names which of the account's trading sessions a login is, as a
venue gives a firm several order-entry ports; without it the account's default session.

Roles (docs/security.md):

* ``trader``: order entry for its own account (every order-entry message, PositionQuery);
* ``dropcopy``: a read-only copy of the account's messages on an order-entry connection
  (PositionQuery only);
* ``md``: market data (no order entry);
* ``admin``: the admin API on the side port, and EndOfSession on an order-entry session (no
  other order entry unless the token is also trader).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import jwt

from matching.records import LoginRejectReason

if TYPE_CHECKING:
    from jwt.algorithms import AllowedPublicKeys

    from gateway.config.schema import Config

ROLES = ("trader", "md", "admin", "dropcopy")
MAX_ACCOUNT_LEN = 32  # the account travels in a 32-byte field of the session-open command
MAX_SESSION_NAME_LEN = 16  # and the session's name in a 16-byte one

#: template ids an order-entry session may send, by role (Login, Heartbeat, Logout always)
TPL_NEW_ORDER, TPL_CANCEL, TPL_REPLACE, TPL_MASS_CANCEL, TPL_BOOK_QUERY = 10, 11, 12, 13, 14
TPL_END_OF_SESSION, TPL_POSITION_QUERY = 15, 16
ROLE_TEMPLATES: dict[str, frozenset[int]] = {
    "trader": frozenset({TPL_NEW_ORDER, TPL_CANCEL, TPL_REPLACE, TPL_MASS_CANCEL, TPL_BOOK_QUERY,
                         TPL_POSITION_QUERY}),
    "dropcopy": frozenset({TPL_POSITION_QUERY}),
    "md": frozenset(),
    # an admin-only token's order-entry session may only expire DAY orders (EndOfSession); a
    # token that is also trader trades too (see Identity.session_role)
    "admin": frozenset({TPL_END_OF_SESSION}),
}
#: roles that may log in to an order-entry session, in order of preference
SESSION_ROLES = ("trader", "admin", "dropcopy")


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a verified token speaks for: account (``sub``), roles, expiry (s since epoch), and
    which of the account's trading sessions (``session``; "" = its default one)."""

    account: str
    roles: frozenset[str]
    expires_at: int
    session: str = ""

    @property
    def role(self) -> str:
        """The order-entry role this identity logs in with ('' when it has none)."""
        for r in SESSION_ROLES:
            if r in self.roles:
                return r
        return ""


class LoginFailure(Exception):
    """A token was refused; ``reason`` is the LoginRejectReason sent to the client and
    ``code`` a short name for logs and the audit log."""

    def __init__(self, reason: int, detail: str, code: str = "") -> None:
        super().__init__(detail)
        self.reason = int(reason)
        self.code = code or LoginRejectReason(int(reason)).name.removeprefix("LOGIN_").lower()


def check_account(account: str) -> None:
    if not account or len(account.encode()) > MAX_ACCOUNT_LEN or not account.isascii() \
            or not account.isprintable():
        raise ValueError(f"account must be 1 to {MAX_ACCOUNT_LEN} printable ASCII characters")


def check_session_name(name: str) -> None:
    if not name or len(name.encode()) > MAX_SESSION_NAME_LEN or not name.isascii() \
            or not name.isprintable():
        raise ValueError(f"session must be 1 to {MAX_SESSION_NAME_LEN} printable ASCII characters")


def mint_token(key: str, account: str, role: str | list[str] = "trader", ttl_s: int = 3600,
               now: float | None = None, *, algorithm: str = "HS256", issuer: str = "",
               audience: str = "", not_before_s: int = 0, roles_claim: str = "roles",
               session: str = "") -> str:
    """A JWT for ``account`` with ``role`` (one or a list), valid for ``ttl_s`` seconds from
    ``now`` (+ ``not_before_s`` before it becomes valid); ``session``: the ``session`` claim
    (which of the account's trading sessions; "" = none, the default session).  ``key``: the
    HS256 secret, or the PEM private key for RS256 / ES256.  Raises ValueError for an unknown
    role, a bad account or session name or ttl_s <= 0.
    """
    roles = [role] if isinstance(role, str) else list(role)
    for r in roles:
        if r not in ROLES:
            raise ValueError(f"role must be one of {ROLES}")
    check_account(account)
    if session:
        check_session_name(session)
    if ttl_s <= 0:
        raise ValueError("ttl must be positive")
    t = int(time.time() if now is None else now)
    claims: dict[str, str | int | list[str]] = {
        "sub": account, roles_claim: roles if len(roles) > 1 else roles[0], "iat": t, "exp": t + ttl_s}
    if not_before_s:
        claims["nbf"] = t + not_before_s
    if issuer:
        claims["iss"] = issuer
    if audience:
        claims["aud"] = audience
    if session:
        claims["session"] = session
    return jwt.encode(claims, key, algorithm=algorithm)


class TokenVerifier:
    """Verifies login tokens as configured.

    algorithm: "HS256" (``secret``) or "RS256" / "ES256" (``public_key``, PEM text); issuer /
    audience: required values when non-empty; leeway_s: clock skew; roles_claim: the claim with
    the roles.  Raises ValueError for an unknown algorithm or a missing key.
    """

    def __init__(self, *, algorithm: str = "HS256", secret: str = "", public_key: str = "",
                 issuer: str = "", audience: str = "", leeway_s: float = 30.0,
                 roles_claim: str = "roles") -> None:
        if algorithm == "HS256":
            if not secret:
                raise ValueError("HS256 needs a secret")
            self.key: str | AllowedPublicKeys = secret
        elif algorithm in ("RS256", "ES256"):
            if not public_key:
                raise ValueError(f"{algorithm} needs a public key")
            # parsed once here; a key of the wrong type for the algorithm fails now, not per login
            self.key = jwt.get_algorithm_by_name(algorithm).prepare_key(public_key)
        else:
            raise ValueError(f"unsupported JWT algorithm {algorithm!r}")
        self.algorithm = algorithm
        self.issuer = issuer
        self.audience = audience
        self.leeway_s = leeway_s
        self.roles_claim = roles_claim

    @classmethod
    def from_config(cls, cfg: Config) -> TokenVerifier:
        """Build from a gateway Config (reads jwt_public_key_file).  Raises OSError, ValueError."""
        public_key = ""
        if cfg.jwt_algorithm != "HS256":
            with open(cfg.jwt_public_key_file) as f:
                public_key = f.read()
        return cls(algorithm=cfg.jwt_algorithm, secret=cfg.jwt_secret, public_key=public_key,
                   issuer=cfg.jwt_issuer, audience=cfg.jwt_audience, leeway_s=cfg.jwt_leeway_s,
                   roles_claim=cfg.jwt_roles_claim)

    def verify(self, token: str) -> Identity:
        """Check the token.  Raises LoginFailure: LOGIN_TOKEN_EXPIRED for an expired token,
        LOGIN_BAD_TOKEN for any other defect (signature, algorithm, nbf in the future, issuer,
        audience, missing or malformed claims, unknown role)."""
        require = ["exp", "sub"] + (["iss"] if self.issuer else []) + (["aud"] if self.audience else [])
        try:
            claims = jwt.decode(token, self.key, algorithms=[self.algorithm],
                                issuer=self.issuer or None, audience=self.audience or None,
                                leeway=self.leeway_s,
                                options={"require": require, "verify_aud": bool(self.audience)})
        except jwt.ExpiredSignatureError:
            raise LoginFailure(LoginRejectReason.LOGIN_TOKEN_EXPIRED, "token expired") from None
        except jwt.ImmatureSignatureError:
            raise LoginFailure(LoginRejectReason.LOGIN_BAD_TOKEN, "token not valid yet (nbf)",
                               "not_yet_valid") from None
        except (jwt.InvalidIssuerError, jwt.InvalidAudienceError) as exc:
            raise LoginFailure(LoginRejectReason.LOGIN_BAD_TOKEN, f"bad token: {exc}",
                               "wrong_issuer" if isinstance(exc, jwt.InvalidIssuerError)
                               else "wrong_audience") from None
        except jwt.InvalidSignatureError:
            raise LoginFailure(LoginRejectReason.LOGIN_BAD_TOKEN, "bad signature", "bad_signature") from None
        except jwt.InvalidAlgorithmError as exc:
            raise LoginFailure(LoginRejectReason.LOGIN_BAD_TOKEN, f"bad token: {exc}",
                               "bad_algorithm") from None
        except jwt.PyJWTError as exc:
            raise LoginFailure(LoginRejectReason.LOGIN_BAD_TOKEN, f"bad token: {exc}") from None
        account = claims.get("sub")
        if not isinstance(account, str):
            raise LoginFailure(LoginRejectReason.LOGIN_BAD_TOKEN, "bad sub claim", "bad_claims")
        try:
            check_account(account)
        except ValueError:
            raise LoginFailure(LoginRejectReason.LOGIN_BAD_TOKEN, "bad sub claim", "bad_claims") from None
        raw = claims.get(self.roles_claim, claims.get("role", "trader"))
        roles = [raw] if isinstance(raw, str) else raw
        if not isinstance(roles, list) or not roles or not all(isinstance(r, str) for r in roles) \
                or not set(roles) <= set(ROLES):
            raise LoginFailure(LoginRejectReason.LOGIN_BAD_TOKEN, f"bad roles claim {raw!r}", "bad_claims")
        session = claims.get("session", "")
        try:
            # present means named: an empty name would be the default session in disguise
            if not isinstance(session, str):
                raise ValueError("session claim is not a string")
            if "session" in claims:
                check_session_name(session)
        except ValueError:
            raise LoginFailure(LoginRejectReason.LOGIN_BAD_TOKEN, f"bad session claim {session!r}",
                               "bad_claims") from None
        return Identity(account, frozenset(roles), int(claims["exp"]), session)


def unverified_subject(token: str) -> str:
    """The ``sub`` a token claims, WITHOUT verifying it: for the audit log of a refused login
    only (never for a decision).  '' when the token cannot be parsed."""
    try:
        sub = jwt.decode(token, options={"verify_signature": False}).get("sub", "")
    except Exception:  # noqa: BLE001 - any garbage: nothing to report
        return ""
    return sub[:MAX_ACCOUNT_LEN] if isinstance(sub, str) and sub.isascii() and sub.isprintable() else ""
