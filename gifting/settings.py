"""Settings: one frozen object built from the environment (and flags) at start.

Nothing in this project reads the environment at import time; every process
builds a ``Settings`` once in ``gifting.cli`` and passes it down.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class SettingsError(ValueError):
    """A setting has a value the service cannot run with."""


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None


@dataclass(frozen=True)
class Settings:
    database_url: str | None = None
    redis_url: str | None = None
    data_dir: Path = Path(".gifting")
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    ws_host: str = "127.0.0.1"
    ws_port: int = 8081
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
    # (TikTok-like: a creator's "diamond" is worth about half a cent; a coin ~1.06 cents).
    coin_value_micros: int = 10_600
    payout_threshold_minor: int = 1_000
    # "sandbox": a built-in provider completes purchases by sending this service a
    # signed webhook (development, demo); "external": a real provider does.
    # Unset: sandbox when running with development secrets, else external.
    payment_provider: str = ""
    dev_mode: bool = False
    # Live rooms (WebSocket gateway).
    ws_send_buffer_limit: int = 1 << 20  # unsent bytes per viewer before 4408
    ws_gift_rate: float = 10.0  # send_gift per second per connection (token bucket)
    ws_gift_burst: float = 20.0
    ws_max_connections_per_user: int = 20
    ws_ping_interval: float = 20.0  # protocol pings; 0 turns them off
    ws_socket_send_buffer: int = 0  # SO_SNDBUF per viewer socket; 0: kernel autotuning
    presence_interval: float = 1.0  # presence/leaderboard tick
    presence_ttl: float = 5.0  # a gateway silent this long drops out of viewer counts
    # Engagement (combos, paid messages).
    combo_window_s: float = 3.0  # a gift continues a combo whose latest gift is at most this old
    message_min_coins: int = 100  # a gift needs at least these coins to carry a message
    pin_tiers: str = "500:120,1000:300,2000:600,5000:1800,10000:3600,20000:7200,50000:18000"  # coins:seconds

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        return cls(
            database_url=env.get("GIFTING_DATABASE_URL") or None,
            redis_url=env.get("GIFTING_REDIS_URL") or None,
            data_dir=Path(env.get("GIFTING_DATA_DIR") or ".gifting"),
            http_host=env.get("GIFTING_HTTP_HOST") or "127.0.0.1",
            http_port=_int(env, "GIFTING_HTTP_PORT", 8080),
            ws_host=env.get("GIFTING_WS_HOST") or "127.0.0.1",
            ws_port=_int(env, "GIFTING_WS_PORT", 8081),
            jwt_secret=env.get("GIFTING_JWT_SECRET") or None,
            webhook_secret=env.get("GIFTING_WEBHOOK_SECRET") or None,
            redis_prefix=env.get("GIFTING_REDIS_PREFIX") or "",
            batch_window_ms=_float(env, "GIFTING_BATCH_WINDOW_MS", 2.0),
            batch_max=_int(env, "GIFTING_BATCH_MAX", 1000),
            batch_lanes=_int(env, "GIFTING_BATCH_LANES", 1),
            batch_depth=_int(env, "GIFTING_BATCH_DEPTH", 2),
            db_pool_size=_int(env, "GIFTING_DB_POOL_SIZE", 16),
            coin_value_micros=_int(env, "GIFTING_COIN_VALUE_MICROS", 10_600),
            payout_threshold_minor=_int(env, "GIFTING_PAYOUT_THRESHOLD", 1_000),
            payment_provider=env.get("GIFTING_PAYMENT_PROVIDER") or "",
            ws_send_buffer_limit=_int(env, "GIFTING_WS_SEND_BUFFER_LIMIT", 1 << 20),
            ws_gift_rate=float(env.get("GIFTING_WS_GIFT_RATE") or 10.0),
            ws_gift_burst=float(env.get("GIFTING_WS_GIFT_BURST") or 20.0),
            ws_max_connections_per_user=_int(env, "GIFTING_WS_MAX_CONNECTIONS_PER_USER", 20),
            ws_ping_interval=float(env.get("GIFTING_WS_PING_INTERVAL") or 20.0),
            ws_socket_send_buffer=_int(env, "GIFTING_WS_SOCKET_SEND_BUFFER", 0),
            presence_interval=float(env.get("GIFTING_PRESENCE_INTERVAL") or 1.0),
            presence_ttl=float(env.get("GIFTING_PRESENCE_TTL") or 5.0),
            **_engagement(env),
        )

    def replace(self, **changes: object) -> Settings:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def with_dev_secrets(self) -> Settings:
        """Fill missing secrets from the data dir, generating them once (development only)."""
        changes: dict[str, object] = {}
        for field, filename in (("jwt_secret", "jwt_secret"), ("webhook_secret", "webhook_secret")):
            if getattr(self, field):
                continue
            changes[field] = _dev_secret(self.data_dir / "secrets" / filename)
            changes["dev_mode"] = True
        return self.replace(**changes) if changes else self


def _engagement(env: Mapping[str, str]) -> dict[str, Any]:
    from wallet.rules.message import DEFAULT_PIN_TIERS, parse_tiers

    window = _float(env, "GIFTING_COMBO_WINDOW_S", 3.0)
    if not 0 <= window <= 3600:
        raise SettingsError(f"GIFTING_COMBO_WINDOW_S must be 0-3600 seconds, got {window}")
    tiers = env.get("GIFTING_PIN_TIERS") or DEFAULT_PIN_TIERS
    try:
        parse_tiers(tiers)
    except ValueError as e:
        raise SettingsError(f"GIFTING_PIN_TIERS: {e}") from None
    return {"combo_window_s": window, "message_min_coins": _int(env, "GIFTING_MESSAGE_MIN_COINS", 100),
            "pin_tiers": tiers}


def _dev_secret(path: Path) -> str:
    if path.exists():
        return path.read_text().strip()
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
        value = path.read_text().strip()
    finally:
        tmp.unlink()
    return value
