"""The admins' web pages (mounted at /admin) and the monthly assessment report."""

from __future__ import annotations

from aiohttp import web

from bot.admin import dashboard, faq_views, farmer_views, kb_views, model_views, nlu_views
from bot.admin.access import admin_required


def setup(app: web.Application) -> None:
    """Mount /admin on an app where the console is set up (its login and sessions are reused)."""
    app.router.add_get("/admin", _to_admin)
    app.router.add_get("/admin/", admin_required(dashboard.dashboard))
    app.router.add_get("/admin/report.xlsx", admin_required(dashboard.report_download))
    app.router.add_get("/admin/nlu", admin_required(nlu_views.inbox_page))
    app.router.add_post("/admin/nlu/label", admin_required(nlu_views.label))
    app[model_views.UPDATER] = model_views.UpdaterBox(model_views.real_updater)
    app.router.add_get("/admin/model", admin_required(model_views.model_page))
    app.router.add_get("/admin/model/status", admin_required(model_views.status))
    app.router.add_post("/admin/model/retrain", admin_required(model_views.retrain))
    app.router.add_post("/admin/model/restore", admin_required(model_views.restore))
    app.router.add_get("/admin/faq", admin_required(faq_views.faq_page))
    app.router.add_post("/admin/faq", admin_required(faq_views.add_faq))
    app.router.add_get("/admin/farmers", admin_required(farmer_views.farmers))
    app.router.add_get("/admin/farmers/{conv_id:\\d+}", admin_required(farmer_views.farmer_record))
    app.router.add_post(
        "/admin/farmers/{conv_id:\\d+}/delete", admin_required(farmer_views.delete_farmer)
    )
    app.router.add_get("/admin/kb", admin_required(kb_views.kb_list))
    app.router.add_get("/admin/kb/export.xlsx", admin_required(kb_views.kb_export))
    app.router.add_post("/admin/kb/import", admin_required(kb_views.kb_import))
    app.router.add_get("/admin/kb/{card_id}", admin_required(kb_views.kb_card))
    app.router.add_post("/admin/kb/{card_id}/{action}", admin_required(kb_views.kb_action))


async def _to_admin(_request: web.Request) -> web.StreamResponse:
    """GET /admin → /admin/."""
    raise web.HTTPFound("/admin/")
