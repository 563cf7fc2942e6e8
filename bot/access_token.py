"""The WeChat access_token, fetched and refreshed in one place and shared by every process.

A new fetch invalidates the previous token, so processes must not each fetch their own: the
token lives in Redis (REDIS_URL) or in the database, and a refresh happens under a lock, after
re-reading the store (another process may just have refreshed it).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import sessionmaker

from bot.models import AccessToken

log = logging.getLogger(__name__)

# Refresh this long before WeChat's expiry, so that no call goes out with a dying token.
EARLY_REFRESH = timedelta(minutes=5)
Fetcher = Callable[[], Coroutine[Any, Any, tuple[str, int]]]


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class Token:
    """A token and when it stops being usable."""

    value: str
    expires_at: datetime

    def fresh(self, now: datetime) -> bool:
        """Usable for a while yet."""
        return now < self.expires_at - EARLY_REFRESH


class TokenBackend(Protocol):
    """Where the shared token lives, and how a refresh is made exclusive across processes."""

    async def load(self) -> Token | None:
        """The stored token, if any."""

    async def refresh(self, stale: str | None, fetch: Fetcher) -> Token:
        """Under a cross-process lock: keep a stored token other than `stale`, else fetch."""


class DbTokenBackend:
    """The token in table wechat_access_tokens; the row lock makes a refresh exclusive."""

    def __init__(self, sessions: sessionmaker, app_id: str) -> None:
        self._sessions = sessions
        self._app_id = app_id

    async def load(self) -> Token | None:
        """Read the stored token."""

        def work() -> Token | None:
            with self._sessions() as session:
                row = session.get(AccessToken, self._app_id)
                return None if row is None else Token(row.token, _aware(row.expires_at))

        return await asyncio.to_thread(work)

    def _ensure_row(self) -> None:
        """Create the app's row (with an expired placeholder) so that there is a row to lock."""
        try:
            with self._sessions() as session, session.begin():
                if session.get(AccessToken, self._app_id) is None:
                    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
                    placeholder = AccessToken(
                        app_id=self._app_id, token="", expires_at=epoch, fetched_at=epoch
                    )
                    session.add(placeholder)
        except IntegrityError:
            pass  # another process created it first

    async def refresh(self, stale: str | None, fetch: Fetcher) -> Token:
        """Fetch a new token unless another process already replaced `stale`."""
        loop = asyncio.get_running_loop()

        def work() -> Token:
            self._ensure_row()
            with self._sessions() as session, session.begin():
                # The touch takes SQLite's write lock (and PostgreSQL's row lock) first, so
                # that a second process waits here and then sees the new token.
                session.execute(
                    update(AccessToken)
                    .where(AccessToken.app_id == self._app_id)
                    .values(app_id=self._app_id)
                )
                row = session.execute(
                    select(AccessToken).where(AccessToken.app_id == self._app_id).with_for_update()
                ).scalar_one()
                current = Token(row.token, _aware(row.expires_at))
                if row.token != stale and current.fresh(_now()):
                    return current
                future = asyncio.run_coroutine_threadsafe(fetch(), loop)
                value, expires_in = future.result(30)
                now = _now()
                expires = now + timedelta(seconds=expires_in)
                row.token, row.expires_at, row.fetched_at = value, expires, now
                return Token(value, expires)

        return await asyncio.to_thread(work)


class RedisTokenBackend:
    """The token in Redis under one key; a SET NX lock makes a refresh exclusive."""

    def __init__(self, redis: Any, app_id: str) -> None:
        self._redis = redis
        self._key = f"ktp:wechat:access_token:{app_id}"
        self._lock = f"{self._key}:lock"

    async def load(self) -> Token | None:
        """Read the stored token."""
        raw = await self._redis.get(self._key)
        if not raw:
            return None
        data = json.loads(raw)
        return Token(data["token"], datetime.fromisoformat(data["expires_at"]))

    async def refresh(self, stale: str | None, fetch: Fetcher) -> Token:
        """Fetch a new token unless another process already replaced `stale`."""
        for _ in range(100):  # about 10 s
            if await self._redis.set(self._lock, "1", nx=True, px=15_000):
                try:
                    current = await self.load()
                    if current and current.value != stale and current.fresh(_now()):
                        return current
                    value, expires_in = await fetch()
                    token = Token(value, _now() + timedelta(seconds=expires_in))
                    payload = {"token": value, "expires_at": token.expires_at.isoformat()}
                    await self._redis.set(self._key, json.dumps(payload), ex=expires_in)
                    return token
                finally:
                    await self._redis.delete(self._lock)
            await asyncio.sleep(0.1)
            current = await self.load()
            if current and current.value != stale and current.fresh(_now()):
                return current
        raise TimeoutError("could not take the access_token refresh lock")


class AccessTokens:
    """A process's view of the shared token, with an in-memory copy and a single refresher."""

    def __init__(self, backend: TokenBackend, fetch: Fetcher) -> None:
        self._backend = backend
        self._fetch = fetch
        self._cached: Token | None = None
        self._lock = asyncio.Lock()
        self.refreshes = 0  # fetches this process made (for tests and logs)

    async def get(self) -> str:
        """A usable token: cached, else stored, else freshly fetched."""
        cached = self._cached
        if cached is not None and cached.fresh(_now()):
            return cached.value
        async with self._lock:
            if self._cached is not None and self._cached.fresh(_now()):
                return self._cached.value
            stored = await self._backend.load()
            if stored is None or not stored.fresh(_now()):
                stored = await self._backend.refresh(stored.value if stored else None, self._count)
            self._cached = stored
            return stored.value

    async def invalidate(self, bad: str) -> str:
        """WeChat refused `bad` (40001/42001): refresh once, however many callers report it."""
        async with self._lock:
            if self._cached is not None and self._cached.value != bad:
                return self._cached.value  # someone in this process already refreshed
            token = await self._backend.refresh(bad, self._count)
            self._cached = token
            return token.value

    async def _count(self) -> tuple[str, int]:
        self.refreshes += 1
        log.info("fetching a new WeChat access_token")
        return await self._fetch()
