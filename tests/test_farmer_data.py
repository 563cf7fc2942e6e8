"""Farmers' records for admins: masked, county-scoped, audited; deletion on request keeps
anonymised counts (both databases); `ketepai farmer delete`."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy import func, select

from bot import admin, cli, console, db, farmer_data, pii
from bot.farmer_data import mask_text, short_openid
from bot.handoff_models import Case, CaseEvent
from bot.models import Conversation, MediaFile, Message
from tests.admin_helpers import T0
from tests.handoff_helpers import RecordingSender, data_key
from tests.test_admin_dashboard import sessions
from tests.test_console import login, open_window

__all__ = ["data_key", "sessions"]
PHONE = "13812345678"


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("我电话13812345678", "我电话138****5678"),
        ("打 138 1234 5678 找我", "打 138****5678 找我"),
        ("座机029-88886666", "座机029****6666"),  # the area code stays
        ("身份证61012319800101123X", "身份证610***************"),
        ("猕猴桃叶子黄了 3 天", "猕猴桃叶子黄了 3 天"),
        (None, ""),
    ],
)
def test_mask_text(text: str | None, masked: str) -> None:
    assert mask_text(text) == masked


def test_short_openid() -> None:
    assert short_openid("oAbCdEfGhIjK9Z1") == "oAbC…9Z1" and short_openid("deleted-ab") == "已删除"


@pytest.fixture
def media(tmp_path: Path) -> Path:
    return tmp_path / "media"


@pytest.fixture
async def client(aiohttp_client: Any, sessions: Any, media: Path) -> TestClient:
    with sessions() as s, s.begin():  # farmer fa: a phone number, a photo, their number in text
        case = s.execute(select(Case).where(Case.farmer_openid == "fa")).scalar_one()
        case.phone_enc, case.township = pii.encrypt_phone(PHONE), "楼观镇"
        case.transcript = [{"dir": "in", "text": f"电话{PHONE}", "at": "x"}]
        msg = s.execute(select(Message).where(Message.openid == "fa")).scalars().first()
        msg.text, msg.entities = f"我的电话{PHONE}", [{"entity": "crop", "value": "猕猴桃"}]
        (media / "2026-11").mkdir(parents=True)
        (media / "2026-11" / "1-abc.jpg").write_bytes(b"jpg")
        s.add(
            MediaFile(message_id=msg.id, conversation_id=msg.conversation_id, openid="fa",
                      kind="image", media_id="M1", status="stored", path="2026-11/1-abc.jpg",
                      created_at=T0)
        )  # fmt: skip
    app = web.Application()
    console.setup(
        app,
        sessions=sessions,
        sender=RecordingSender(),
        window=open_window,
        secret=b"s" * 32,
        media_dir=lambda: media,
    )
    admin.setup(app)
    return await aiohttp_client(app)


def _conv_of(sessions: Any, openid: str) -> int:
    with sessions() as s:
        return int(s.execute(select(Conversation.id).where(Conversation.openid == openid)).scalar())


def _counts(sessions: Any) -> tuple[int, ...]:
    with sessions() as s:
        return tuple(
            s.execute(select(func.count()).select_from(t)).scalar_one()
            for t in (Message, Conversation, Case)
        )


async def test_an_admin_sees_masked_records_and_the_view_is_audited(
    client: TestClient, sessions: Any
) -> None:
    await login(client, "admin-zz")
    listing = await (await client.get("/admin/farmers")).text()
    conv = _conv_of(sessions, "fa")
    assert f'href="/admin/farmers/{conv}"' in listing
    assert f'href="/admin/farmers/{_conv_of(sessions, "fc")}"' not in listing  # 眉县
    page = await (await client.get(f"/admin/farmers/{conv}")).text()
    assert "138****5678" in page and PHONE not in page and "楼观镇" not in page
    assert (await client.get(f"/admin/farmers/{_conv_of(sessions, 'fc')}")).status == 404
    with sessions() as s:
        audit = s.execute(select(CaseEvent).where(CaseEvent.action == "viewed_conversation"))
        assert [e.actor for e in audit.scalars()] == ["account:admin-zz"]


async def test_deleting_a_farmer_keeps_counts_and_removes_personal_data(
    client: TestClient, sessions: Any, media: Path
) -> None:
    csrf = await login(client, "admin-prov")
    conv = _conv_of(sessions, "fa")
    before = _counts(sessions)
    url = f"/admin/farmers/{conv}/delete"
    assert (await client.post(url, data={"csrf": "wrong", "confirm": "删除"})).status == 403
    assert (await client.post(url, data={"csrf": csrf})).status == 400
    resp = await client.post(url, data={"csrf": csrf, "confirm": "删除"})
    assert resp.status == 200 and "已删除" in await resp.text()
    assert _counts(sessions) == before
    assert not (media / "2026-11" / "1-abc.jpg").exists()
    with sessions() as s:
        assert s.execute(select(Message).where(Message.openid == "fa")).first() is None
        case = s.get(Case, s.execute(select(Case.id).where(Case.id > 0)).scalar())
        cases = list(s.execute(select(Case).where(Case.farmer_openid.like("deleted-%"))).scalars())
        assert [(c.county, c.phone_enc, c.township, c.transcript) for c in cases] == [
            ("周至县", None, None, [])
        ]
        assert cases[0].rating == 5 and case is not None
        texts = s.execute(select(Message.text).where(Message.openid == cases[0].farmer_openid))
        assert all(t is None for t in texts.scalars())
        events = list(s.execute(select(CaseEvent)).scalars())
        assert not any("fa" == e.actor.removeprefix("farmer:") for e in events)
        (audit,) = [e for e in events if e.action == "farmer_deleted"]
        detail = (audit.detail or "").replace(cases[0].farmer_openid, "")
        assert audit.actor == "account:admin-prov" and "fa" not in detail
    page = await (await client.get(f"/admin/farmers/{conv}")).text()
    assert "已删除" in page and "猕猴桃" not in re.sub(r"<th>.*?</th>", "", page.split("<main>")[1])


def test_rasas_tracker_of_the_farmer_is_wiped(tmp_path: Path) -> None:
    from sqlalchemy import create_engine, text

    path = tmp_path / "trackers.db"
    assert farmer_data.wipe_rasa_tracker("f1", path) == 0  # no file yet
    engine = create_engine(f"sqlite:///{path}", future=True)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE events (id INTEGER PRIMARY KEY, sender_id TEXT, d TEXT)"))
        conn.execute(
            text("INSERT INTO events (sender_id, d) VALUES ('f1','a'),('f1','b'),('f2','c')")
        )
    assert farmer_data.wipe_rasa_tracker("f1", path) == 2
    with engine.connect() as conn:
        assert conn.execute(text("SELECT sender_id FROM events")).scalars().all() == ["f2"]
    engine.dispose()


def test_the_cli_deletes_a_farmer(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, capsys: Any, tmp_path: Path
) -> None:
    db.upgrade(sqlite_url)
    maker = db.make_sessionmaker(db.make_engine(sqlite_url))
    with maker() as s, s.begin():
        c = Conversation(openid="f9", started_at=T0, last_activity_at=T0)
        s.add(c)
        s.flush()
        s.add(Message(conversation_id=c.id, openid="f9", direction="in", msg_type="text",
                      text="电话13800001111", created_at=T0))  # fmt: skip
    monkeypatch.setenv("DATABASE_URL", sqlite_url)
    monkeypatch.setenv("KTP_MEDIA_DIR", str(tmp_path / "media"))
    assert cli.main(["farmer", "delete", "--openid", "f9"]) == 0
    assert "1 messages" in capsys.readouterr().out
    with maker() as s:
        (msg,) = s.execute(select(Message)).scalars()
        assert msg.text is None and msg.openid.startswith("deleted-")
