"""Cards in the database (SQLite and PostgreSQL): idempotent load, import, live refresh."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.engine import Engine

from bot import db
from bot.kb_import import import_pestdb, measure_kind
from bot.kb_live import LiveKnowledge
from bot.kb_models import KbCard
from bot.kb_sqldump import parse_values
from bot.kb_store import load_curated, utcnow

DUMPS = Path(__file__).resolve().parents[2] / "shared" / "data" / "reference" / "dasinong"


def test_mysql_escapes_are_read() -> None:
    sql = r"(1,'it\'s','a\\b\nc',NULL,2.5),(2,'x''y','',0,-3);"
    assert list(parse_values(sql)) == [(1, "it's", "a\\b\nc", None, 2.5), (2, "x'y", "", 0, -3)]


def test_measure_kinds_follow_the_dump_headings() -> None:
    assert measure_kind("生物防治：释放赤眼蜂", 0) == "biological"
    assert measure_kind("物理防治。灯光诱杀", 0) == "physical"
    assert measure_kind("化学防治：喷药", 0) == "chemical"
    assert measure_kind("清除病残体", 1) == "chemical"
    assert measure_kind("清除病残体", 0) == "cultural"


def test_curated_load_is_idempotent_and_retires_removed_cards(engine: Engine) -> None:
    sessions = db.make_sessionmaker(engine)
    with sessions() as s, s.begin():
        first = load_curated(s)
    with sessions() as s, s.begin():
        s.add(KbCard(id="gone", crops=["梨"], category="pest", topic="x", aliases=[], summary="x",
                     symptoms="", cause="", control={}, season="", region="", source="t",
                     reviewer="", reviewed="", status="published", origin="curated", flags=[],
                     content_hash="h", helpful=0, not_helpful=0, created_at=utcnow(),
                     updated_at=utcnow()))  # fmt: skip
    with sessions() as s, s.begin():
        second = load_curated(s)
    assert first.inserted >= 190 and second.inserted == 0 and second.updated == 0
    assert second.retired == 1
    with sessions() as s:
        assert s.get(KbCard, "gone").status == "retired"
        assert s.execute(select(func.count(KbCard.id))).scalar_one() == first.inserted + 1


def test_a_newly_published_card_is_answered_without_a_restart(any_db_url: str) -> None:
    engine = db.make_engine(any_db_url)
    sessions = db.make_sessionmaker(engine)
    with sessions() as s, s.begin():
        load_curated(s)
        s.execute(update(KbCard).where(KbCard.id == "kiwi-canker").values(status="draft"))
    kb = LiveKnowledge(any_db_url, check_every_s=0.0)
    ids = {c.id for c in kb.current().retriever.cards}
    assert "kiwi-canker" not in ids and "kiwi-brown-spot" in ids
    with sessions() as s, s.begin():
        s.execute(
            update(KbCard)
            .where(KbCard.id == "kiwi-canker")
            .values(status="published", updated_at=utcnow())
        )
    best = kb.current().retriever.search(text="枝干流红水", crop="猕猴桃", pest=None, category=None)
    assert best.best is not None and best.best.card.id == "kiwi-canker"
    engine.dispose()


@pytest.mark.skipif(not DUMPS.is_dir(), reason="reference dumps not present")
def test_import_of_the_reference_database(sqlite_url: str) -> None:
    db.upgrade(sqlite_url)
    engine = db.make_engine(sqlite_url)
    sessions = db.make_sessionmaker(engine)
    args = (DUMPS / "jsp_db_pestdisaster.sql", DUMPS / "jsp_db_solution.sql")
    with sessions() as s, s.begin():
        first = import_pestdb(s, *args, publish=True, progress=False)
    with sessions() as s, s.begin():
        again = import_pestdb(s, *args, publish=True, progress=False)
    assert first.cards == 3523 and first.counts.inserted == 3523
    assert again.counts.inserted == 0 and again.counts.unchanged == 3523
    assert first.unsafe > 100 and first.published > 2500
    with sessions() as s:
        assert s.execute(select(func.count(KbCard.id))).scalar_one() == 3523
        rows = s.execute(select(KbCard).where(KbCard.status == "published")).scalars().all()
        assert all("unreviewed" in r.flags and "dasinong" in r.source for r in rows)
        assert not any(f.startswith("unsafe") for r in rows for f in r.flags)
        # A record whose measures recommend 甲胺磷 (banned) stays a flagged draft.
        unsafe = [r for r in s.execute(select(KbCard)).scalars() if "甲胺磷" in str(r.control)]
        flagged = [r for r in unsafe if any("recommends 甲胺磷" in f for f in r.flags)]
        assert flagged and all(r.status == "draft" for r in flagged)
    engine.dispose()
