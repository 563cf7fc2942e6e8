"""/admin/faq for an admin: a question and its other wordings, the answer card picked from the
published ones, the category taken from the card; a refused FAQ shows why in Chinese and keeps
everything typed; an FAQ never answers with an unpublished card."""

from __future__ import annotations

import re
from html import unescape
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestClient
from sqlalchemy import select

from bot import kb_faq
from bot.admin import kb_service
from bot.admin_models import FaqEntry
from bot.kb_models import KbCard
from tests.test_console import login
from tests.test_kb_faq import client, data_key, sessions

__all__ = ["client", "data_key", "sessions"]


def _value(page: str, field_id: str) -> str:
    m = re.search(rf'id="{field_id}"[^>]*value="([^"]*)"', page)
    return unescape(m.group(1)) if m else ""


def _textarea(page: str, field_id: str) -> str:
    m = re.search(rf'id="{field_id}"[^>]*>([^<]*)</textarea>', page)
    return unescape(m.group(1)) if m else ""


async def test_question_and_wordings_with_the_cards_category(
    client: TestClient, sessions: Any, tmp_path: Path
) -> None:
    csrf = await login(client, "admin-prov")
    page = await (await client.get("/admin/faq")).text()
    assert '<option value="kiwi-canker">猕猴桃 · 溃疡病</option>' in page  # the card picker
    assert "按答案卡片的类别" in page and "病害（ask_disease）" in page
    form = {
        "csrf": csrf,
        "question": "猕猴桃树干流红水怎么办",
        "variants": "枝干冒红水\n\n猕猴桃树干流红水怎么办\n",  # a blank line and a repeat
        "card_id": " kiwi-canker ",
        "intent": "",
    }
    resp = await client.post("/admin/faq", data=form)
    assert resp.status == 200 and "2 个问法" in await resp.text()
    with sessions() as s:
        (row,) = s.execute(select(FaqEntry)).scalars()
        assert (row.intent, row.variants) == (
            "ask_disease",
            ["猕猴桃树干流红水怎么办", "枝干冒红水"],
        )
    (block,) = yaml.safe_load((tmp_path / "faq.yml").read_text(encoding="utf-8"))["nlu"]
    assert block["intent"] == "ask_disease"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"card_id": "no-such-card"}, "知识库里没有这张卡片：no-such-card"),
        ({"card_id": ""}, "请选一张答案卡片"),
        ({"question": "", "variants": " \n"}, "请至少写一个问法"),
        ({"intent": "greet"}, "请选一个咨询类别"),
    ],
)
async def test_a_refused_faq_keeps_what_was_typed(
    client: TestClient, sessions: Any, tmp_path: Path, change: dict[str, str], reason: str
) -> None:
    csrf = await login(client, "admin-prov")
    form = {
        "csrf": csrf,
        "question": "果树冒白浆咋整",
        "variants": "树干流红水\n枝条冒脓水",
        "card_id": "kiwi-canker",
        "intent": "ask_disease",
        **change,
    }
    resp = await client.post("/admin/faq", data=form)
    page = await resp.text()
    assert resp.status == 422
    assert f"没有添加：{reason}" in unescape(page)
    assert _value(page, "faq-question") == form["question"]
    assert _textarea(page, "faq-variants") == form["variants"]
    assert _value(page, "faq-card") == form["card_id"]
    assert "Traceback" not in page
    assert not (tmp_path / "faq.yml").exists()
    with sessions() as s:
        assert s.execute(select(FaqEntry)).first() is None


async def test_no_faq_answers_with_an_unpublished_card(client: TestClient, sessions: Any) -> None:
    csrf = await login(client, "admin-prov")
    with sessions() as s, s.begin():
        s.get(KbCard, "kiwi-gray-mold").status = "draft"
    form = {"csrf": csrf, "question": "果子长灰毛了怎么办", "variants": "", "intent": ""}
    resp = await client.post("/admin/faq", data={**form, "card_id": "kiwi-gray-mold"})
    assert resp.status == 422 and "还没有发布" in await resp.text()

    # A card retired after its FAQ was added: the FAQ stops answering with it.
    resp = await client.post("/admin/faq", data={**form, "card_id": "kiwi-canker"})
    assert resp.status == 200
    with sessions() as s:
        assert kb_faq.best_match("果子长灰毛了怎么办", kb_faq.active_entries(s))
    with sessions() as s, s.begin():
        kb_service.retire("kiwi-canker", session=s)
    with sessions() as s:
        assert kb_faq.active_entries(s) == []
    assert "（未发布，暂不回答）" in await (await client.get("/admin/faq")).text()
