"""bot/media.py: downloads are never stuck, on both databases."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy import select
from sqlalchemy.engine import Engine

from bot import db, media, records
from bot.models import MediaFile, Message
from bot.records import InboundRecord
from bot.wechat_client import Media


class FakeWeChat:
    """get_media that fails the first `fail` calls with `error`, then returns a JPEG."""

    def __init__(self, fail: int = 0, error: Exception | None = None) -> None:
        self.fail, self.error, self.calls = fail, error, 0

    async def get_media(self, media_id: str) -> Media:
        self.calls += 1
        if self.calls <= self.fail:
            assert self.error is not None
            raise self.error
        return Media(content=b"\xff\xd8jpeg-of-" + media_id.encode(), content_type="image/jpeg")


def _photo(engine: Engine, media_id: str = "MEDIA1") -> int:
    sessions = db.make_sessionmaker(engine)
    with sessions() as session, session.begin():
        rec = InboundRecord(
            dedupe_key=f"k-{media_id}",
            openid="farmer-m",
            wechat_msg_id=media_id,
            msg_type="image",
            text=None,
            received_at=records.utcnow(),
        )
        msg_id = records.record_exchange(session, rec, [])
        msg = session.get(Message, msg_id)
        assert msg is not None
        row = media.register(session, msg, "image", media_id)
        session.flush()
        return int(row.id)


def _row(engine: Engine, row_id: int) -> MediaFile:
    with db.make_sessionmaker(engine)() as session:
        row = session.execute(select(MediaFile).where(MediaFile.id == row_id)).scalar_one()
        session.expunge(row)
        return row


async def test_a_network_error_leaves_the_photo_pending_then_it_is_stored(
    engine: Engine, tmp_path: Path
) -> None:
    row_id = _photo(engine)
    wechat: Any = FakeWeChat(fail=1, error=aiohttp.ClientConnectionError("reset by peer"))
    fetcher = media.MediaFetcher(db.make_sessionmaker(engine), wechat, tmp_path)
    assert await fetcher.run_once() == 1
    row = _row(engine, row_id)
    assert (row.status, row.attempts) == ("pending", 1) and "reset by peer" in row.error
    with db.make_sessionmaker(engine)() as session, session.begin():  # retry delay passed
        session.get(MediaFile, row_id).stored_at = records.utcnow() - media.RETRY_AFTER * 2
    assert await fetcher.run_once() == 1
    row = _row(engine, row_id)
    assert row.status == "stored" and (tmp_path / row.path).read_bytes().endswith(b"MEDIA1")


async def test_a_download_abandoned_by_a_dead_worker_is_taken_again(
    engine: Engine, tmp_path: Path
) -> None:
    row_id = _photo(engine, "MEDIA2")
    sessions = db.make_sessionmaker(engine)
    with sessions() as session, session.begin():  # a worker claimed it, then died
        row = session.get(MediaFile, row_id)
        row.status, row.stored_at = "fetching", records.utcnow() - timedelta(seconds=5)
    fetcher = media.MediaFetcher(sessions, FakeWeChat(), tmp_path)  # type: ignore[arg-type]
    assert await fetcher.run_once() == 0  # recent: that worker may still be downloading
    with sessions() as session, session.begin():
        session.get(MediaFile, row_id).stored_at = records.utcnow() - media.FETCH_STALE * 2
    assert await fetcher.run_once() == 1
    assert _row(engine, row_id).status == "stored"
