"""Test doubles and roster set-up shared by the handoff tests."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import pytest
from cryptography.fernet import Fernet
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from bot import db, roster

DATA_KEY = Fernet.generate_key().decode()


@dataclass
class RecordingSender:
    """A Sender that records every push; `refuse` makes it answer like a closed window."""

    sent: list[tuple[str, str, str]] = field(default_factory=list)
    refuse: str | None = None
    # (openid, template role, data, path): the template messages sent when a push is refused
    templates: list[tuple[str, str, dict[str, str], str | None]] = field(default_factory=list)
    refuse_for: set[str] = field(default_factory=set)  # refuse only these openids

    def __call__(self, openid: str, text: str, *, session: Session, kind: str) -> str:
        if self.refuse and (not self.refuse_for or openid in self.refuse_for):
            return self.refuse
        self.sent.append((openid, text, kind))
        return "queued"

    def template(
        self,
        openid: str,
        template: str,
        data: Mapping[str, str],
        *,
        session: Session,
        path: str | None = None,
        kind: str = "notice",
    ) -> str:
        self.templates.append((openid, template, dict(data), path))
        return "template"

    def to(self, openid: str) -> list[str]:
        """Texts pushed to `openid`, oldest first."""
        return [text for who, text, _ in self.sent if who == openid]


@pytest.fixture(autouse=True)
def data_key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("KTP_DATA_KEY", DATA_KEY)
    return DATA_KEY


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    """One session for a test; each step commits as the gateway would."""
    with db.make_sessionmaker(engine)() as s:
        yield s


@pytest.fixture
def sender() -> RecordingSender:
    return RecordingSender()


def seed_roster(session: Session) -> None:
    """Two kiwifruit people and a pig vet in 周至县, a kiwifruit person in 眉县, one off duty."""
    add = roster.add_commissioner
    add(
        session=session,
        name="王猕",
        openid="c-kiwi",
        county="周至县",
        specialties=["猕猴桃"],
        on_duty=True,
    )
    add(
        session=session,
        name="李果",
        openid="c-fruit",
        county="周至县",
        specialties=["果树"],
        on_duty=True,
    )
    add(
        session=session,
        name="张猪",
        openid="c-pig",
        county="周至县",
        specialties=["畜禽"],
        on_duty=True,
    )
    add(
        session=session,
        name="赵眉",
        openid="c-mei",
        county="眉县",
        specialties=["猕猴桃"],
        on_duty=True,
    )
    add(
        session=session,
        name="钱休",
        openid="c-off",
        county="周至县",
        specialties=["猕猴桃"],
        on_duty=False,
    )
    session.commit()
