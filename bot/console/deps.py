"""What the console needs from the gateway, injected: sessions, the push sender, the window."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from aiohttp import web
from sqlalchemy.orm import Session, sessionmaker

from bot.handoff import Sender
from bot.handoff_push import Window

T = TypeVar("T")
# (farmer openid, session, now) → the 48 h window and pushes left
WindowFn = Callable[..., Window]


@dataclass
class Deps:
    """The console's collaborators; `sessions` is resolved from the gateway's engine lazily."""

    sender: Sender
    window: WindowFn
    secret: bytes
    sessions_factory: Callable[[], sessionmaker] | None = None
    media_dir: Callable[[], Any] | None = None
    _sessions: sessionmaker | None = field(default=None, repr=False)

    def sessions(self) -> sessionmaker:
        """The session factory (built on first use, once the gateway's engine exists)."""
        if self._sessions is None:
            assert self.sessions_factory is not None, "console.setup() was given no sessions"
            self._sessions = self.sessions_factory()
        return self._sessions


DEPS: web.AppKey[Deps] = web.AppKey("console_deps", Deps)


async def run_db(request: web.Request, work: Callable[[Session], T]) -> T:
    """Run `work(session)` in one committed transaction, in a thread (never on the loop)."""
    deps = request.config_dict[DEPS]

    def job() -> T:
        with deps.sessions()() as session, session.begin():
            return work(session)

    return await asyncio.to_thread(job)


def now_utc() -> datetime:
    """Timezone-aware now (for the window figures)."""
    from bot.roster import utcnow

    return utcnow()
