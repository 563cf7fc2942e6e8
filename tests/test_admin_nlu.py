"""/admin/nlu: the inbox offers unsure or handed-off messages; a label lands in valid Rasa YAML."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from bot import admin, console
from bot.admin import nlu_inbox
from bot.admin.nlu_views import INBOX_PATH
from bot.knowledge import load_names
from bot.models import Conversation, Message
from tests.admin_helpers import T0
from tests.handoff_helpers import RecordingSender, data_key
from tests.test_admin_dashboard import sessions
from tests.test_console import login, open_window

__all__ = ["data_key", "sessions"]


@pytest.fixture
async def client(aiohttp_client: Any, sessions: Any, tmp_path: Path) -> TestClient:
    app = web.Application()
    console.setup(
        app, sessions=sessions, sender=RecordingSender(), window=open_window, secret=b"s" * 32
    )
    admin.setup(app)
    app[INBOX_PATH] = tmp_path / "nlu" / "inbox.yml"
    return await aiohttp_client(app)


def test_annotate_marks_crop_names() -> None:
    assert nlu_inbox.annotate("猕猴桃叶子黄了", load_names()).startswith("[猕猴桃](crop)")


def test_heldout_is_never_written() -> None:
    with pytest.raises(nlu_inbox.LabelError):
        nlu_inbox.add_examples("greet", ["你好"], {"greet"}, load_names(), nlu_inbox.HELDOUT)


async def test_label_from_the_inbox(client: TestClient, tmp_path: Path) -> None:
    await login(client, "admin-prov")
    page = await (await client.get("/admin/nlu")).text()
    assert "猕猴桃怎么办" in page  # confidence 0.4 in the seeded records
    token = re.search(r'name="csrf" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    resp = await client.post(
        "/admin/nlu/label", data={"csrf": token, "text": "猕猴桃怎么办", "intent": "ask_disease"}
    )
    assert resp.status == 200 and "已加入 1 条" in await resp.text()
    written = (tmp_path / "nlu" / "inbox.yml").read_text(encoding="utf-8")
    assert "- intent: ask_disease" in written and "[猕猴桃](crop)怎么办" in written
    nlu_inbox.validate(written)
    assert "猕猴桃怎么办</td>" not in await (await client.get("/admin/nlu")).text()
    bad = {"csrf": token, "text": "x", "intent": "no_such_intent"}
    resp = await client.post("/admin/nlu/label", data=bad)
    assert resp.status == 422 and "没有这个意图：no_such_intent" in await resp.text()


def test_phone_and_id_numbers_never_reach_the_page_or_the_training_data(
    sessions: Any, tmp_path: Path
) -> None:
    text = "猕猴桃叶子黄了 我电话13812345678 身份证610124199001011234"
    with sessions() as s, s.begin():
        conv = Conversation(openid="f-pii", started_at=T0, last_activity_at=T0)
        s.add(conv)
        s.flush()
        s.add(Message(conversation_id=conv.id, openid="f-pii", direction="in", msg_type="text",
                      text=text, intent="ask_disease", confidence=0.2, created_at=T0))  # fmt: skip
    with sessions() as s:
        (item,) = [i for i in nlu_inbox.inbox(session=s, labelled=set()) if "电话" in i.text]
    assert "13812345678" not in item.text and "610124199001011234" not in item.text
    path = tmp_path / "inbox.yml"
    nlu_inbox.add_examples("ask_disease", [text], {"ask_disease"}, load_names(), path)
    written = path.read_text(encoding="utf-8")
    assert "12345678" not in written and "199001011234" not in written
    assert nlu_inbox.labelled_texts(path) == {item.text}  # so it leaves the inbox
