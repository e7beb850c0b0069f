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


@pytest.mark.parametrize(("name", "value"), [
    ("GIFTING_HTTP_PORT", "eighty"), ("GIFTING_WS_PORT", "1.5"), ("GIFTING_BATCH_MAX", "x"),
    ("GIFTING_BATCH_WINDOW_MS", "soon"),
])
def test_bad_numbers_raise_a_settings_error_naming_the_variable(name: str, value: str) -> None:
    """A non-numeric number is a SettingsError that names the variable."""
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


def test_responsible_spending_settings_default_to_the_gate_on_and_no_caps() -> None:
    """GIFTING_AGE_GATE is on unless off; the platform caps are unset (none) unless given."""
    s = Settings.from_env({})
    assert (s.age_gate, s.daily_coin_cap, s.weekly_coin_cap) == (True, None, None)
    s = Settings.from_env({"GIFTING_AGE_GATE": "off", "GIFTING_DAILY_COIN_CAP": "5000",
                           "GIFTING_WEEKLY_COIN_CAP": "20000"})
    assert (s.age_gate, s.daily_coin_cap, s.weekly_coin_cap) == (False, 5000, 20000)
    for name, value in (("GIFTING_AGE_GATE", "maybe"), ("GIFTING_DAILY_COIN_CAP", "-1"),
                        ("GIFTING_WEEKLY_COIN_CAP", "lots")):
        with pytest.raises(SettingsError, match=name):
            Settings.from_env({name: value})
