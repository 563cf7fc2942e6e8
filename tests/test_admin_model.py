"""/admin/model: admins only, CSRF on retrain and restore, progress polled as JSON, a refused
model's figures shown side by side, the history recorded (fake trainer and Rasa)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from bot import admin, console
from bot.admin import model_views
from bot.model_update import Updater
from tests.handoff_helpers import RecordingSender, data_key
from tests.test_admin_dashboard import sessions
from tests.test_console import login, open_window
from tests.test_model_update import FakeRasa, FakeTrainer, fig

__all__ = ["data_key", "sessions"]


@pytest.fixture
def fakes(tmp_path: Path) -> tuple[FakeTrainer, FakeRasa, Path]:
    models = tmp_path / "models"
    models.mkdir()
    (models / "old.tar.gz").write_bytes(b"old")
    trainer = FakeTrainer(tmp_path, {"old.tar.gz": fig(0.8, ask_pest=0.9), "new.tar.gz": fig(0.5)})
    return trainer, FakeRasa("old.tar.gz"), models


@pytest.fixture
async def client(aiohttp_client: Any, sessions: Any, fakes: Any) -> TestClient:
    trainer, rasa, models = fakes
    app = web.Application()
    console.setup(
        app, sessions=sessions, sender=RecordingSender(), window=open_window, secret=b"s" * 32
    )
    admin.setup(app)
    updater = Updater(trainer, rasa, lambda: sessions, models_dir=models)
    app[model_views.UPDATER] = model_views.UpdaterBox(updater=updater)
    return await aiohttp_client(app)


async def _wait_done(client: TestClient) -> dict[str, Any]:
    for _ in range(100):
        st = await (await client.get("/admin/model/status")).json()
        if not st["running"]:
            return dict(st)
        await asyncio.sleep(0.05)
    raise AssertionError("the update did not finish")


async def test_commissioners_cannot_retrain(client: TestClient) -> None:
    await login(client, "wang")
    assert (await client.get("/admin/model")).status == 403
    assert (await client.post("/admin/model/retrain", data={})).status == 403


async def test_a_worse_model_is_refused_and_shown(client: TestClient, fakes: Any) -> None:
    _, rasa, _ = fakes
    csrf = await login(client, "admin-prov")
    page = await (await client.get("/admin/model")).text()
    assert 'id="retrain"' in page and "old.tar.gz" in page
    assert (await client.post("/admin/model/retrain", data={"csrf": "x"})).status == 403
    resp = await client.post("/admin/model/retrain", data={"csrf": csrf})
    assert resp.status == 200
    st = await _wait_done(client)
    assert st["phase"] == "refused" and rasa.loads == []
    assert 'id="figures"' in st["html"] and "0.800" in st["html"] and "0.500" in st["html"]
    page = await (await client.get("/admin/model")).text()
    assert "拒绝" in page and "0.800 → 0.500" in page


async def test_a_better_model_is_switched_and_can_be_restored(
    client: TestClient, fakes: Any
) -> None:
    trainer, rasa, models = fakes
    trainer.figs["new.tar.gz"] = fig(0.9, ask_pest=0.9)
    csrf = await login(client, "admin-prov")
    await client.post("/admin/model/retrain", data={"csrf": csrf})
    assert (await _wait_done(client))["phase"] == "done"
    assert rasa.loads == [models / "new.tar.gz"]
    page = await (await client.get("/admin/model")).text()
    assert 'id="restore-1"' in page
    resp = await client.post("/admin/model/restore", data={"csrf": csrf, "switch": "1"})
    assert resp.status == 200 and "已恢复 old.tar.gz" in await resp.text()
    assert rasa.loads[-1] == models / "old.tar.gz"
