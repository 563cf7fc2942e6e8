"""The handoff back end of the action server: the consultation form's request becomes a case.

`DbHandoffSink.submit()` opens a case with `bot.handoff.open_case` in one transaction (the phone
is encrypted by the core, the location kept to county/township, the service record's transcript
attached) and offers it to the right commissioner, whose push is queued on the gateway's durable
outbox. The engine is made on first use: importing this module does no I/O.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Mapping
from typing import Any

from dotenv import dotenv_values
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from actions import answers
from actions.handoff import HandoffRequest, Receipt

log = logging.getLogger(__name__)

NOT_A_PHOTO = {None, "", answers.NONE_GIVEN, answers.PHOTO_SENT, answers.PHOTO_LATER}
_PROVINCE = re.compile(r"^[\u4e00-\u9fff]{2,8}?(?:省|自治区)")
# A prefecture before its county (「汉中市城固县」); a county-level city stands alone (「兴平市」).
_PREFECTURE = re.compile(
    r"^[\u4e00-\u9fff]{2,6}?(?:市|州|地区|盟)(?=[\u4e00-\u9fff]+?(?:县|区|旗))"
)
_COUNTY = re.compile(r"^(?P<county>[\u4e00-\u9fff]{1,8}?(?:县|区|旗|市))")
_TOWNSHIP = re.compile(r"(?P<township>[\u4e00-\u9fff]{1,10}?(?:镇|乡|街道))")


def _environment() -> Mapping[str, str]:
    merged: dict[str, str] = {k: v for k, v in dotenv_values(".env").items() if v is not None}
    merged.update(os.environ)
    return merged


def split_location(text: str | None, counties: list[str]) -> tuple[str | None, str | None]:
    """(county, township) from the form's answer: 「周至县楼观镇」, 「周至」 (a roster county by its
    short name), 「眉县」; (None, None) when the farmer would not say."""
    if not text or text == answers.LOCATION_DECLINED:
        return None, None
    county: str | None = None
    # Longest names first, so that 「周至县」 wins over a county called 「周至」 if both exist.
    for name in sorted(counties, key=len, reverse=True):
        stem = re.sub(r"(?:县|区|旗|市)$", "", name)
        if name in text or (len(stem) >= 2 and stem in text):
            county = name
            break
    if county is None:
        m = _COUNTY.match(_PREFECTURE.sub("", _PROVINCE.sub("", text)))
        county = m.group("county") if m else None
    rest = text.split(county, 1)[-1] if county and county in text else text
    t = _TOWNSHIP.search(rest)
    return county, (t.group("township") if t else None)


class DbHandoffSink:
    """Opens a case for each handoff request (DATABASE_URL; KTP_DATA_KEY for the phone)."""

    def __init__(self, url: str | None = None) -> None:
        self._url = url
        self._engine: Engine | None = None
        self._sessions: sessionmaker | None = None
        self._lock = threading.Lock()

    def sessions(self) -> sessionmaker:
        """The session factory, made (with the engine) on first use."""
        with self._lock:
            if self._sessions is None:
                from bot import db, pii

                env = _environment()
                url = self._url or env.get("DATABASE_URL") or "sqlite:///var/ketepai.db"
                # Fail here rather than store a phone number we could not read back.
                pii.use_key(pii.data_key(env))
                self._engine = db.make_engine(url)
                self._sessions = db.make_sessionmaker(self._engine)
            return self._sessions

    def submit(self, request: HandoffRequest) -> Receipt:
        """Open (or add to) the farmer's case; the receipt carries 「#12」."""
        try:
            with self.sessions()() as session, session.begin():
                case_id = self._open(session, request)
        except Exception:
            # The request stays in the tracker (slot `handoff`); the farmer is told no more
            # than that, and the failure is in the log for the operator.
            log.exception("could not open a case for %s", request.sender_id)
            return Receipt(status="recorded")
        return Receipt(status="ticket", reference=f"#{case_id}")

    @staticmethod
    def _open(session: Session, request: HandoffRequest) -> int:
        from bot import handoff, roster
        from bot.handoff_push import outbox_sender
        from bot.models import Conversation

        conv = session.execute(
            select(Conversation)
            .where(Conversation.openid == request.sender_id)
            .order_by(Conversation.last_activity_at.desc())
            .limit(1)
        ).scalar_one_or_none()
        counties = sorted({c.county for c in roster.commissioners(session=session)})
        county, township = split_location(request.location, counties)
        media: list[dict[str, Any]] = []
        if request.photo not in NOT_A_PHOTO:
            media.append({"kind": "image", "media_id": request.photo})
        symptoms = request.problem
        if request.photo in (answers.PHOTO_SENT, answers.PHOTO_LATER):
            symptoms = f"{symptoms or ''}（照片：{request.photo}）".strip()
        case = handoff.open_case(
            request.sender_id,
            session=session,
            crop=request.crop or (conv.crop if conv is not None else None),
            category=conv.category if conv is not None else None,
            symptoms=symptoms,
            media=media,
            county=county,
            township=township,
            phone=request.phone if request.phone_consent else None,
            conversation_id=conv.id if conv is not None else None,
            sender=outbox_sender,
        )
        session.flush()
        return int(case.id)
