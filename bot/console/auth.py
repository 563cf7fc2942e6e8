"""Console logins: HMAC-signed session cookies, CSRF tokens on every POST, login and logout."""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from bot.console import pages
from bot.console.deps import DEPS, Deps, run_db
from bot.handoff import SYSTEM, Actor, event
from bot.handoff_models import Account

COOKIE = "ktp_console"
PRE_COOKIE = "ktp_console_pre"  # before login: the CSRF of the login form is bound to it
SESSION_S = 12 * 3600
# One login for /console and /admin (the admin pages reuse this session).
COOKIE_PATH = "/"


@dataclass(frozen=True)
class Login:
    """The signed-in account, as the request sees it."""

    account_id: int
    username: str
    role: str
    csrf: str
    actor: Actor


def _sign(secret: bytes, payload: bytes) -> str:
    return hmac.new(secret, payload, hashlib.sha256).hexdigest()


def encode_session(secret: bytes, data: dict[str, Any]) -> str:
    """「payload.signature」, the payload base64 JSON."""
    payload = base64.urlsafe_b64encode(json.dumps(data, separators=(",", ":")).encode())
    return payload.decode() + "." + _sign(secret, payload)


def decode_session(secret: bytes, value: str, now: float | None = None) -> dict[str, Any] | None:
    """The session data if the signature is right and it has not expired, else None."""
    payload, _, sig = value.partition(".")
    if not sig or not hmac.compare_digest(_sign(secret, payload.encode()), sig):
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(payload.encode()))
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("exp", 0) < (now or time.time()):
        return None
    return data


def _cookie_args(request: web.Request, max_age: int | None) -> dict[str, Any]:
    return {
        "httponly": True,
        "samesite": "Strict",
        "secure": request.secure,
        "path": COOKIE_PATH,
        "max_age": max_age,
    }


def _login_csrf(deps: Deps, pre: str) -> str:
    return _sign(deps.secret, b"login:" + pre.encode())


async def check_csrf(request: web.Request, expected: str) -> dict[str, str]:
    """The POSTed form, if its CSRF token is right; 403 otherwise."""
    form = {k: str(v) for k, v in (await request.post()).items()}
    if not hmac.compare_digest(form.get("csrf", ""), expected):
        raise web.HTTPForbidden(text="CSRF token missing or wrong; reload the page and try again")
    return form


def _load(deps: Deps, request: web.Request) -> Login | None:
    data = decode_session(deps.secret, request.cookies.get(COOKIE, ""))
    if data is None:
        return None

    def work(session: Any) -> Login | None:
        account = session.get(Account, int(data["aid"]))
        if account is None or not account.active:
            return None
        return Login(
            account.id, account.username, account.role, str(data["csrf"]), Actor.of_account(account)
        )

    return run_db_sync(deps, work)


def run_db_sync(deps: Deps, work: Any) -> Any:
    """Run `work(session)` in a committed transaction (called from a thread)."""
    with deps.sessions()() as session, session.begin():
        return work(session)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def login_required(handler: Handler) -> Handler:
    """A console page that needs a valid session (else to the login page); never cached."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        login_ = await asyncio.to_thread(_load, request.config_dict[DEPS], request)
        if login_ is None:
            raise web.HTTPSeeOther("/console/login")
        request["login"] = login_
        return no_store(await handler(request))

    return wrapped


def no_store(response: web.StreamResponse) -> web.StreamResponse:
    """Personal data: never cached, never framed."""
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"
    return response


async def login_form(request: web.Request) -> web.StreamResponse:
    """GET /console/login."""
    deps = request.config_dict[DEPS]
    pre = request.cookies.get(PRE_COOKIE) or secrets.token_urlsafe(16)
    response = pages.html(pages.login_page(_login_csrf(deps, pre)))
    response.set_cookie(PRE_COOKIE, pre, **_cookie_args(request, 3600))
    return no_store(response)


async def login(request: web.Request) -> web.StreamResponse:
    """POST /console/login: username and password; a signed session cookie on success."""
    from bot import roster

    deps = request.config_dict[DEPS]
    pre = request.cookies.get(PRE_COOKIE, "")
    form = await check_csrf(request, _login_csrf(deps, pre) if pre else secrets.token_hex(8))

    def work(session: Any) -> tuple[int, str] | None:
        account = roster.authenticate(
            form.get("username", ""), form.get("password", ""), session=session
        )
        if account is None:
            event(session, None, SYSTEM, "login_failed", form.get("username", "")[:64])
            return None
        event(session, None, Actor.of_account(account), "login")
        return account.id, account.username

    found = await run_db(request, work)
    if found is None:
        return pages.html(pages.login_page(_login_csrf(deps, pre), "用户名或密码不对"), 401)
    data = {"aid": found[0], "csrf": secrets.token_urlsafe(24), "exp": time.time() + SESSION_S}
    response = web.HTTPSeeOther("/console/")
    response.set_cookie(
        COOKIE, encode_session(deps.secret, data), **_cookie_args(request, SESSION_S)
    )
    response.del_cookie(PRE_COOKIE, path=COOKIE_PATH)
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    """POST /console/logout."""
    login_: Login = request["login"]
    await check_csrf(request, login_.csrf)
    await run_db(request, lambda session: event(session, None, login_.actor, "logout"))
    response = web.HTTPSeeOther("/console/login")
    response.del_cookie(COOKIE, path=COOKIE_PATH)
    return response
