"""Farmers' personal data: phone numbers encrypted at rest (Fernet) and masked for display."""

from __future__ import annotations

import base64
import hashlib
import os
import re
from collections.abc import Mapping
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken

# Only when the simulator stands in for WeChat: real data never meets this key.
DEV_DATA_KEY = base64.urlsafe_b64encode(hashlib.sha256(b"ketepai-dev-data-key").digest()).decode()


class DataKeyError(RuntimeError):
    """KTP_DATA_KEY is missing or malformed."""


_configured: list[str] = []  # set once by the gateway at start-up (use_key)


def use_key(key: str) -> None:
    """Make `key` this process's data key (the gateway calls it once it knows its settings)."""
    _configured[:] = [key]


def data_key(env: Mapping[str, str] | None = None, *, simulator: bool | None = None) -> str:
    """KTP_DATA_KEY, or the dev key in simulator mode; raise otherwise (fail fast)."""
    if env is None and simulator is None and _configured:
        return _configured[0]
    env = os.environ if env is None else env
    key = (env.get("KTP_DATA_KEY") or "").strip()
    if not key:
        if simulator is None:
            simulator = (env.get("KTP_SIMULATOR") or "").strip().lower() in {"1", "true", "on"}
        if simulator:
            return DEV_DATA_KEY
        raise DataKeyError(
            "missing required setting KTP_DATA_KEY (encrypts farmers' phone numbers); make one "
            "with: python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key()"
            ".decode())'"
        )
    try:
        Fernet(key)
    except ValueError:
        raise DataKeyError("KTP_DATA_KEY must be 32 url-safe base64-encoded bytes") from None
    return key


@lru_cache(maxsize=4)
def _fernet(key: str) -> Fernet:
    return Fernet(key)


def normalize_phone(phone: str) -> str:
    """Digits only (and a leading +), so that 「138 1234 5678」 and 「13812345678」 match."""
    phone = phone.strip()
    digits = re.sub(r"\D", "", phone)
    return ("+" + digits) if phone.startswith("+") else digits


def encrypt_phone(phone: str, key: str | None = None) -> str:
    """The Fernet token of a normalized phone number."""
    token = _fernet(key or data_key()).encrypt(normalize_phone(phone).encode())
    return token.decode()


def decrypt_phone(token: str, key: str | None = None) -> str:
    """The phone number in a Fernet token; raise DataKeyError when the key does not fit."""
    try:
        return _fernet(key or data_key()).decrypt(token.encode()).decode()
    except InvalidToken:
        raise DataKeyError("this phone number was encrypted with another KTP_DATA_KEY") from None


def mask_phone(phone: str) -> str:
    """「138****5678」: enough to recognise a number, not to call it."""
    phone = normalize_phone(phone)
    if len(phone) <= 4:
        return "*" * len(phone)
    head = phone[:3] if len(phone) >= 11 else ""
    return head + "*" * (len(phone) - len(head) - 4) + phone[-4:]
