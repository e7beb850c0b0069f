"""Settings: one frozen object built from the environment (and flags) at start.

Nothing in this project reads the environment at import time; every process
builds a ``Settings`` once in ``gifting.cli`` and passes it down.
"""

from __future__ import annotations

import dataclasses
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit


class SettingsError(ValueError):
    """A setting has a value the service cannot run with (the message names the variable)."""


DEVELOPMENT = "development"
PRODUCTION = "production"
PROVIDERS = ("sandbox", "external")
JWT_VAR = "GIFTING_JWT_SECRET"
WEBHOOK_VAR = "GIFTING_WEBHOOK_SECRET"
PROVIDER_VAR = "GIFTING_PAYMENT_PROVIDER"
SANDBOX_OPT_IN_VAR = "GIFTING_SANDBOX_WITH_CONFIGURED_SECRETS"

_INT = re.compile(r"-?[0-9]{1,18}")
_DECIMAL = re.compile(r"-?[0-9]{1,15}(\.[0-9]{1,9})?")
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _int(env: Mapping[str, str], name: str, default: int, low: int | None = None, high: int | None = None) -> int:
    """A whole number in decimal digits (no spaces, underscores, signs other than '-', or exponents)."""
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    if not _INT.fullmatch(raw):
        raise SettingsError(f"{name} must be a whole number, got {raw!r}")
    value = int(raw)
    _check_bounds(name, value, low, high)
    return value


def _float(env: Mapping[str, str], name: str, default: float, low: float | None = None,
           high: float | None = None) -> float:
    """A finite decimal number (``2``, ``0.5``; never ``nan``, ``inf``, ``1e3`` or ``1_0``)."""
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    if not _DECIMAL.fullmatch(raw):
        raise SettingsError(f"{name} must be a decimal number, got {raw!r}")
    value = float(raw)
    _check_bounds(name, value, low, high)
    return value


def _check_bounds(name: str, value: float, low: float | None, high: float | None) -> None:
    if low is not None and value < low:
        raise SettingsError(f"{name} must be at least {low}, got {value}")
    if high is not None and value > high:
        raise SettingsError(f"{name} must be at most {high}, got {value}")


def _bool(env: Mapping[str, str], name: str) -> bool:
    raw = (env.get(name) or "").lower()
    if raw in ("", *_FALSE):
        return False
    if raw in _TRUE:
        return True
    raise SettingsError(f"{name} must be one of 1/true/yes or 0/false/no, got {env.get(name)!r}")


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    raw = env.get(name) or ""
    if raw and raw not in choices:
        raise SettingsError(f"{name} must be one of {', '.join(choices)} (or unset), got {raw!r}")
    return raw


def _port(env: Mapping[str, str], name: str, default: int) -> int:
    return _int(env, name, default, 1, 65535)


@dataclass(frozen=True)
class Mode:
    """What a process runs as, decided from which secrets are configured and the provider setting."""

    name: str  # DEVELOPMENT or PRODUCTION
    provider: str  # "sandbox" or "external"

    @property
    def dev_sign_in(self) -> bool:
        return self.name == DEVELOPMENT

    @property
    def free_coins(self) -> bool:
        """Whether purchases complete without a payment (the sandbox provider)."""
        return self.provider == "sandbox"


def decide_mode(*, jwt_secret: bool, webhook_secret: bool, provider: str, sandbox_opt_in: bool = False) -> Mode:
    """The mode for these settings, or a SettingsError saying why the service must not start.

    - Neither secret configured: development. Both secrets are generated under
      the data dir, the development sign-in is mounted, and the provider is the
      sandbox unless ``external`` is asked for.
    - Both configured: production. The provider is ``external`` unless
      ``sandbox`` is asked for; the sandbox completes every purchase without a
      payment, so with configured secrets it also needs an explicit opt-in
      (a staging deployment), and is announced loudly at every start.
    - Exactly one configured: refused, naming the missing variable. Generating
      the other would run a real secret next to development behaviour.
    """
    if provider not in ("", *PROVIDERS):
        raise SettingsError(f"{PROVIDER_VAR} must be one of {', '.join(PROVIDERS)} (or unset), got {provider!r}")
    if jwt_secret != webhook_secret:
        given, missing = (JWT_VAR, WEBHOOK_VAR) if jwt_secret else (WEBHOOK_VAR, JWT_VAR)
        raise SettingsError(f"{given} is set but {missing} is not: set both for production, "
                            "or neither for development (secrets generated under the data dir)")
    if not jwt_secret:
        return Mode(DEVELOPMENT, provider or "sandbox")
    if provider == "sandbox" and not sandbox_opt_in:
        raise SettingsError(f"{PROVIDER_VAR}=sandbox completes every purchase without a payment; with configured "
                            f"secrets it also needs {SANDBOX_OPT_IN_VAR}=1 (staging only)")
    return Mode(PRODUCTION, provider or "external")


def redact_url(url: str | None) -> str | None:
    """A URL with its password replaced, for printing."""
    if url is None:
        return None
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")
    user = netloc[0].partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[2]}"))


@dataclass(frozen=True)
class Settings:
    database_url: str | None = None
    redis_url: str | None = None
    data_dir: Path = Path(".gifting")
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    ws_host: str = "127.0.0.1"
    ws_port: int = 8081
    # Never printed: ``__repr__`` below shows only whether each is set.
    jwt_secret: str | None = None
    webhook_secret: str | None = None
    # Prefix inside every Redis hash tag, so several deployments (or test runs)
    # can share one Redis without touching each other's keys.
    redis_prefix: str = ""
    # Micro-batcher: how long the first gift of a batch waits for company, and
    # how many gifts one batch may carry.
    batch_window_ms: float = 2.0
    batch_max: int = 1000
    batch_lanes: int = 1
    # Batches of one lane in flight at once (the next starts when the last holds its locks).
    batch_depth: int = 2
    db_pool_size: int = 16
    # Coins' cash value for payouts, in micro-units of the payout currency per coin
    # (as on the large platforms: a creator's "diamond" is worth about half a cent; a coin ~1.06 cents).
    coin_value_micros: int = 10_600
    payout_threshold_minor: int = 1_000
    # "sandbox": a built-in provider completes purchases by sending this service a
    # signed webhook (development, demo); "external": a real provider does.
    # Unset: sandbox in development, else external (see ``decide_mode``).
    payment_provider: str = ""
    # The explicit opt-in for the sandbox next to configured secrets (staging).
    sandbox_with_configured_secrets: bool = False
    dev_mode: bool = False
    # HTTP POST /v1/streams/{id}/gifts: per user across every process (Redis), a
    # token bucket of this rate (gifts per second) and burst.
    http_gift_rate: float = 50.0
    http_gift_burst: int = 50
    # Live rooms (WebSocket gateway).
    ws_send_buffer_limit: int = 1 << 20  # unsent bytes per viewer before 4408
    ws_gift_rate: float = 10.0  # send_gift per second per connection (token bucket)
    ws_gift_burst: float = 20.0
    ws_max_connections_per_user: int = 20
    ws_ping_interval: float = 20.0  # protocol pings; 0 turns them off
    ws_socket_send_buffer: int = 0  # SO_SNDBUF per viewer socket; 0: kernel autotuning
    ws_broadcast_slice_ms: float = 1.0  # a room's broadcast yields to the event loop this often; 0: every 512
    presence_interval: float = 1.0  # presence/leaderboard tick
    presence_ttl: float = 5.0  # a gateway silent this long drops out of viewer counts
    # Responsible spending: buying, gifting and going live need the token's adult
    # claim (off: the claim is ignored); platform caps on everyone's gift spending.
    age_gate: bool = True
    daily_coin_cap: int | None = None
    weekly_coin_cap: int | None = None
    # Latency tracing: gifts whose seq is a multiple of this are logged at debug with their
    # stage times (gifting.trace); 0: none. OpenTelemetry spans for those gifts: off unless set.
    trace_sample: int = 1000
    trace_log: bool = False  # write those lines (the gifting.trace logger at debug)
    otel: bool = False
    # Engagement (combos, paid messages).
    combo_window_s: float = 3.0  # a gift continues a combo whose latest gift is at most this old
    message_min_coins: int = 100  # a gift needs at least these coins to carry a message
    pin_tiers: str = "500:120,1000:300,2000:600,5000:1800,10000:3600,20000:7200,50000:18000"  # coins:seconds

    def __repr__(self) -> str:
        shown: list[str] = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in ("jwt_secret", "webhook_secret"):
                value = None if value is None else "<set>"
            elif f.name in ("database_url", "redis_url"):
                value = redact_url(value)
            shown.append(f"{f.name}={value!r}")
        return f"Settings({', '.join(shown)})"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        return cls(
            database_url=env.get("GIFTING_DATABASE_URL") or None,
            redis_url=env.get("GIFTING_REDIS_URL") or None,
            data_dir=Path(env.get("GIFTING_DATA_DIR") or ".gifting"),
            http_host=env.get("GIFTING_HTTP_HOST") or "127.0.0.1",
            http_port=_port(env, "GIFTING_HTTP_PORT", 8080),
            ws_host=env.get("GIFTING_WS_HOST") or "127.0.0.1",
            ws_port=_port(env, "GIFTING_WS_PORT", 8081),
            jwt_secret=env.get(JWT_VAR) or None,
            webhook_secret=env.get(WEBHOOK_VAR) or None,
            redis_prefix=env.get("GIFTING_REDIS_PREFIX") or "",
            batch_window_ms=_float(env, "GIFTING_BATCH_WINDOW_MS", 2.0, 0.0, 1000.0),
            batch_max=_int(env, "GIFTING_BATCH_MAX", 1000, 1, 100_000),
            batch_lanes=_int(env, "GIFTING_BATCH_LANES", 1, 1, 256),
            batch_depth=_int(env, "GIFTING_BATCH_DEPTH", 2, 1, 64),
            db_pool_size=_int(env, "GIFTING_DB_POOL_SIZE", 16, 1, 1000),
            coin_value_micros=_int(env, "GIFTING_COIN_VALUE_MICROS", 10_600, 1),
            payout_threshold_minor=_int(env, "GIFTING_PAYOUT_THRESHOLD", 1_000, 0),
            payment_provider=_choice(env, PROVIDER_VAR, PROVIDERS),
            sandbox_with_configured_secrets=_bool(env, SANDBOX_OPT_IN_VAR),
            http_gift_rate=_float(env, "GIFTING_HTTP_GIFT_RATE", 50.0, 0.001),
            http_gift_burst=_int(env, "GIFTING_HTTP_GIFT_BURST", 50, 1),
            ws_send_buffer_limit=_int(env, "GIFTING_WS_SEND_BUFFER_LIMIT", 1 << 20, 4096),
            ws_gift_rate=_float(env, "GIFTING_WS_GIFT_RATE", 10.0, 0.001),
            ws_gift_burst=_float(env, "GIFTING_WS_GIFT_BURST", 20.0, 1.0),
            ws_max_connections_per_user=_int(env, "GIFTING_WS_MAX_CONNECTIONS_PER_USER", 20, 1),
            ws_ping_interval=_float(env, "GIFTING_WS_PING_INTERVAL", 20.0, 0.0),
            ws_socket_send_buffer=_int(env, "GIFTING_WS_SOCKET_SEND_BUFFER", 0, 0),
            ws_broadcast_slice_ms=_float(env, "GIFTING_WS_BROADCAST_SLICE_MS", 1.0, 0.0, 1000.0),
            presence_interval=_float(env, "GIFTING_PRESENCE_INTERVAL", 1.0, 0.01),
            presence_ttl=_float(env, "GIFTING_PRESENCE_TTL", 5.0, 0.01),
            age_gate=_on_off(env, "GIFTING_AGE_GATE", True),
            daily_coin_cap=_cap(env, "GIFTING_DAILY_COIN_CAP"),
            weekly_coin_cap=_cap(env, "GIFTING_WEEKLY_COIN_CAP"),
            trace_sample=_int(env, "GIFTING_TRACE_SAMPLE", 1000, 0),
            trace_log=_bool(env, "GIFTING_TRACE_LOG"),
            otel=_bool(env, "GIFTING_OTEL"),
            **_engagement(env),
        )

    def replace(self, **changes: object) -> Settings:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def mode(self) -> Mode:
        """The mode these settings run in (``with_dev_secrets`` has been applied or not: same answer)."""
        if self.dev_mode:
            return Mode(DEVELOPMENT, self.payment_provider or "sandbox")
        return decide_mode(jwt_secret=self.jwt_secret is not None, webhook_secret=self.webhook_secret is not None,
                           provider=self.payment_provider, sandbox_opt_in=self.sandbox_with_configured_secrets)

    def with_dev_secrets(self) -> Settings:
        """Both configured secrets, or both generated once under the data dir (development).

        Raises SettingsError when exactly one is configured, or for a provider
        the configured secrets do not allow (``decide_mode``).
        """
        if self.dev_mode:
            return self
        mode = decide_mode(jwt_secret=self.jwt_secret is not None, webhook_secret=self.webhook_secret is not None,
                           provider=self.payment_provider, sandbox_opt_in=self.sandbox_with_configured_secrets)
        if mode.name == PRODUCTION:
            return self
        secrets_dir = self.data_dir / "secrets"
        return self.replace(jwt_secret=_dev_secret(secrets_dir / "jwt_secret"),
                            webhook_secret=_dev_secret(secrets_dir / "webhook_secret"), dev_mode=True)


def _on_off(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if not raw:
        return default
    if raw not in ("on", "off"):
        raise SettingsError(f"{name} must be on or off, got {raw!r}")
    return raw == "on"


def _cap(env: Mapping[str, str], name: str) -> int | None:
    """A platform cap in coins (0 or more), or None when unset."""
    if not env.get(name):
        return None
    return _int(env, name, 0, 0, 10**12)


def _engagement(env: Mapping[str, str]) -> dict[str, Any]:
    from wallet.rules.message import DEFAULT_PIN_TIERS, parse_tiers

    tiers = env.get("GIFTING_PIN_TIERS") or DEFAULT_PIN_TIERS
    try:
        parse_tiers(tiers)
    except ValueError as e:
        raise SettingsError(f"GIFTING_PIN_TIERS: {e}") from None
    return {"combo_window_s": _float(env, "GIFTING_COMBO_WINDOW_S", 3.0, 0.0, 3600.0),
            "message_min_coins": _int(env, "GIFTING_MESSAGE_MIN_COINS", 100, 1), "pin_tiers": tiers}


def _dev_secret(path: Path) -> str:
    if path.exists():
        return _read_secret(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    value = secrets.token_urlsafe(32)
    # Write aside, then link into place: link fails if the name exists, so two
    # processes starting at once agree on one secret and never read half a file.
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    try:
        os.link(tmp, path)
    except FileExistsError:
        value = _read_secret(path)
    finally:
        tmp.unlink()
    return value


def _read_secret(path: Path) -> str:
    value = path.read_text().strip()
    if len(value) < 16:  # emptied or edited by hand: never sign with a guessable secret
        raise SettingsError(f"{path} holds no usable development secret: delete it to have a new one generated")
    return value
