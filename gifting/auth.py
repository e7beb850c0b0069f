"""Access tokens: HS256 JWTs with ``sub``, ``role``, ``name``, ``exp``, ``iat`` (and ``adult``).

Pure functions over a secret; the HTTP API and the gateway both use them.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

import jwt

ROLES = ("viewer", "creator", "admin")
USER_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_TOKEN_BYTES = 4096
MAX_NAME = 64


class AuthError(Exception):
    """No, invalid or expired token."""


@dataclass(frozen=True)
class Principal:
    id: str
    role: str
    name: str
    expires_at: float
    adult: bool = False  # the identity service's "adult": true claim (verified 18+)

    @property
    def display_name(self) -> str:
        return self.name or self.id


def mint(secret: str, user_id: str, role: str = "viewer", name: str | None = None,
         ttl: int = 3600, now: float | None = None, adult: bool = True) -> str:
    if not USER_ID.match(user_id):
        raise ValueError("user id is 1-64 characters of [A-Za-z0-9_-]")
    if role not in ROLES:
        raise ValueError(f"role is one of {', '.join(ROLES)}")
    if ttl <= 0:
        raise ValueError("ttl must be positive")
    issued = int(now if now is not None else time.time())
    claims: dict[str, object] = {"sub": user_id, "role": role, "iat": issued, "exp": issued + ttl}
    if name:
        claims["name"] = name[:MAX_NAME]
    if adult:
        claims["adult"] = True
    return jwt.encode(claims, secret, algorithm="HS256")


def verify(secret: str, token: str | None, now: float | None = None) -> Principal:
    if not token:
        raise AuthError("missing token")
    if len(token) > MAX_TOKEN_BYTES:
        raise AuthError("token too large")
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
    sub, role, name, exp = claims.get("sub"), claims.get("role"), claims.get("name"), claims["exp"]
    if not isinstance(sub, str) or not USER_ID.match(sub):
        raise AuthError("invalid token: sub")
    if role not in ROLES:
        raise AuthError("invalid token: role")
    if name is not None and (not isinstance(name, str) or len(name) > MAX_NAME):
        raise AuthError("invalid token: name")
    if not isinstance(exp, int | float):
        raise AuthError("invalid token: exp")
    if now is not None and exp <= now:
        raise AuthError("token expired")
    return Principal(sub, str(role), name or "", float(exp), adult=claims.get("adult") is True)


def bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()
