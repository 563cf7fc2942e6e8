"""Who may use /admin: a signed-in admin (the console's login); everyone else gets 403."""

from __future__ import annotations

import functools

from aiohttp import web

from bot.console import auth, pages
from bot.console.auth import Handler, Login


def admin_required(handler: Handler) -> Handler:
    """An admin page: the console's login first (else to the login page), then role admin."""

    @functools.wraps(handler)
    async def only_admins(request: web.Request) -> web.StreamResponse:
        login: Login = request["login"]
        if login.role != "admin":
            text = "这些页面只对管理员开放。"
            return pages.html(
                pages.message_page("没有权限", text, 403, login.username, login.csrf), 403
            )
        return await handler(request)

    return auth.login_required(only_admins)


def scope_of(login: Login) -> str | None:
    """The county an admin sees; None for a province-level admin (every county)."""
    return login.actor.county
