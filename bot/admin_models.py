"""Database tables of the admin pages: model switches (who, when, figures) and FAQ entries."""

from __future__ import annotations

from sqlalchemy import JSON, Boolean, Column, DateTime, Integer, String, Text

from bot.models import Base


class ModelSwitch(Base):
    """One model update decision: switched, refused, restored or failed, with its figures."""

    __tablename__ = "model_switches"

    id = Column(Integer, primary_key=True)
    at = Column(DateTime(timezone=True), nullable=False, index=True)
    actor = Column(String(96), nullable=False)  # "account:admin1"
    # "switch" (accepted and loaded), "refused", "restore", "failed"
    action = Column(String(16), nullable=False)
    from_model = Column(String(255))  # the model Rasa had loaded (file path)
    to_model = Column(String(255))  # the candidate or the restored model (file path)
    # {"current": Figures, "candidate": Figures, "reasons": [...]} (bot.model_eval)
    figures = Column(JSON)
    note = Column(Text)


class FaqEntry(Base):
    """An FAQ: question variants answered with one knowledge-base card."""

    __tablename__ = "faq_entries"

    id = Column(Integer, primary_key=True)
    card_id = Column(String(96), nullable=False, index=True)
    intent = Column(String(64), nullable=False)  # the consultation intent the variants train
    variants = Column(JSON, nullable=False)  # ["猕猴桃溃疡病怎么治", ...]
    active = Column(Boolean, nullable=False, default=True)
    created_by = Column(String(96), nullable=False)
    created_at = Column(DateTime(timezone=True), nullable=False)
