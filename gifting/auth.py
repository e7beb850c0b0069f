"""Access tokens: HS256 JWTs with ``sub``, ``role``, ``name``, ``exp``, ``iat``.

Pure functions over a secret; the HTTP API and the gateway both use them.
Every claim is checked by the boundary validator (``wallet.inputs``) before it
is believed: a token is signed by whoever holds the secret (the platform's
identity service), but its claims still reach SQL, Redis and every viewer's
screen, so ``sub`` must be a whole-string user id and ``name`` shown text.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import jwt

from wallet import inputs

ROLES = ("viewer", "creator", "admin")
USER_ID = inputs.USER_ID  # apply with fullmatch: a ``$`` would let "alice\n" through
MAX_TOKEN_BYTES = 4096
MAX_NAME = inputs.MAX_NAME


class AuthError(Exception):
    """No, invalid or expired token."""


@dataclass(frozen=True)
class Principal:
    id: str
    role: str
    name: str
    expires_at: float

    @property
    def display_name(self) -> str:
        return self.name or self.id


def mint(secret: str, user_id: str, role: str = "viewer", name: str | None = None,
         ttl: int = 3600, now: float | None = None) -> str:
    if not inputs.is_user_id(user_id):
        raise ValueError("user id is 1-64 characters of [A-Za-z0-9_-]")
    if role not in ROLES:
        raise ValueError(f"role is one of {', '.join(ROLES)}")
    if ttl <= 0:
        raise ValueError("ttl must be positive")
    issued = int(now if now is not None else time.time())
    claims: dict[str, object] = {"sub": user_id, "role": role, "iat": issued, "exp": issued + ttl}
    if name:
        try:
            claims["name"] = inputs.token_name(name[:MAX_NAME])
        except inputs.InvalidInput as e:
            raise ValueError(e.message) from None
    return jwt.encode(claims, secret, algorithm="HS256")


def verify(secret: str, token: str | None, now: float | None = None) -> Principal:
    if not token:
        raise AuthError("missing token")
    if len(token) > MAX_TOKEN_BYTES:
        raise AuthError("token too large")
    if inputs.token(token) is None:  # not three base64url parts: also keeps non-ASCII out of the decoder
        raise AuthError("invalid token: not a JWT")
    try:
        claims = jwt.decode(
            token, secret, algorithms=["HS256"],
            options={"require": ["sub", "role", "exp"]},
            leeway=0,
        )
    except jwt.ExpiredSignatureError:
        raise AuthError("token expired") from None
    except jwt.PyJWTError as exc:
        raise AuthError(f"invalid token: {type(exc).__name__}") from None
    except (ValueError, TypeError, OverflowError):  # a signed exp/iat of Infinity: int() overflows
        raise AuthError("invalid token: claims") from None
    sub, role, name, exp = claims.get("sub"), claims.get("role"), claims.get("name"), claims["exp"]
    if not inputs.is_user_id(sub):
        raise AuthError("invalid token: sub")
    if not isinstance(role, str) or role not in ROLES:
        raise AuthError("invalid token: role")
    try:
        name = inputs.token_name(name)
    except inputs.InvalidInput:
        raise AuthError("invalid token: name") from None
    if isinstance(exp, bool) or not isinstance(exp, int | float) or not math.isfinite(exp):
        raise AuthError("invalid token: exp")
    if now is not None and exp <= now:
        raise AuthError("token expired")
    assert isinstance(sub, str)
    return Principal(sub, role, name, float(exp))


def bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.partition(" ")  # the token's shape is checked by ``verify``
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()
