"""Access tokens: only fresh HS256 tokens signed with our secret and valid claims are accepted."""

from __future__ import annotations

import time

import jwt
import pytest

from gifting.auth import MAX_TOKEN_BYTES, AuthError, Principal, bearer, mint, verify

SECRET = "unit-jwt-secret-" + "0123456789abcdef" * 4  # long enough for HS512 too
NOW = time.time()


def forge(claims: dict[str, object], secret: str = SECRET, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, secret, algorithm=algorithm)


def claims(**over: object) -> dict[str, object]:
    base: dict[str, object] = {"sub": "alice", "role": "viewer", "iat": int(NOW), "exp": int(NOW) + 600}
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


def test_minted_token_round_trips_to_a_principal() -> None:
    """mint() then verify() gives back the user, role and name."""
    who = verify(SECRET, mint(SECRET, "alice", "creator", "Alice", ttl=60), now=time.time())
    assert who == Principal("alice", "creator", "Alice", who.expires_at)
    assert who.expires_at > time.time()
    assert verify(SECRET, mint(SECRET, "bob")).display_name == "bob"


def test_expired_token_is_refused() -> None:
    """exp in the past: refused as expired."""
    with pytest.raises(AuthError, match="expired"):
        verify(SECRET, forge(claims(exp=int(NOW) - 1)))


def test_token_expiring_at_now_is_refused_by_the_callers_clock() -> None:
    """The caller's clock is honoured too: exp <= now is expired."""
    token = forge(claims(exp=int(NOW) + 5))
    with pytest.raises(AuthError, match="expired"):
        verify(SECRET, token, now=NOW + 5)


def test_token_signed_with_another_secret_is_refused() -> None:
    """A token signed with any other secret is invalid."""
    with pytest.raises(AuthError, match="invalid"):
        verify(SECRET, forge(claims(), secret="another-secret-" + "f" * 64))


def test_alg_none_is_refused() -> None:
    """An unsigned token (alg none) is never accepted."""
    with pytest.raises(AuthError, match="invalid"):
        verify(SECRET, forge(claims(), secret="", algorithm="none"))


def test_other_algorithms_are_refused_even_with_our_secret() -> None:
    """Only HS256: an HS512 token signed with the right secret is still refused."""
    with pytest.raises(AuthError, match="invalid"):
        verify(SECRET, forge(claims(), algorithm="HS512"))


@pytest.mark.parametrize("bad", [
    claims(sub=None), claims(role=None), claims(exp=None),
    claims(sub=""), claims(sub="a" * 65), claims(sub="al ice"), claims(sub="al/ice"), claims(sub=42),
    claims(role="root"), claims(role=["admin"]), claims(role="Admin"),
    claims(name=7), claims(name="n" * 65),
])
def test_bad_claims_are_refused(bad: dict[str, object]) -> None:
    """Missing sub/role/exp, a sub outside [A-Za-z0-9_-]{1,64}, an unknown role or bad name: refused."""
    with pytest.raises(AuthError):
        verify(SECRET, forge(bad))


def test_oversized_token_is_refused_before_decoding() -> None:
    """A token over 4 KiB is refused whatever it contains."""
    big = forge(claims(name=None, pad="x" * MAX_TOKEN_BYTES))
    with pytest.raises(AuthError, match="too large"):
        verify(SECRET, big)


@pytest.mark.parametrize("token", [None, "", "abc", "a.b.c", "Bearer x"])
def test_garbage_tokens_are_refused(token: str | None) -> None:
    """Missing or garbage tokens raise AuthError, never a library exception."""
    with pytest.raises(AuthError):
        verify(SECRET, token)


def test_mint_refuses_invalid_inputs() -> None:
    """mint() will not make a token the verifier would refuse."""
    for kwargs in ({"user_id": "a b"}, {"user_id": "ok", "role": "root"}, {"user_id": "ok", "ttl": 0}):
        with pytest.raises(ValueError):
            mint(SECRET, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(("header", "expected"), [
    ("Bearer abc", "abc"), ("bearer  abc ", "abc"), ("Basic abc", None), ("Bearer", None),
    ("Bearer ", None), (None, None), ("", None),
])
def test_bearer_header_parsing(header: str | None, expected: str | None) -> None:
    """Only 'Bearer <token>' (any case) yields a token."""
    assert bearer(header) == expected


@pytest.mark.parametrize("bad", [
    claims(sub="alice\n"), claims(sub="alice\r\n"), claims(sub="\nalice"), claims(sub="alice\x00"),
    claims(sub="\ud800"), claims(name="Al\x00ice"), claims(name="Al\nice"), claims(name="\ud800"),
    claims(name="evil\u202e"), claims(exp=True), claims(role=None, extra_role=1),
])
def test_claims_are_matched_whole_and_shown_text_is_clean(bad: dict[str, object]) -> None:
    """A ``$`` matches before a final newline: ``sub`` "alice\\n" is refused; names hold no NUL, control,
    bidi override or lone surrogate (they reach SQL, Redis and every viewer's screen)."""
    with pytest.raises(AuthError):
        verify(SECRET, forge(bad))


def test_a_signed_exp_of_infinity_is_refused_not_a_crash() -> None:
    """JSON parsers accept Infinity; PyJWT's int(exp) then overflows: refused as an invalid token."""
    head, _, _ = forge(claims()).split(".")
    import base64
    import hashlib
    import hmac
    body = base64.urlsafe_b64encode(b'{"sub":"alice","role":"viewer","exp":Infinity}').rstrip(b"=").decode()
    sig = base64.urlsafe_b64encode(hmac.new(SECRET.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest())
    with pytest.raises(AuthError):
        verify(SECRET, f"{head}.{body}.{sig.rstrip(b'=').decode()}")


@pytest.mark.parametrize("token", ["a.b.c\udcff", "é.b.c", "a.b.c\n", "a b.c.d", "a.b"])
def test_tokens_that_are_not_three_base64url_parts_are_refused_before_decoding(token: str) -> None:
    """A header decoded with surrogateescape can carry non-ASCII: refused, never a library crash."""
    with pytest.raises(AuthError):
        verify(SECRET, token)


def test_mint_refuses_a_name_the_verifier_would_refuse() -> None:
    for name in ("A\x00", "two\nlines"):
        with pytest.raises(ValueError):
            mint(SECRET, "alice", name=name)
