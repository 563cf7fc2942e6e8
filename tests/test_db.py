"""The database layer on SQLite and on PostgreSQL: migrations and the service-record repository."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, inspect, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

import bot.admin_models  # model switches and FAQ entries are in the metadata too
import bot.handoff_models  # the handoff tables are in the metadata too
import bot.kb_models  # noqa: F401  (the knowledge-base tables are in the metadata too)
from bot import db, records
from bot.models import Conversation, Message, metadata
from bot.records import InboundRecord, ReplyRecord


def inbound(key: str = "m1", openid: str = "farmer", **kw: object) -> InboundRecord:
    values: dict = {
        "openid": openid,
        "dedupe_key": key,
        "msg_type": "text",
        "received_at": records.utcnow(),
        "wechat_msg_id": key,
        "text": "猕猴桃叶子上有褐色斑点怎么办",
        "intent": "ask_disease",
        "confidence": 0.91,
        "entities": [{"entity": "crop", "value": "猕猴桃"}],
        "nlu_ms": 40,
        "total_ms": 55,
    }
    values.update(kw)
    return InboundRecord(**values)


def test_migrations_match_the_models(engine: Engine) -> None:
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []
    assert {"conversations", "messages", "alembic_version"} <= set(
        inspect(engine).get_table_names()
    )


def test_upgrade_twice_is_harmless(any_db_url: str) -> None:
    db.upgrade(any_db_url)
    db.upgrade(any_db_url)


def test_exchange_is_written_whole(engine: Engine) -> None:
    Session = db.make_sessionmaker(engine)
    with Session() as session, session.begin():
        msg_id = records.record_exchange(
            session, inbound(), [ReplyRecord("【猕猴桃 · 褐斑病】...", "kb:kiwi-brown-spot")]
        )
    with Session() as session:
        rows = records.messages_of(session, "farmer")
        conv = session.execute(select(Conversation)).scalar_one()
    assert [r.direction for r in rows] == ["in", "out"]
    assert rows[0].id == msg_id and rows[0].entities == [{"entity": "crop", "value": "猕猴桃"}]
    assert rows[1].reply_to_id == msg_id and rows[1].source == "kb:kiwi-brown-spot"
    assert (conv.category, conv.crop) == ("disease", "猕猴桃")


def test_a_failed_transaction_leaves_nothing_half_written(engine: Engine) -> None:
    Session = db.make_sessionmaker(engine)
    with Session() as session, session.begin():
        records.record_exchange(session, inbound("dup"), [ReplyRecord("a", "bot")])
    with pytest.raises(IntegrityError):
        with Session() as session, session.begin():
            # Same MsgId again: the unique key refuses it, and its reply goes with it.
            records.record_exchange(session, inbound("dup"), [ReplyRecord("b", "bot")])
    with Session() as session:
        assert session.execute(select(func.count(Message.id))).scalar_one() == 2
        assert session.execute(select(func.count(Conversation.id))).scalar_one() == 1


def test_retry_finds_the_recorded_reply(engine: Engine) -> None:
    Session = db.make_sessionmaker(engine)
    with Session() as session, session.begin():
        records.record_exchange(session, inbound("k1"), [ReplyRecord("answer", "bot")])
    with Session() as session:
        found = records.find_inbound(session, "k1")
        assert found is not None
        assert records.passive_reply_of(session, found.id) == "answer"
        assert records.find_inbound(session, "nope") is None


def test_silence_starts_a_new_service_record(engine: Engine) -> None:
    Session = db.make_sessionmaker(engine)
    long_ago = records.utcnow() - records.CONVERSATION_IDLE - timedelta(minutes=1)
    with Session() as session, session.begin():
        records.record_exchange(session, inbound("old", received_at=long_ago), [])
        session.execute(select(Conversation)).scalar_one().last_activity_at = long_ago
    with Session() as session, session.begin():
        records.record_exchange(session, inbound("new"), [])
    with Session() as session, session.begin():
        records.record_exchange(session, inbound("newer"), [])
    with Session() as session:
        convs = session.execute(select(Conversation).order_by(Conversation.id)).scalars().all()
        assert [len(c.messages) for c in convs] == [1, 2]


@pytest.mark.parametrize(("setting", "expected"), [(None, 1), ("FULL", 2), ("normal", 1)])
def test_sqlite_runs_wal_with_the_chosen_synchronous(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, setting: str | None, expected: int
) -> None:
    if setting is None:
        monkeypatch.delenv("KTP_SQLITE_SYNCHRONOUS", raising=False)
    else:
        monkeypatch.setenv("KTP_SQLITE_SYNCHRONOUS", setting)
    engine = db.make_engine(f"sqlite:///{tmp_path}/s.db")
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA synchronous")).scalar() == expected  # 1 NORMAL, 2 FULL
    engine.dispose()


def test_a_wrong_synchronous_setting_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KTP_SQLITE_SYNCHRONOUS", "OFF")
    with pytest.raises(ValueError, match="FULL or NORMAL"):
        db.make_engine("sqlite:///:memory:")
