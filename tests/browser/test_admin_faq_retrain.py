"""The whole loop in headless chromium on the real stack: an admin adds an FAQ, retrains the
model from /admin/model (real validation, `rasa train` with the product's config on the repo's
data, held-out evaluation, PUT /model), and a farmer in /sim gets the FAQ's answer to a wording
the admin never typed.

The stack (`ketepai run`: Rasa, actions, gateway) runs from a temporary copy of the repo's code,
data and newest model, so the test never writes the checkout's nlu_data/ or models/. It trains
one real model: minutes on 2 cores (marker `slow`; deselect with -m 'not slow').
"""

from __future__ import annotations

import asyncio
import functools
import os
import shutil
import time
from pathlib import Path

import pytest
import yaml
from sqlalchemy import select

from bot import db, passwords, roster
from bot.models import Message
from bot.runner import newest_model
from tests.browser.cdp import DESKTOP, PHONE, Browser, Page
from tests.browser.conftest import PASSWORD, shot
from tests.conftest import free_port
from tests.live_stack import running_stack

pytestmark = [pytest.mark.browser, pytest.mark.live, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
TRAINED_WITHIN_S = 40 * 60  # validate + train + evaluate; measured figures in the report

# An FAQ that names no crop: before it exists the bot can only ask which crop; afterwards the
# retrained model sends such questions to the answer action and the FAQ's card answers.
QUESTION = "公树和母树按多少比例配"
VARIANTS = ("园子里公树要留几棵", "雄树雌树怎么搭配着栽")
CARD = "kiwi-pollination"  # 【猕猴桃 · 授粉】
FARMER_SAYS = "公树跟母树按多少比例配"  # 和 → 跟: not one of the variants as typed


def _product_copy(dst: Path) -> Path:
    """The files `ketepai run` and a model update use: code, data, config, newest model."""
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("bot", "actions", "nlu_data", "kb"):
        shutil.copytree(REPO / name, dst / name, ignore=skip)
    for name in ("config.yml", "domain.yml", "endpoints.yml", "credentials.yml"):
        shutil.copy2(REPO / name, dst / name)
    (dst / "tests" / "nlu").mkdir(parents=True)
    shutil.copy2(REPO / "tests" / "nlu" / "heldout.yml", dst / "tests" / "nlu" / "heldout.yml")
    model = newest_model(REPO / "models")
    if model is None:
        pytest.fail("no trained model: run `make train` (make test does it first)")
    (dst / "models").mkdir()
    shutil.copy2(model, dst / "models" / model.name)
    return dst


def _checkout_untouched(since: float) -> None:
    """Nothing of this test reached the checkout (other people may edit it meanwhile)."""
    faq = REPO / "nlu_data" / "nlu" / "faq.yml"
    assert not faq.exists() or QUESTION not in faq.read_text("utf-8")
    for folder in (REPO / "models", REPO / "var" / "model-candidates"):
        new = [p.name for p in folder.glob("*candidate*") if p.stat().st_mtime >= since]
        assert not new, f"a candidate model was written to the checkout: {new}"


async def _wait_for(page: Page, expression: str, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if await page.eval(expression):
                return
        except Exception:  # the page is reloading itself
            pass
        await asyncio.sleep(1)
    raise AssertionError(f"{what}: not within {timeout:.0f} s; page: {await page.text()}")


async def _ask(page: Page, text: str) -> str:
    """Type `text` in the simulator as a farmer and return the bot's next bubble."""
    before = await page.count(".row.bot")
    await page.type("#text", text)
    await page.click("#send")
    await _wait_for(page, f"document.querySelectorAll('.row.bot').length > {before}", 60, text)
    return str(
        await page.eval(
            "[...document.querySelectorAll('.row.bot .bubble')].pop().innerText",
        )
    )


async def _farmer(browser: Browser, base: str, openid: str) -> Page:
    """The simulator as farmer `openid` (typed into its openid field, as a tester would)."""
    page = await browser.new_page(PHONE, mobile=True)
    assert await page.goto(base + "/sim") == 200
    await page.click("#openid")
    for kind in ("keyDown", "keyUp"):  # Ctrl+A: the random openid is replaced as typed over
        await page.send(
            "Input.dispatchKeyEvent",
            {"type": kind, "key": "a", "code": "KeyA", "windowsVirtualKeyCode": 65,
             "modifiers": 2, "commands": ["selectAll"] if kind == "keyDown" else []},
        )  # fmt: skip
    await page.send("Input.insertText", {"text": openid})
    await page.click("#text")  # leaving the field commits it (its change event)
    assert await page.value("#openid") == openid
    return page


async def test_faq_added_retrained_and_answered_in_the_simulator(
    browser: Browser, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    test_started = time.time()
    copy = _product_copy(tmp_path / "ketepai")
    url = f"sqlite:///{tmp_path}/ketepai.db"
    db.upgrade(url)
    engine = db.make_engine(url)
    sessions = db.make_sessionmaker(engine)
    monkeypatch.setattr(
        passwords, "hash_password", functools.partial(passwords.hash_password, n=2**10)
    )
    with sessions() as s, s.begin():
        roster.add_account(session=s, username="admin-sx", password=PASSWORD, role="admin")

    ports = {"KTP_PORT": free_port(), "RASA_PORT": free_port(), "ACTION_PORT": free_port()}
    env = {
        **os.environ,
        **{k: str(v) for k, v in ports.items()},
        "DATABASE_URL": url,
        "KTP_RASA_TRACKER_DB": str(tmp_path / "trackers.db"),
        "KTP_SIMULATOR": "1",
        "KTP_SESSION_SECRET": "browser-test-session-secret",
        # The acceptance rule is tested in tests/test_model_update.py and by the slow
        # worse-training-set test. Here a retrain with 3 FAQ wordings moves a few held-out
        # messages either way (measured in CI: one of 6 `inform` flipped, and the default rule
        # refused the model), and that noise must not decide whether the loop works.
        "KTP_MODEL_MAX_DROP_F1": "0.05",
        "KTP_MODEL_MAX_DROP_ACCURACY": "0.05",
        "KTP_MODEL_MAX_DROP_CROP_F1": "0.05",
        "KTP_MODEL_MAX_DROP_RECALL": "0.5",
    }
    base = f"http://127.0.0.1:{ports['KTP_PORT']}"
    with running_stack(env, ports["KTP_PORT"], tmp_path / "run.log", cwd=copy):
        # Before the FAQ: a question naming no crop gets a question back, not the card.
        farmer = await _farmer(browser, base, "faq-farmer-before")
        before = await _ask(farmer, FARMER_SAYS)
        assert "授粉" not in before, before

        # The admin adds the FAQ through the page.
        admin = await browser.new_page(DESKTOP, mobile=False)
        assert await admin.goto(base + "/console/login") == 200
        await admin.type("#username", "admin-sx")
        await admin.type("#password", PASSWORD)
        assert await admin.click_and_wait("#login") == 200
        assert await admin.goto(base + "/admin/faq") == 200
        await admin.type("#faq-question", QUESTION)
        await admin.type("#faq-variants", "\n".join(VARIANTS))
        await admin.type("#faq-card", CARD)
        assert await admin.click_and_wait("#add-faq") == 200
        assert "3 个问法" in await admin.text("#notice")
        faqs = await admin.text("#faqs")
        assert "猕猴桃 · 授粉" in faqs and "栽培管理" in faqs and FARMER_SAYS not in faqs
        await shot(admin, "admin-faq-added")
        written = yaml.safe_load((copy / "nlu_data" / "nlu" / "faq.yml").read_text("utf-8"))
        (block,) = written["nlu"]
        assert block["intent"] == "ask_cultivation"
        assert {ln[2:] for ln in block["examples"].splitlines()} == {QUESTION, *VARIANTS}

        # 「重新训练」 on /admin/model, then wait until the page says the new model is live.
        assert await admin.click_and_wait("#to-model") == 200
        old_model = await admin.text("#current-model")
        assert old_model.endswith(".tar.gz"), old_model
        started = time.monotonic()
        assert await admin.click_and_wait("#retrain") == 200
        assert "已开始训练" in await admin.text("#notice")
        await _wait_for(
            admin,
            "['done','refused','failed'].includes("
            "(document.querySelector('#phase') || {dataset: {}}).dataset.phase)",
            TRAINED_WITHIN_S,
            "the model update",
        )
        took = round(time.monotonic() - started)
        await asyncio.sleep(3)  # the page reloads itself once the update is over
        await admin.goto(base + "/admin/model")
        phase = await admin.eval("document.querySelector('#phase').dataset.phase")
        status = await admin.text("#status")
        print(f"model update through /admin/model: {took} s ({phase})")
        await shot(admin, "admin-model-retrained")
        assert phase == "done", status
        assert "已启用新模型" in status
        new_model = await admin.text("#current-model")
        assert new_model != old_model and new_model.endswith(".tar.gz")
        assert (copy / "models" / new_model).exists()
        assert "启用" in await admin.text("#history")

        # A farmer types a wording the admin never entered: the FAQ's card answers.
        farmer = await _farmer(browser, base, "faq-farmer-after")
        answer = await _ask(farmer, FARMER_SAYS)
        await shot(farmer, "sim-faq-answer")
        assert "【猕猴桃 · 授粉】" in answer, answer
        assert not admin.console_errors and not farmer.console_errors

    with sessions() as s:
        rows = s.execute(
            select(Message.direction, Message.intent, Message.source)
            .where(Message.openid == "faq-farmer-after")
            .order_by(Message.id)
        ).all()
    engine.dispose()
    # The retrained model sent the new wording to the answer action; the FAQ's card answered.
    assert [tuple(r) for r in rows] == [
        ("in", "ask_cultivation", None),
        ("out", None, f"kb:{CARD}"),
    ], rows
    _checkout_untouched(test_started)
