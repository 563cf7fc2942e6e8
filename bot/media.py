"""Farmers' photos and voice: downloaded at once into our own storage (MediaId lives 3 days).

The inbound message's transaction registers a `media_files` row (pending); the fetcher
downloads it through media/get, writes it under the media folder and marks it stored. A
failed download is retried on the next passes, up to MAX_ATTEMPTS, then marked failed.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from bot.models import MediaFile, Message
from bot.wechat_client import WeChatApi, WeChatError

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 5
RETRY_AFTER = timedelta(seconds=10)
# A row left "fetching" this long belonged to a worker that died mid-download: taken again.
FETCH_STALE = timedelta(seconds=120)
EXTENSIONS = {
    "image/jpeg": ".jpg",
    "image/png": ".png",
    "image/gif": ".gif",
    "audio/amr": ".amr",
    "audio/speex": ".speex",
    "audio/mpeg": ".mp3",
    "video/mp4": ".mp4",
}


def _now() -> datetime:
    return datetime.now(timezone.utc)


def register(session: Session, inbound: Message, kind: str, media_id: str) -> MediaFile:
    """Queue the download of a message's media, attached to the farmer's service record."""
    row = MediaFile(
        message_id=inbound.id,
        conversation_id=inbound.conversation_id,
        openid=inbound.openid,
        kind=kind,
        media_id=media_id,
        status="pending",
        attempts=0,
        created_at=_now(),
    )
    session.add(row)
    return row


class MediaFetcher:
    """Downloads pending media; one per process, woken on register and polling otherwise."""

    def __init__(
        self, sessions: sessionmaker, wechat: WeChatApi, folder: Path, *, poll_s: float = 5.0
    ) -> None:
        self._sessions = sessions
        self._wechat = wechat
        self.folder = folder
        self._poll = poll_s
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Media was registered: fetch now."""
        self._wake.set()

    async def run(self) -> None:
        """Fetch forever (until cancelled)."""
        while True:
            try:
                await self.run_once()
            except Exception:
                log.exception("media pass failed")
            try:
                await asyncio.wait_for(self._wake.wait(), self._poll)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()

    async def run_once(self) -> int:
        """Download every due pending file; return how many were tried."""
        claimed = await asyncio.to_thread(self._claim)
        await asyncio.gather(*(self._fetch(row_id, media_id) for row_id, media_id in claimed))
        return len(claimed)

    def _claim(self) -> list[tuple[int, str]]:
        now = _now()
        claimed: list[tuple[int, str]] = []
        with self._sessions() as session, session.begin():
            due = or_(
                MediaFile.status == "pending",
                and_(MediaFile.status == "fetching", MediaFile.stored_at < now - FETCH_STALE),
            )
            rows = session.execute(
                select(
                    MediaFile.id,
                    MediaFile.media_id,
                    MediaFile.attempts,
                    MediaFile.stored_at,
                    MediaFile.status,
                )
                .where(due)
                .order_by(MediaFile.id)
                .limit(50)
            ).all()
            for row_id, media_id, attempts, last_try, status in rows:
                # stored_at doubles as "last try" while pending, for the retry delay.
                if status == "pending" and attempts and last_try is not None:
                    last = last_try if last_try.tzinfo else last_try.replace(tzinfo=timezone.utc)
                    if now - last < RETRY_AFTER:
                        continue
                if status == "fetching":
                    log.warning("media %s: its download was abandoned; fetching again", row_id)
                result = session.execute(
                    update(MediaFile)
                    .where(MediaFile.id == row_id, MediaFile.status == status, due)
                    .values(status="fetching", stored_at=now)
                )
                if result.rowcount == 1:
                    claimed.append((int(row_id), str(media_id)))
        return claimed

    async def _fetch(self, row_id: int, media_id: str) -> None:
        try:
            media = await self._wechat.get_media(media_id)
        except WeChatError as exc:
            await asyncio.to_thread(self._failed, row_id, str(exc))
            return
        except Exception as exc:  # network trouble: never leave the row "fetching"
            await asyncio.to_thread(self._failed, row_id, f"{exc.__class__.__name__}: {exc}")
            return
        digest = hashlib.sha256(media.content).hexdigest()
        ext = EXTENSIONS.get(media.content_type, ".bin")
        relative = f"{_now():%Y-%m}/{row_id}-{digest[:12]}{ext}"
        await asyncio.to_thread(self._write, relative, media.content)

        def stored() -> None:
            with self._sessions() as session, session.begin():
                row = session.get(MediaFile, row_id)
                assert row is not None
                row.status, row.path, row.content_type = "stored", relative, media.content_type
                row.size, row.sha256, row.stored_at = len(media.content), digest, _now()
                row.attempts += 1
                row.error = None

        await asyncio.to_thread(stored)

    def _write(self, relative: str, content: bytes) -> None:
        path = self.folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".part")
        tmp.write_bytes(content)
        tmp.replace(path)  # never a half-written file under the final name

    def _failed(self, row_id: int, error: str) -> None:
        with self._sessions() as session, session.begin():
            row = session.get(MediaFile, row_id)
            assert row is not None
            row.attempts += 1
            row.error = error
            row.status = "failed" if row.attempts >= MAX_ATTEMPTS else "pending"
            log.warning("media %s download failed (%s): %s", row_id, row.attempts, error)
