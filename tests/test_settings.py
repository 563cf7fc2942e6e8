"""Settings: defaults, fail-fast on missing secrets, secrets kept out of repr."""

from __future__ import annotations

import pytest

from bot.settings import DEV_WECHAT_TOKEN, Settings, SettingsError


def test_simulator_mode_uses_dev_credentials_and_contract_defaults() -> None:
    s = Settings.from_env({"KTP_SIMULATOR": "1"}, dotenv=None)
    assert (s.host, s.port, s.rasa_port, s.action_port) == ("127.0.0.1", 8080, 5005, 5055)
    assert s.database_url == "sqlite:///var/ketepai.db"
    assert s.wechat_token == DEV_WECHAT_TOKEN and s.simulator


def test_missing_secrets_stop_start_up_naming_them() -> None:
    with pytest.raises(SettingsError) as err:
        Settings.from_env({"WECHAT_TOKEN": "t"}, dotenv=None)
    assert "WECHAT_APP_ID" in str(err.value) and "WECHAT_APP_SECRET" in str(err.value)
    assert "WECHAT_TOKEN" not in str(err.value).split("(")[0]


def test_production_settings_and_secrets_not_in_repr() -> None:
    env = {
        "WECHAT_TOKEN": "tok-123",
        "WECHAT_APP_ID": "wx1",
        "WECHAT_APP_SECRET": "sec-456",
        "KTP_PORT": "9000",
        "DATABASE_URL": "postgresql://u@h/db",
    }
    s = Settings.from_env(env, dotenv=None)
    assert (s.port, s.database_url, s.simulator) == (9000, "postgresql://u@h/db", False)
    assert "tok-123" not in repr(s) and "sec-456" not in repr(s)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"KTP_PORT": "eighty"}, "KTP_PORT"),
        ({"RASA_PORT": "70000"}, "RASA_PORT"),
        ({"WECHAT_ENCODING_AES_KEY": "short"}, "43"),
    ],
)
def test_malformed_values_are_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        Settings.from_env({"KTP_SIMULATOR": "1", **env}, dotenv=None)


def test_dotenv_file_is_read_and_environment_wins(tmp_path) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("KTP_SIMULATOR=1\nKTP_PORT=8181\nRASA_PORT=6006\n")
    s = Settings.from_env({"RASA_PORT": "7007"}, dotenv=dotenv)
    assert (s.port, s.rasa_port, s.simulator) == (8181, 7007, True)
