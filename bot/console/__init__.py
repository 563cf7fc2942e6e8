"""The commissioners' web console, mounted at /console on the gateway by `setup(app)`."""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Callable
from pathlib import Path

from aiohttp import web
from sqlalchemy.orm import sessionmaker

from bot.console import auth, views
from bot.console.deps import DEPS, Deps, WindowFn
from bot.handoff import Sender

log = logging.getLogger(__name__)


def _secret() -> bytes:
    configured = os.environ.get("KTP_SESSION_SECRET", "").strip()
    if configured:
        return configured.encode()
    # Without a configured secret, logins last as long as this process (and are not shared).
    log.warning("KTP_SESSION_SECRET is not set: console logins end when the gateway restarts")
    return secrets.token_bytes(32)


def setup(
    app: web.Application,
    *,
    sessions: sessionmaker | None = None,
    sender: Sender | None = None,
    window: WindowFn | None = None,
    secret: bytes | None = None,
    media_dir: Callable[[], Path] | None = None,
) -> None:
    """Mount the console at /console; by default on the gateway's engine, outbox and media."""
    from bot import pii

    if sender is None or window is None:
        from bot.handoff_push import outbox_sender, window_of

        sender, window = sender or outbox_sender, window or window_of
    factory: Callable[[], sessionmaker] | None = None
    if sessions is None:
        from bot import app as gateway  # imported here: bot.app imports this module
        from bot import db

        factory = lambda: db.make_sessionmaker(app[gateway.ENGINE])  # noqa: E731
        media_dir = media_dir or (lambda: app[gateway.MEDIA_DIR])
        simulator = app[gateway.SETTINGS].simulator if gateway.SETTINGS in app else None
    else:
        simulator = None
    # Fail fast: cases' phone numbers cannot be read without KTP_DATA_KEY (dev key: simulator).
    pii.use_key(pii.data_key(simulator=simulator))
    deps = Deps(
        sender=sender,
        window=window,
        secret=secret or _secret(),
        sessions_factory=factory or (lambda: sessions),
        media_dir=media_dir,
    )
    # Routes on the gateway itself: aiohttp 3.9's sub-applications break with the pinned yarl
    # ("Host '127.0.0.1:port' cannot contain ':'"), so every page is wrapped instead.
    app[DEPS] = deps
    need = auth.login_required
    app.router.add_get("/console", _to_console)
    app.router.add_get("/console/login", auth.login_form)
    app.router.add_post("/console/login", auth.login)
    app.router.add_post("/console/logout", need(auth.logout))
    app.router.add_get("/console/", need(views.queue))
    app.router.add_get("/console/cases/{case_id}", need(views.case_page))
    app.router.add_get("/console/cases/{case_id}/media/{n:\\d+}", need(views.case_media))
    app.router.add_post("/console/cases/{case_id}/{action}", need(views.case_action))


async def _to_console(_request: web.Request) -> web.StreamResponse:
    """GET /console → /console/."""
    raise web.HTTPFound("/console/")
