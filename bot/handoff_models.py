"""Database tables of the handoff: commissioners, console accounts, cases and their events.

Cases and their events are the evidence a county bureau uses to assess its commissioners, so every
transition is a timestamped, attributed row, and so is every view of a case (the audit trail).
"""

from __future__ import annotations

from sqlalchemy import JSON, Boolean, Column, DateTime, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import relationship

from bot.models import Base

# waiting → assigned → answered → (visit_scheduled → visited) → closed; closed → reopened.
CASE_STATUSES = ("waiting", "assigned", "answered", "visit_scheduled", "visited", "closed")
OPEN_STATUSES = CASE_STATUSES[:-1]
ROLES = ("commissioner", "admin")


class Commissioner(Base):
    """A 科技特派员 on the county roster, bound to the Official Account by their openid."""

    __tablename__ = "commissioners"

    id = Column(Integer, primary_key=True)
    name = Column(String(40), nullable=False)
    openid = Column(String(64), nullable=False, unique=True)
    county = Column(String(40), nullable=False, index=True)
    # Canonical crops or industries/groups: ["猕猴桃", "果树"], ["生猪", "畜禽"], ["植保"].
    specialties = Column(JSON, nullable=False)
    on_duty = Column(Boolean, nullable=False, default=False)
    # ISO weekdays (1 = Monday) on duty; null means every day while on_duty is set.
    schedule = Column(JSON)
    active = Column(Boolean, nullable=False, default=True)
    created_at = Column(DateTime(timezone=True), nullable=False)


class Account(Base):
    """A console login: a commissioner, or an admin of a county (of the province if no county)."""

    __tablename__ = "accounts"

    id = Column(Integer, primary_key=True)
    username = Column(String(64), nullable=False, unique=True)
    password_hash = Column(String(255), nullable=False)  # bot.passwords (scrypt)
    role = Column(String(16), nullable=False)  # one of ROLES
    county = Column(String(40))  # null for a province-level admin
    commissioner_id = Column(ForeignKey("commissioners.id"), index=True)
    # An admin's own WeChat openid: pushed (or sent a template message) about cases that nobody
    # on duty can take. A commissioner is reached through their roster entry instead.
    wechat_openid = Column(String(64), index=True)
    active = Column(Boolean, nullable=False, default=True)
    created_at = Column(DateTime(timezone=True), nullable=False)
    last_login_at = Column(DateTime(timezone=True))

    commissioner = relationship("Commissioner", lazy="joined")


class Case(Base):
    """A farmer's question handed to a person, with what the bot already knew."""

    __tablename__ = "cases"
    __table_args__ = (Index("ix_cases_status_county", "status", "county"),)

    id = Column(Integer, primary_key=True)
    farmer_openid = Column(String(64), nullable=False, index=True)
    conversation_id = Column(ForeignKey("conversations.id"), index=True)
    crop = Column(String(40))
    category = Column(String(24))  # one of knowledge.CATEGORIES, if known
    symptoms = Column(Text)
    # [{"media_id": ..., "kind": "image", "media_file_id": 12?}] as the gateway stored them
    media = Column(JSON, nullable=False)
    county = Column(String(40))  # coarse location only (PIPL): county and township
    township = Column(String(40))
    phone_enc = Column(Text)  # Fernet token (bot.pii); never stored in clear
    # [{"dir": "in"|"out", "text": ..., "at": iso}] at the time of the handoff, then appended
    transcript = Column(JSON, nullable=False)
    status = Column(String(20), nullable=False, index=True)
    # The commissioner notified and waited for (status waiting), and everyone notified before.
    offered_to_id = Column(ForeignKey("commissioners.id"), index=True)
    offered_at = Column(DateTime(timezone=True))
    offered_ids = Column(JSON, nullable=False)
    escalation_level = Column(Integer, nullable=False, default=0)
    needs_admin = Column(Boolean, nullable=False, default=False)
    commissioner_id = Column(ForeignKey("commissioners.id"), index=True)  # who claimed it
    visit_when = Column(String(80))  # as the commissioner wrote it: 「明天上午」
    resolution = Column(Text)
    rating = Column(Integer)  # 1–5, the farmer's
    created_at = Column(DateTime(timezone=True), nullable=False)
    updated_at = Column(DateTime(timezone=True), nullable=False)
    claimed_at = Column(DateTime(timezone=True))
    first_reply_at = Column(DateTime(timezone=True))
    visited_at = Column(DateTime(timezone=True))
    closed_at = Column(DateTime(timezone=True))
    rated_at = Column(DateTime(timezone=True))

    commissioner = relationship("Commissioner", foreign_keys=[commissioner_id], lazy="joined")
    offered_to = relationship("Commissioner", foreign_keys=[offered_to_id], lazy="joined")


class CaseEvent(Base):
    """One attributed, timestamped thing that happened to a case, or a view of it (audit)."""

    __tablename__ = "case_events"

    id = Column(Integer, primary_key=True)
    case_id = Column(ForeignKey("cases.id"), index=True)  # null: not about one case (login)
    at = Column(DateTime(timezone=True), nullable=False, index=True)
    # "commissioner:3", "account:admin1", "farmer:<openid>", "system"
    actor = Column(String(96), nullable=False)
    # opened, offered, escalated, claimed, replied, farmer_message, visit_scheduled, visited,
    # closed, reopened, rated, viewed, viewed_phone, login, logout
    action = Column(String(32), nullable=False)
    from_status = Column(String(20))
    to_status = Column(String(20))
    detail = Column(Text)
