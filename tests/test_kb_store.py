"""Cards in the database (SQLite and PostgreSQL): idempotent load, import, live refresh."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.engine import Engine

from bot import db, kb_live
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
    kb.current()  # sees the change and re-indexes in the background
    assert kb.settle(timeout=60)
    best = kb.current().retriever.search(text="枝干流红水", crop="猕猴桃", pest=None, category=None)
    assert best.best is not None and best.best.card.id == "kiwi-canker"
    engine.dispose()


def test_the_rebuild_is_off_the_request_path(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a new index is built, questions are answered at once from the old one; the new
    index is swapped in whole when ready; a failed build keeps the old index."""
    db.upgrade(sqlite_url)
    engine = db.make_engine(sqlite_url)
    sessions = db.make_sessionmaker(engine)
    with sessions() as s, s.begin():
        load_curated(s)
        s.execute(update(KbCard).where(KbCard.id == "kiwi-canker").values(status="draft"))
    kb = LiveKnowledge(sqlite_url, check_every_s=0.0)
    old = kb.current()  # the first index is built on the caller's thread: nothing to answer yet
    assert old.from_db and "kiwi-canker" not in {c.id for c in old.retriever.cards}

    gate, started, builds = threading.Event(), threading.Event(), []
    real = kb_live.Retriever

    class SlowRetriever(real):  # type: ignore[misc, valid-type]
        def __init__(self, *args: object, **kw: object) -> None:
            builds.append(threading.current_thread().name)
            started.set()
            assert gate.wait(30), "test gate never opened"
            super().__init__(*args, **kw)

    monkeypatch.setattr(kb_live, "Retriever", SlowRetriever)
    with sessions() as s, s.begin():
        s.execute(
            update(KbCard)
            .where(KbCard.id == "kiwi-canker")
            .values(status="published", updated_at=utcnow())
        )
    t0 = time.perf_counter()
    during = [kb.current() for _ in range(20)]
    assert started.wait(10)
    during += [kb.current() for _ in range(20)]
    assert time.perf_counter() - t0 < 1.0  # nobody waited for the build
    assert all(s is old for s in during)
    hit = during[-1].retriever.search(text="猕猴桃叶子上有褐色斑点", crop="猕猴桃", pest=None,
                                      category="disease").best  # fmt: skip
    assert hit is not None and hit.card.id == "kiwi-brown-spot"  # the old index still answers
    assert builds == ["kb-rebuild"]  # one background build, however many requests came
    gate.set()
    assert kb.settle(timeout=60)
    new = kb.current()
    assert new is not old and new.signature != old.signature
    assert "kiwi-canker" in {c.id for c in new.retriever.cards}

    class BrokenRetriever(real):  # type: ignore[misc, valid-type]
        def __init__(self, *args: object, **kw: object) -> None:
            raise MemoryError("no room for the index")

    monkeypatch.setattr(kb_live, "Retriever", BrokenRetriever)
    with sessions() as s, s.begin():
        s.execute(update(KbCard).where(KbCard.id == "kiwi-canker").values(updated_at=utcnow()))
    assert kb.current() is new  # starts the (failing) rebuild
    kb.check_every_s = 3600.0  # no further check until the test says so
    assert kb.settle(timeout=60)
    assert kb.current() is new  # the failed build left the working index in place
    monkeypatch.setattr(kb_live, "Retriever", real)
    kb.check_every_s = 0.0
    assert kb.current() is new  # the next check tries again...
    assert kb.settle(timeout=60)
    assert kb.current() is not new  # ...and this time it worked
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
