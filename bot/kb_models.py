"""Database tables of the knowledge base: cards and the farmers' feedback on them.

Cards live in the database (curated ones loaded from `kb/cards/*.yml`, others imported), so the
running bot answers from newly published cards without a restart.
"""

from __future__ import annotations

from sqlalchemy import JSON, Boolean, Column, DateTime, ForeignKey, Index, Integer, String, Text

from bot.models import Base

ORIGIN_CURATED = "curated"
STATUSES = ("draft", "published", "retired")


class KbCard(Base):
    """One knowledge-base card: a problem of one crop (or several), and what to do about it."""

    __tablename__ = "kb_cards"
    __table_args__ = (Index("ix_kb_cards_status_updated", "status", "updated_at"),)

    id = Column(String(96), primary_key=True)  # stable slug: "kiwi-brown-spot", "pestdb-123"
    crops = Column(JSON, nullable=False)  # canonical crop names, e.g. ["猕猴桃"]
    category = Column(String(24), nullable=False)  # one of knowledge.CATEGORIES
    topic = Column(String(96), nullable=False)
    aliases = Column(JSON, nullable=False)
    summary = Column(Text, nullable=False)
    symptoms = Column(Text, nullable=False, default="")
    cause = Column(Text, nullable=False, default="")
    # {"cultural": [...], "physical": [...], "biological": [...], "chemical": [...]}
    control = Column(JSON, nullable=False)
    season = Column(Text, nullable=False, default="")
    region = Column(Text, nullable=False, default="")
    source = Column(Text, nullable=False, default="")
    reviewer = Column(String(96), nullable=False, default="")
    reviewed = Column(String(10), nullable=False, default="")  # ISO date of the review
    status = Column(String(12), nullable=False, default="draft")
    # "curated" (kb/cards), or the import it came from ("pestdb:dasinong")
    origin = Column(String(48), nullable=False, default=ORIGIN_CURATED)
    origin_ref = Column(String(96))  # the record in the origin (e.g. pestdisasterid)
    # Why a card needs a person: "unreviewed", "unsafe: ..." (safety check refusals)
    flags = Column(JSON, nullable=False)
    content_hash = Column(String(64), nullable=False)  # unchanged content keeps updated_at
    helpful = Column(Integer, nullable=False, default=0)
    not_helpful = Column(Integer, nullable=False, default=0)
    created_at = Column(DateTime(timezone=True), nullable=False)
    updated_at = Column(DateTime(timezone=True), nullable=False)


class KbFeedback(Base):
    """A farmer's answer to 「这个回答有帮助吗？」 about one card."""

    __tablename__ = "kb_feedback"

    id = Column(Integer, primary_key=True)
    card_id = Column(ForeignKey("kb_cards.id"), nullable=False, index=True)
    sender = Column(String(64), nullable=False)  # the farmer's openid (Rasa sender id)
    helpful = Column(Boolean, nullable=False)
    text = Column(Text)  # what the farmer wrote ("1", "没用")
    created_at = Column(DateTime(timezone=True), nullable=False)
