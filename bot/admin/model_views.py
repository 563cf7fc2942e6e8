"""/admin/model: 「重新训练」 with progress, the figures side by side, the history and restore."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from aiohttp import web
from sqlalchemy.orm import Session

from bot import model_update
from bot.admin import pages
from bot.admin.nlu_inbox import intent_label
from bot.console.auth import Login, check_csrf
from bot.console.deps import DEPS, run_db
from bot.handoff import event
from bot.model_update import Busy, Updater, history

e = pages.e
PHASES = {
    "idle": "空闲",
    "validating": "检查数据",
    "training": "训练中",
    "evaluating": "评估中",
    "switching": "切换中",
    "done": "已启用新模型",
    "refused": "新模型较差，未启用",
    "failed": "失败",
}
ACTIONS = {"switch": "启用", "refused": "拒绝", "restore": "恢复", "failed": "失败"}


@dataclass
class UpdaterBox:
    """The gateway's one Updater, made on first use (the engine exists by then)."""

    factory: Callable[[web.Application], Updater] | None = None
    updater: Updater | None = None

    def get(self, app: web.Application) -> Updater:
        """The updater (built once)."""
        if self.updater is None:
            assert self.factory is not None
            self.updater = self.factory(app)
        return self.updater


UPDATER: web.AppKey[UpdaterBox] = web.AppKey("model_updater", UpdaterBox)


def real_updater(app: web.Application) -> Updater:
    """Rasa's CLI and the gateway's Rasa server (RASA_TOKEN), on the console's sessions."""
    from bot import app as gateway
    from bot.model_rasa import RasaModelApi, RasaTrainer
    from bot.settings import Settings

    settings = app[gateway.SETTINGS] if gateway.SETTINGS in app else Settings.from_env()
    deps = app[DEPS]
    server = RasaModelApi(settings.rasa_url, settings.rasa_token)
    # var/: one lock and one status for every gateway worker (KTP_GATEWAY_WORKERS).
    return Updater(RasaTrainer(), server, deps.sessions, shared_dir=model_update.ROOT / "var")


def _updater(request: web.Request) -> Updater:
    return request.config_dict[UPDATER].get(request.app)


def figures_table(current: dict[str, Any] | None, candidate: dict[str, Any] | None) -> str:
    """The two models' held-out figures side by side (per-intent recall below)."""
    if not candidate:
        return ""

    def val(d: dict[str, Any] | None, key: str, intent: str | None = None) -> str:
        if not d:
            return "—"
        v = d["recall"].get(intent) if intent else d.get(key)
        return "—" if v is None else f"{v:.3f}"

    rows = [("意图准确率", "accuracy", None), ("意图宏平均F1", "macro_f1", None)]
    rows += [("作物识别F1", "crop_f1", None)]
    rows += [(f"召回 · {intent_label(i)}", "", i) for i in sorted(candidate["recall"])]
    body = "".join(
        f"<tr><th>{e(name)}</th><td>{val(current, key, i)}</td><td>{val(candidate, key, i)}</td>"
        "</tr>"
        for name, key, i in rows
    )
    return (
        f'<table id="figures"><tr><th>留出测试集（{candidate["n"]} 条）</th><th>现用模型</th>'
        f"<th>新模型</th></tr>{body}</table>"
    )


def _status_html(st: dict[str, Any]) -> str:
    bar = ""
    if st.get("epochs"):
        bar = f'<progress id="epochs" max="{st["epochs"]}" value="{st["epoch"] or 0}"></progress>'
    reasons = "".join(f"<li>{e(r)}</li>" for r in st.get("reasons") or [])
    took = f"（{st['elapsed_s']} 秒）" if st.get("elapsed_s") is not None else ""
    return (
        f'<p>状态：<b id="phase" data-phase="{e(st["phase"])}">{e(PHASES.get(st["phase"]))}</b>'
        f'{e(took)}</p>{bar}<pre id="detail">{e(st.get("detail"))}</pre>'
        + (f'<ul id="reasons">{reasons}</ul>' if reasons else "")
        + figures_table(st.get("current"), st.get("candidate"))
    )


POLL = """<script>
async function poll(){const r=await fetch('/admin/model/status',{credentials:'same-origin'});
if(!r.ok)return;const s=await r.json();document.getElementById('status').innerHTML=s.html;
if(s.running)setTimeout(poll,2000);else if(window.wasRunning)location.reload();
window.wasRunning=s.running}
poll();</script>"""


async def model_page(request: web.Request) -> web.StreamResponse:
    """GET /admin/model."""
    login: Login = request["login"]
    updater = _updater(request)
    st = updater.status()
    current = await asyncio.to_thread(updater.server.current_model)

    def work(session: Session) -> str:
        rows = history(session)
        return "".join(
            f"<tr><td>{r.id}</td><td>{e(r.at.strftime('%Y-%m-%d %H:%M'))}</td><td>{e(r.actor)}"
            f"</td><td>{e(ACTIONS.get(r.action, r.action))}</td><td>{e(_name(r.from_model))}</td>"
            f"<td>{e(_name(r.to_model))}</td><td>{_macro(r.figures)}</td><td>"
            + (
                pages.form(
                    "/admin/model/restore",
                    login.csrf,
                    f'<input type="hidden" name="switch" value="{r.id}">',
                    "恢复之前的模型",
                    f"restore-{r.id}",
                )
                if r.action in ("switch", "restore") and r.from_model
                else ""
            )
            + "</td></tr>"
            for r in rows
        )

    rows = await run_db(request, work)
    retrain = pages.form("/admin/model/retrain", login.csrf, "", "重新训练", "retrain")
    notice = request.query.get("notice", "")
    body = (
        (f'<p class="ok" id="notice">{e(notice)}</p>' if notice else "")
        + f'<p>正在使用：<b id="current-model">{e(current or "（Rasa 未连上）")}</b></p>'
        + "<p class=muted>重新训练会先检查训练数据，再在后台训练，然后在留出测试集上和现用模型"
        "比较；新模型的意图宏平均F1 不低于现用模型 0.01 以上、准确率不低 0.02 以上、"
        "作物识别F1 不低 0.02 以上、且没有哪个意图的召回率降超过 0.15，才会启用。</p>"
        + retrain
        + f'<div class="card" id="status">{_status_html(st)}</div>'
        + '<h2>模型记录</h2><table id="history"><tr><th>#</th><th>时间</th><th>操作人</th>'
        f"<th>操作</th><th>原模型</th><th>新模型</th><th>宏F1 原→新</th><th></th></tr>{rows}"
        f"</table>{POLL}"
    )
    scope = login.actor.county or "全省"
    return pages.html(pages.layout("模型", body, user=login.username, csrf=login.csrf, scope=scope))


def _name(path: str | None) -> str:
    return (path or "").rsplit("/", 1)[-1]


def _macro(figures: dict[str, Any] | None) -> str:
    if not figures or not figures.get("candidate"):
        return ""
    old = (figures.get("current") or {}).get("macro_f1")
    new = figures["candidate"]["macro_f1"]
    return e(f"{'—' if old is None else f'{old:.3f}'} → {new:.3f}")


async def status(request: web.Request) -> web.StreamResponse:
    """GET /admin/model/status: the update's status as JSON (with its HTML, for the page)."""
    st = _updater(request).status()
    st["html"] = _status_html(st)
    return web.json_response(st, dumps=lambda o: json.dumps(o, ensure_ascii=False))


async def retrain(request: web.Request) -> web.StreamResponse:
    """POST /admin/model/retrain: start the update in the background (one at a time)."""
    login: Login = request["login"]
    await check_csrf(request, login.csrf)
    try:
        _updater(request).start(f"account:{login.username}")
    except Busy as exc:
        raise web.HTTPSeeOther(f"/admin/model?notice={quote(str(exc))}") from None
    await run_db(request, lambda s: event(s, None, login.actor, "model_retrain"))
    raise web.HTTPSeeOther("/admin/model?notice=已开始训练")


async def restore(request: web.Request) -> web.StreamResponse:
    """POST /admin/model/restore: load the model a recorded switch replaced."""
    login: Login = request["login"]
    form = await check_csrf(request, login.csrf)
    try:
        switch_id = int(form.get("switch", ""))
        path = await asyncio.to_thread(
            _updater(request).restore, f"account:{login.username}", switch_id
        )
    except ValueError:
        raise web.HTTPBadRequest(text="switch must be a number") from None
    except (Busy, FileNotFoundError, RuntimeError) as exc:
        raise web.HTTPSeeOther(f"/admin/model?notice={quote(f'没有恢复：{exc}')}") from None
    await run_db(request, lambda s: event(s, None, login.actor, "model_restore", path.name))
    raise web.HTTPSeeOther(f"/admin/model?notice=已恢复 {path.name}")
