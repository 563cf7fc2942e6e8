"""Settings read from the environment (and a `.env` file), failing fast on missing secrets."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from dotenv import dotenv_values

# Dev-only credentials, used only when the simulator stands in for WeChat.
DEV_WECHAT_TOKEN = "ketepai-dev-token"  # noqa: S105 - simulator only
DEV_APP_ID = "wx0000000000dev00"
DEV_TEMPLATE_CASE = "ktp-dev-template-case"  # simulator only
DEV_TEMPLATE_REPLY = "ktp-dev-template-reply"  # simulator only
DEV_APP_SECRET = "ketepai-dev-secret"  # noqa: S105 - a placeholder for the simulator, not a secret
DEFAULT_API_BASE = "https://api.weixin.qq.com/cgi-bin/"


class SettingsError(Exception):
    """A required setting is missing or malformed."""


def _flag(value: str | None, default: bool) -> bool:
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _port(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name) or str(default)
    try:
        port = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a port number, got {raw!r}") from None
    if not 0 < port < 65536:
        raise SettingsError(f"{name} must be between 1 and 65535, got {port}")
    return port


def _positive(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name) or str(default)
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    if not value > 0:
        raise SettingsError(f"{name} must be more than 0, got {raw}")
    return value


@dataclass(frozen=True)
class Settings:
    """Everything the gateway and the runner need; secrets are excluded from repr."""

    host: str = "127.0.0.1"
    port: int = 8080
    rasa_port: int = 5005
    action_port: int = 5055
    database_url: str = "sqlite:///var/ketepai.db"
    redis_url: str | None = None
    simulator: bool = False
    wechat_token: str = field(default=DEV_WECHAT_TOKEN, repr=False)
    app_id: str = DEV_APP_ID
    app_secret: str = field(default=DEV_APP_SECRET, repr=False)
    encoding_aes_key: str | None = field(default=None, repr=False)
    api_base: str = DEFAULT_API_BASE
    rasa_token: str | None = field(default=None, repr=False)
    # WeChat waits 5 s and the farmer must see the reply by 4.5 s; the budget is measured from
    # when the handler starts, so leave room for queueing, the DB write and the network.
    reply_budget_s: float = 4.0
    # Signed requests older or newer than this are refused as replays.
    replay_window_s: int = 300
    # Handoff: how often unclaimed cases are checked, and how long before one moves on.
    escalate_every_s: float = 60.0
    escalate_after_min: float = 30.0
    # Template messages reach people outside the 48 h window: a new case for a commissioner
    # ("case"), an answer waiting for a farmer ("reply"). Unset: such a push fails, recorded.
    template_case: str | None = None
    template_reply: str | None = None
    # The gateway's address as people open it (https://...): template messages link to the case.
    public_base_url: str | None = None

    @property
    def templates(self) -> dict[str, str]:
        """Template role → WeChat template_id, for the roles that are configured."""
        found = {"case": self.template_case, "reply": self.template_reply}
        return {k: v for k, v in found.items() if v}

    @property
    def rasa_url(self) -> str:
        """Base URL of the Rasa server (always loopback)."""
        return f"http://127.0.0.1:{self.rasa_port}"

    @property
    def action_url(self) -> str:
        """Base URL of the action server (always loopback)."""
        return f"http://127.0.0.1:{self.action_port}"

    @property
    def public_url(self) -> str:
        """Base URL of the gateway as a person on this machine reaches it."""
        return f"http://{self.host}:{self.port}"

    @property
    def self_url(self) -> str:
        """Base URL at which this process reaches its own gateway."""
        host = "127.0.0.1" if self.host in {"0.0.0.0", "::", ""} else self.host  # noqa: S104
        return f"http://{host}:{self.port}"

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, dotenv: str | Path | None = ".env"
    ) -> Settings:
        """Read settings from `env` (default: os.environ) over a `.env` file, if present."""
        merged: dict[str, str] = {}
        if dotenv is not None and Path(dotenv).is_file():
            merged.update({k: v for k, v in dotenv_values(dotenv).items() if v is not None})
        merged.update(os.environ if env is None else env)

        simulator = _flag(merged.get("KTP_SIMULATOR"), default=False)
        secrets: dict[str, str] = {}
        missing = []
        for name, dev in (
            ("WECHAT_TOKEN", DEV_WECHAT_TOKEN),
            ("WECHAT_APP_ID", DEV_APP_ID),
            ("WECHAT_APP_SECRET", DEV_APP_SECRET),
        ):
            value = merged.get(name, "").strip()
            if not value:
                if not simulator:
                    missing.append(name)
                value = dev
            secrets[name] = value
        if missing:
            raise SettingsError(
                "missing required setting(s): "
                + ", ".join(missing)
                + " (set them in the environment or .env; KTP_SIMULATOR=1 uses dev values)"
            )
        aes_key = merged.get("WECHAT_ENCODING_AES_KEY", "").strip() or None
        if aes_key is not None and len(aes_key) != 43:
            raise SettingsError("WECHAT_ENCODING_AES_KEY must be 43 characters long")

        return cls(
            host=merged.get("KTP_HOST") or "127.0.0.1",
            port=_port(merged, "KTP_PORT", 8080),
            rasa_port=_port(merged, "RASA_PORT", 5005),
            action_port=_port(merged, "ACTION_PORT", 5055),
            database_url=merged.get("DATABASE_URL") or "sqlite:///var/ketepai.db",
            redis_url=merged.get("REDIS_URL") or None,
            simulator=simulator,
            wechat_token=secrets["WECHAT_TOKEN"],
            app_id=secrets["WECHAT_APP_ID"],
            app_secret=secrets["WECHAT_APP_SECRET"],
            encoding_aes_key=aes_key,
            api_base=merged.get("WECHAT_API_BASE") or DEFAULT_API_BASE,
            rasa_token=merged.get("RASA_TOKEN") or None,
            escalate_every_s=_positive(merged, "KTP_ESCALATE_EVERY_S", 60.0),
            escalate_after_min=_positive(merged, "KTP_ESCALATE_AFTER_MIN", 30.0),
            template_case=merged.get("WECHAT_TEMPLATE_CASE", "").strip()
            or (DEV_TEMPLATE_CASE if simulator else None),
            template_reply=merged.get("WECHAT_TEMPLATE_REPLY", "").strip()
            or (DEV_TEMPLATE_REPLY if simulator else None),
            public_base_url=merged.get("KTP_PUBLIC_URL", "").strip().rstrip("/") or None,
        )
