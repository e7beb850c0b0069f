"""Settings come from the environment (a mapping passed in), with the contract's defaults."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from gifting.settings import Settings, SettingsError


def test_defaults_follow_the_contract() -> None:
    """With nothing set: embedded servers, ./.gifting, 127.0.0.1:8080 and :8081, no secrets."""
    s = Settings.from_env({})
    assert (s.database_url, s.redis_url, s.jwt_secret, s.webhook_secret) == (None, None, None, None)
    assert s.data_dir == Path(".gifting")
    assert (s.http_host, s.http_port, s.ws_host, s.ws_port) == ("127.0.0.1", 8080, "127.0.0.1", 8081)
    assert s.payment_provider == "" and s.dev_mode is False and s.redis_prefix == ""


def test_every_variable_is_read() -> None:
    """Each GIFTING_* variable lands in its field."""
    s = Settings.from_env({
        "GIFTING_DATABASE_URL": "postgresql://h/db", "GIFTING_REDIS_URL": "redis+cluster://a:1,b:2",
        "GIFTING_DATA_DIR": "/tmp/x", "GIFTING_HTTP_HOST": "0.0.0.0", "GIFTING_HTTP_PORT": "9000",
        "GIFTING_WS_HOST": "::", "GIFTING_WS_PORT": "9001", "GIFTING_JWT_SECRET": "j",
        "GIFTING_WEBHOOK_SECRET": "w", "GIFTING_REDIS_PREFIX": "p:", "GIFTING_PAYMENT_PROVIDER": "sandbox",
        "GIFTING_BATCH_WINDOW_MS": "0.5", "GIFTING_BATCH_MAX": "10", "GIFTING_BATCH_LANES": "2",
        "GIFTING_DB_POOL_SIZE": "4",
    })
    assert s.database_url == "postgresql://h/db" and s.redis_url == "redis+cluster://a:1,b:2"
    assert s.data_dir == Path("/tmp/x")
    assert (s.http_host, s.http_port, s.ws_host, s.ws_port) == ("0.0.0.0", 9000, "::", 9001)
    assert (s.jwt_secret, s.webhook_secret, s.redis_prefix, s.payment_provider) == ("j", "w", "p:", "sandbox")
    assert (s.batch_window_ms, s.batch_max, s.batch_lanes, s.db_pool_size) == (0.5, 10, 2, 4)


def test_empty_variables_mean_unset() -> None:
    """An empty value is the default, not an empty URL or port."""
    s = Settings.from_env({"GIFTING_DATABASE_URL": "", "GIFTING_HTTP_PORT": "", "GIFTING_JWT_SECRET": ""})
    assert s.database_url is None and s.http_port == 8080 and s.jwt_secret is None


NUMERIC = ["GIFTING_HTTP_PORT", "GIFTING_WS_PORT", "GIFTING_BATCH_WINDOW_MS", "GIFTING_BATCH_MAX",
           "GIFTING_BATCH_LANES", "GIFTING_BATCH_DEPTH", "GIFTING_DB_POOL_SIZE", "GIFTING_COIN_VALUE_MICROS",
           "GIFTING_PAYOUT_THRESHOLD", "GIFTING_HTTP_GIFT_RATE", "GIFTING_HTTP_GIFT_BURST",
           "GIFTING_WS_SEND_BUFFER_LIMIT", "GIFTING_WS_GIFT_RATE", "GIFTING_WS_GIFT_BURST",
           "GIFTING_WS_MAX_CONNECTIONS_PER_USER", "GIFTING_WS_PING_INTERVAL", "GIFTING_WS_SOCKET_SEND_BUFFER",
           "GIFTING_PRESENCE_INTERVAL", "GIFTING_PRESENCE_TTL"]


@pytest.mark.parametrize("name", NUMERIC)
@pytest.mark.parametrize("value", ["eighty", "nan", "inf", "-inf", "1e3", " 5", "5 ", "1_000", "0x10", "+5", "½",
                                   "5\n", "\x00", "9" * 40])
def test_every_number_parses_strictly_and_a_bad_one_names_its_variable(name: str, value: str) -> None:
    """Words, nan/inf, exponents, spaces, underscores, hex, signs and huge digit strings are refused by name."""
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


@pytest.mark.parametrize(("name", "value"), [
    ("GIFTING_HTTP_PORT", "0"), ("GIFTING_WS_PORT", "65536"), ("GIFTING_BATCH_MAX", "0"),
    ("GIFTING_BATCH_LANES", "-1"), ("GIFTING_HTTP_GIFT_RATE", "0"), ("GIFTING_HTTP_GIFT_BURST", "0"),
    ("GIFTING_WS_GIFT_RATE", "-1"), ("GIFTING_WS_PING_INTERVAL", "-0.5"), ("GIFTING_PRESENCE_TTL", "0"),
    ("GIFTING_DB_POOL_SIZE", "0"), ("GIFTING_PAYOUT_THRESHOLD", "-1"), ("GIFTING_BATCH_WINDOW_MS", "1000.5"),
])
def test_numbers_outside_their_range_are_refused_by_name(name: str, value: str) -> None:
    """A number that parses but cannot work (port 0, no lanes, a zero rate) stops the start too."""
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


def test_the_http_gift_rate_limit_is_a_setting() -> None:
    """GIFTING_HTTP_GIFT_RATE / _BURST: 50/s and 50 by default, decimals allowed for the rate."""
    assert (Settings.from_env({}).http_gift_rate, Settings.from_env({}).http_gift_burst) == (50.0, 50)
    s = Settings.from_env({"GIFTING_HTTP_GIFT_RATE": "2.5", "GIFTING_HTTP_GIFT_BURST": "5",
                           "GIFTING_WS_GIFT_RATE": "3", "GIFTING_PRESENCE_TTL": "0.25"})
    assert (s.http_gift_rate, s.http_gift_burst, s.ws_gift_rate, s.presence_ttl) == (2.5, 5, 3.0, 0.25)


@pytest.mark.parametrize(("name", "value"), [
    ("GIFTING_PAYMENT_PROVIDER", "stripe"), ("GIFTING_PAYMENT_PROVIDER", "Sandbox"),
    ("GIFTING_SANDBOX_WITH_CONFIGURED_SECRETS", "maybe"),
])
def test_choices_are_refused_by_name(name: str, value: str) -> None:
    """An unknown provider or a non-boolean opt-in is refused at start, not at the first purchase."""
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


def test_settings_are_frozen() -> None:
    """Settings cannot be changed after start; replace() makes a new object."""
    s = Settings.from_env({})
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.http_port = 1  # type: ignore[misc]
    assert s.replace(http_port=1).http_port == 1 and s.http_port == 8080


def test_dev_secrets_are_generated_once_into_the_data_dir(tmp_path: Path) -> None:
    """Unset secrets are generated once, kept 0600 under the data dir, and reused; dev mode is on."""
    s = Settings(data_dir=tmp_path).with_dev_secrets()
    assert s.dev_mode and s.jwt_secret and s.webhook_secret and s.jwt_secret != s.webhook_secret
    again = Settings(data_dir=tmp_path).with_dev_secrets()
    assert (again.jwt_secret, again.webhook_secret) == (s.jwt_secret, s.webhook_secret)
    path = tmp_path / "secrets" / "jwt_secret"
    assert path.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in (tmp_path / "secrets").iterdir()) == ["jwt_secret", "webhook_secret"]


def test_given_secrets_are_kept_and_not_dev_mode(tmp_path: Path) -> None:
    """With both secrets set, nothing is generated and dev mode stays off."""
    s = Settings(data_dir=tmp_path, jwt_secret="j", webhook_secret="w").with_dev_secrets()
    assert (s.jwt_secret, s.webhook_secret, s.dev_mode) == ("j", "w", False)
    assert not (tmp_path / "secrets").exists()


@pytest.mark.parametrize("given", ["jwt_secret", "webhook_secret"])
def test_one_configured_secret_refuses_naming_the_other(tmp_path: Path, given: str) -> None:
    """Half-configured: a SettingsError naming the missing variable; no secret generated; the given one not shown."""
    missing = "GIFTING_WEBHOOK_SECRET" if given == "jwt_secret" else "GIFTING_JWT_SECRET"
    with pytest.raises(SettingsError, match=f"{missing} is not") as e:
        Settings(data_dir=tmp_path, **{given: "configured-value-123"}).with_dev_secrets()  # type: ignore[arg-type]
    assert "configured-value-123" not in str(e.value)
    assert not (tmp_path / "secrets").exists()


def test_an_emptied_dev_secret_file_is_refused_not_used(tmp_path: Path) -> None:
    """A secret file emptied by hand stops the start (naming the file) instead of signing with ''."""
    Settings(data_dir=tmp_path).with_dev_secrets()
    (tmp_path / "secrets" / "jwt_secret").write_text("\n")
    with pytest.raises(SettingsError, match="jwt_secret holds no usable"):
        Settings(data_dir=tmp_path).with_dev_secrets()
