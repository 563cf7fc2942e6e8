"""The admins' web pages (mounted at /admin) and the monthly assessment report."""

from __future__ import annotations

from aiohttp import web

from bot.admin import dashboard
from bot.admin.access import admin_required


def setup(app: web.Application) -> None:
    """Mount /admin on an app where the console is set up (its login and sessions are reused)."""
    app.router.add_get("/admin", _to_admin)
    app.router.add_get("/admin/", admin_required(dashboard.dashboard))
    app.router.add_get("/admin/report.xlsx", admin_required(dashboard.report_download))


async def _to_admin(_request: web.Request) -> web.StreamResponse:
    """GET /admin → /admin/."""
    raise web.HTTPFound("/admin/")
