"""Labelling the NLU inbox in headless chromium: the admin picks the intent and the crop of
messages the bot was unsure about; the examples land in the inbox training file (read back with
Rasa's own reader) and leave the inbox; a refused label keeps the admin's choices."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from rasa.shared.nlu.training_data.formats.rasa_yaml import RasaYAMLReader
from sqlalchemy import select
from sqlalchemy.orm import Session

from bot.admin import nlu_inbox
from bot.handoff_models import CaseEvent
from bot.models import Conversation, Message
from tests.browser.cdp import DESKTOP, Browser, Page
from tests.browser.conftest import Gateway, add_accounts, login, shot
from tests.handoff_helpers import seed_roster

pytestmark = pytest.mark.browser
T0 = datetime(2026, 11, 20, 2, 0, tzinfo=timezone.utc)
# text, what the model said, its confidence
UNSURE = (
    ("奇异果叶子卷了咋回事", "greet", 0.31),  # an alias: the crop is 猕猴桃
    ("苹果手机能查天气吗", "ask_disease", 0.42),  # 苹果 here is no crop
    ("叶子发黄打啥药好", "ask_pesticide_use", 0.35),  # no crop named at all
    ("核桃树流黑水", "ask_disease", 0.93),  # the model was sure: not in the inbox
)


def seed(session: Session) -> None:
    seed_roster(session)
    add_accounts(session)
    for i, (text, intent, conf) in enumerate(UNSURE):
        at = T0 + timedelta(minutes=i)
        conv = Conversation(openid=f"f{i}", started_at=at, last_activity_at=at)
        session.add(conv)
        session.flush()
        session.add(
            Message(
                conversation_id=conv.id,
                openid=f"f{i}",
                direction="in",
                msg_type="text",
                text=text,
                intent=intent,
                confidence=conf,
                created_at=at,
            )
        )


async def choose(page: Page, selector: str, value: str) -> None:
    """Pick an option of a visible <select> (a native popup cannot be clicked headless)."""
    await page.click(selector)  # focus it as a person would; then choose the option
    found = await page.eval(
        f"""(() => {{ const s = document.querySelector({json.dumps(selector)});
          const o = [...s.options].find((o) => o.value === {json.dumps(value)});
          if (!o) return false; s.value = o.value;
          s.dispatchEvent(new Event('change', {{bubbles: true}})); return true; }})()"""
    )
    assert found, f"{selector} has no option {value!r}"


async def row_id(page: Page, text: str) -> str:
    """The inbox row (its message id) showing `text`."""
    rid = await page.eval(
        "([...document.querySelectorAll('#inbox tr[id^=msg-]')]"
        f".find((r) => r.querySelector('.text').innerText === {json.dumps(text)}) || {{}}).id"
    )
    assert rid, f"{text} is not in the inbox"
    return str(rid).removeprefix("msg-")


def training_file(path: Path) -> dict[str, list[tuple[str, list[tuple[str, str]]]]]:
    """intent → (text, [(entity, value)]) as Rasa's reader reads the file."""
    data = RasaYAMLReader().reads(path.read_text(encoding="utf-8"))
    out: dict[str, list[tuple[str, list[tuple[str, str]]]]] = {}
    for ex in data.intent_examples:
        ents = [(x["entity"], x["value"]) for x in ex.get("entities") or []]
        out.setdefault(ex.get("intent"), []).append((ex.get("text"), ents))
    return out


async def test_admin_labels_the_inbox_in_the_browser(
    browser: Browser, start_gateway: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inbox_file = tmp_path / "nlu" / "inbox.yml"
    monkeypatch.setattr(nlu_inbox, "INBOX_FILE", inbox_file)  # never the checkout's nlu_data/
    gw: Gateway = await start_gateway(seed)
    page = await browser.new_page(DESKTOP, mobile=False)
    assert await login(page, gw, "admin-zz") == 200
    assert await page.goto(gw("/admin/nlu")) == 200
    inbox = await page.text("#inbox")
    for text, _, conf in UNSURE:
        assert (text in inbox) == (conf < nlu_inbox.THRESHOLD), text
    assert "打招呼（greet）" in inbox  # what the model said, in Chinese
    await shot(page, "admin-nlu-inbox")

    # 1. An alias of a crop: the crop is picked for the admin (猕猴桃); they pick the intent.
    kiwi = await row_id(page, "奇异果叶子卷了咋回事")
    assert await page.value(f"#crop-{kiwi}") == "猕猴桃"
    await choose(page, f"#intent-{kiwi}", "ask_disease")
    assert await page.click_and_wait(f"#label-{kiwi}") == 200
    assert (await page.text("#notice")).startswith("已加入 1 条到「病害（ask_disease）」")
    assert await page.exists('#notice a#to-model[href="/admin/model"]')
    assert "奇异果叶子卷了咋回事" not in await page.text("#inbox")

    # 2. 「苹果」 that is no crop: the admin says so, and labels it out of scope.
    apple = await row_id(page, "苹果手机能查天气吗")
    assert await page.value(f"#crop-{apple}") == "苹果"
    await choose(page, f"#intent-{apple}", "out_of_scope")
    await choose(page, f"#crop-{apple}", nlu_inbox.NO_CROP)
    assert await page.click_and_wait(f"#label-{apple}") == 200
    assert "苹果手机能查天气吗" not in await page.text("#inbox")

    # 3. A crop the message does not name: refused in Chinese, nothing written, choices kept.
    before = inbox_file.read_text(encoding="utf-8")
    leaf = await row_id(page, "叶子发黄打啥药好")
    await choose(page, f"#intent-{leaf}", "ask_pesticide_use")
    await choose(page, f"#crop-{leaf}", "玉米")
    assert await page.click_and_wait(f"#label-{leaf}") == 422
    error = await page.text("#error")
    assert "没有保存" in error and "玉米" in error and "消息里没有作物" in error
    assert await page.value(f"#intent-{leaf}") == "ask_pesticide_use"
    assert await page.value(f"#crop-{leaf}") == "玉米"
    assert inbox_file.read_text(encoding="utf-8") == before
    await shot(page, "admin-nlu-refused")
    await choose(page, f"#crop-{leaf}", nlu_inbox.NO_CROP)
    assert await page.click_and_wait(f"#label-{leaf}") == 200
    assert await page.exists("#inbox-empty")

    # 4. Examples typed for an intent, without choosing one: refused, the text kept.
    await page.type("#add-texts", "猕猴桃果子软了能放多久\n奇异果冷库存几个月")
    assert await page.click_and_wait("#add-examples") == 422
    assert "请选一个意图" in await page.text("#error")
    assert await page.value("#add-texts") == "猕猴桃果子软了能放多久\n奇异果冷库存几个月"
    await choose(page, "#add-intent", "ask_storage")
    assert await page.click_and_wait("#add-examples") == 200
    assert "已加入 2 条" in await page.text("#notice")
    assert not page.console_errors

    # The file, as Rasa reads it: intents, texts and the crop entities the admin chose.
    assert training_file(inbox_file) == {
        "ask_disease": [("奇异果叶子卷了咋回事", [("crop", "奇异果")])],
        "out_of_scope": [("苹果手机能查天气吗", [])],
        "ask_pesticide_use": [("叶子发黄打啥药好", [])],
        "ask_storage": [
            ("猕猴桃果子软了能放多久", [("crop", "猕猴桃")]),
            ("奇异果冷库存几个月", [("crop", "奇异果")]),
        ],
    }
    with gw.sessions() as s:
        audit = s.execute(
            select(CaseEvent.detail).where(CaseEvent.action == "nlu_label").order_by(CaseEvent.id)
        ).scalars()
        assert list(audit) == [
            "ask_disease +1",
            "out_of_scope +1",
            "ask_pesticide_use +1",
            "ask_storage +2",
        ]
