"""FAQ: matching (table), adding on /admin/faq (both databases, faq.yml valid Rasa data), and the
answer action preferring the FAQ's card."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy import select

from actions import actions as kb_actions
from bot import admin, console, db, kb_faq
from bot.admin.faq_views import FAQ_PATH
from bot.admin.nlu_inbox import validate
from bot.admin_models import FaqEntry
from bot.handoff_models import CaseEvent
from bot.kb_cli import load_into
from bot.rasa_client import SOURCE_KEY
from tests.handoff_helpers import RecordingSender, data_key
from tests.test_actions import run, tracker
from tests.test_admin_dashboard import sessions
from tests.test_console import login, open_window

__all__ = ["data_key", "sessions"]
VARIANTS = ["我家果树开春冒白浆咋整", "树干流红水怎么办", "枝条冒脓水是什么病"]
ENTRIES = [("kiwi-canker", VARIANTS), ("kiwi-gray-mold", ["果子长灰毛了怎么办"])]


@pytest.mark.parametrize(
    ("text", "card"),
    [
        ("我家果树开春冒白浆咋整", "kiwi-canker"),  # the variant itself
        ("老师，我家果树开春冒白浆咋整？", "kiwi-canker"),  # filler and punctuation
        ("我家的果树开春冒白浆咋整啊", "kiwi-canker"),  # a word more
        ("果子长灰毛了 怎么办", "kiwi-gray-mold"),
        ("果树开花少怎么办", None),  # related, not the same question
        ("你好", None),
        ("", None),
    ],
)
def test_best_match(text: str, card: str | None) -> None:
    hit = kb_faq.best_match(text, ENTRIES)
    assert (hit.card_id if hit else None) == card


def test_variants_are_cleaned() -> None:
    assert kb_faq.clean_variants([" a  b ", "a b", "", "[x]"]) == ["a b", "x"]


@pytest.fixture
async def client(aiohttp_client: Any, sessions: Any, engine: Any, tmp_path: Path) -> TestClient:
    load_into(engine.url.render_as_string(hide_password=False))
    app = web.Application()
    console.setup(
        app, sessions=sessions, sender=RecordingSender(), window=open_window, secret=b"s" * 32
    )
    admin.setup(app)
    app[FAQ_PATH] = tmp_path / "faq.yml"
    return await aiohttp_client(app)


async def test_an_admin_adds_an_faq_with_three_variants(
    client: TestClient, sessions: Any, tmp_path: Path
) -> None:
    csrf = await login(client, "admin-prov")
    form = {"csrf": csrf, "card_id": "kiwi-canker", "intent": "ask_disease"}
    resp = await client.post("/admin/faq", data={**form, "variants": "\n".join(VARIANTS)})
    assert resp.status == 200 and "3 个问法" in await resp.text()
    written = (tmp_path / "faq.yml").read_text(encoding="utf-8")
    validate(written)
    (block,) = yaml.safe_load(written)["nlu"]
    assert block["intent"] == "ask_disease" and "枝条冒脓水是什么病" in block["examples"]
    with sessions() as s:
        (row,) = s.execute(select(FaqEntry)).scalars()
        assert (row.card_id, row.variants, row.created_by) == (
            "kiwi-canker",
            VARIANTS,
            "account:admin-prov",
        )
        assert s.execute(select(CaseEvent).where(CaseEvent.action == "faq_added")).first()
    bad = {**form, "card_id": "no-such-card", "variants": "x"}
    assert (await client.post("/admin/faq", data=bad)).status == 422  # the page again, kept
    assert (await client.post("/admin/faq", data={**form, "intent": "greet"})).status == 422
    assert "枝条冒脓水是什么病" in await (await client.get("/admin/faq")).text()


async def test_the_answer_action_prefers_the_faq_card(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    load_into(sqlite_url)
    monkeypatch.setenv("DATABASE_URL", sqlite_url)
    kb_actions.live.cache_clear()
    kb_actions.faqs.cache_clear()
    text = "老师 我家果树开春冒白浆咋整"
    _, before = await run(tracker(text, "ask_disease"))
    assert before.messages[0]["custom"][SOURCE_KEY] != "kb:kiwi-canker"
    maker = db.make_sessionmaker(db.make_engine(sqlite_url))
    with maker() as s, s.begin():
        kb_faq.add_faq(s, card_id="kiwi-canker", intent="ask_disease", variants=VARIANTS,
                       actor="account:a")  # fmt: skip
    kb_actions.faqs.cache_clear()
    events, after = await run(tracker(text, "ask_disease"))
    assert after.messages[0]["custom"][SOURCE_KEY] == "kb:kiwi-canker"
    assert "猕猴桃" in after.messages[0]["text"] and "溃疡病" in after.messages[0]["text"]
    assert {"event": "slot", "name": "last_card", "value": "kiwi-canker"} in [
        {k: e.get(k) for k in ("event", "name", "value")} for e in events
    ]
    kb_actions.faqs.cache_clear()
