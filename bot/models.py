"""Database tables: service records (conversations and their messages).

A service record is the evidence a county science bureau uses to assess its commissioners, so
every inbound message and every reply is kept, attributed and timed.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeMeta, registry, relationship

# Stable constraint names, so Alembic migrations are the same on SQLite and PostgreSQL.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)
mapper_registry = registry(metadata=metadata)


class Base(metaclass=DeclarativeMeta):
    """Declarative base spelled out, so that type checkers see a class (SQLAlchemy 1.4)."""

    __abstract__ = True
    registry = mapper_registry
    metadata = mapper_registry.metadata
    __init__ = mapper_registry.constructor


class Conversation(Base):
    """A farmer's service record: the messages of one consultation, from first to last."""

    __tablename__ = "conversations"

    id = Column(Integer, primary_key=True)
    openid = Column(String(64), nullable=False, index=True)
    started_at = Column(DateTime(timezone=True), nullable=False)
    last_activity_at = Column(DateTime(timezone=True), nullable=False)
    # First consultation intent and crop seen, for reports.
    category = Column(String(40))
    crop = Column(String(40))

    messages = relationship(
        "Message", back_populates="conversation", order_by="Message.id", lazy="selectin"
    )


class Message(Base):
    """One inbound WeChat message or one reply to it (passive or pushed)."""

    __tablename__ = "messages"
    __table_args__ = (
        Index("ix_messages_openid_created", "openid", "created_at"),
        # The recovery passes (bot/resilience.py) look for unanswered messages every ~2 s.
        Index("ix_messages_status_created", "status", "created_at"),
    )

    id = Column(Integer, primary_key=True)
    conversation_id = Column(ForeignKey("conversations.id"), nullable=False, index=True)
    openid = Column(String(64), nullable=False)
    direction = Column(String(3), nullable=False)  # "in" | "out"
    # MsgId for messages, FromUserName:CreateTime for events: WeChat retries reuse it.
    dedupe_key = Column(String(96), unique=True)
    wechat_msg_id = Column(String(32))
    msg_type = Column(String(32), nullable=False)  # "event:unsubscribe" is 17 long
    text = Column(Text)
    intent = Column(String(64))
    confidence = Column(Float)
    entities = Column(JSON)
    # Outbound: where the answer came from ("kb:<card id>", "bot", "ack", "error").
    source = Column(String(96))
    channel = Column(String(8))  # outbound: "passive" | "push"
    # "answered", "acknowledged" (answer pushed later), "failed", "retried" (asked again),
    # "handed_over" (no answer came: a case was opened for a person)
    status = Column(String(16))
    reply_to_id = Column(ForeignKey("messages.id"), index=True)
    created_at = Column(DateTime(timezone=True), nullable=False)
    nlu_ms = Column(Integer)  # time spent in Rasa (NLU, dialogue and actions)
    total_ms = Column(Integer)  # from receipt to the reply leaving the gateway
    error = Column(Text)

    conversation = relationship("Conversation", back_populates="messages")


class OutboxItem(Base):
    """One customer-service push waiting to go, sent, or given up on (the durable outbox)."""

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_due", "status", "next_attempt_at"),)

    id = Column(Integer, primary_key=True)
    openid = Column(String(64), nullable=False, index=True)
    msgtype = Column(String(16), nullable=False)  # "text" (the only kind we push today)
    content = Column(Text, nullable=False)
    # "answer" (bot), "commissioner", "notice": who asked for the push, for reports.
    kind = Column(String(16), nullable=False)
    # The outbound service-record row this push delivers (its status follows the outbox).
    message_id = Column(ForeignKey("messages.id"), index=True)
    # "pending", "sending", "sent", "expired" (45015), "quota" (45047), "failed"
    status = Column(String(16), nullable=False)
    attempts = Column(Integer, nullable=False, default=0)
    next_attempt_at = Column(DateTime(timezone=True), nullable=False)
    claimed_until = Column(DateTime(timezone=True))
    created_at = Column(DateTime(timezone=True), nullable=False)
    sent_at = Column(DateTime(timezone=True))
    errcode = Column(Integer)
    error = Column(Text)


class AccessToken(Base):
    """The one shared WeChat access_token per app (a new fetch invalidates the old one)."""

    __tablename__ = "wechat_access_tokens"

    app_id = Column(String(64), primary_key=True)
    token = Column(String(512), nullable=False)
    expires_at = Column(DateTime(timezone=True), nullable=False)
    fetched_at = Column(DateTime(timezone=True), nullable=False)


class MediaFile(Base):
    """A farmer's photo or voice, downloaded at once (WeChat keeps MediaId for 3 days only)."""

    __tablename__ = "media_files"

    id = Column(Integer, primary_key=True)
    message_id = Column(ForeignKey("messages.id"), nullable=False, index=True)
    conversation_id = Column(ForeignKey("conversations.id"), nullable=False, index=True)
    openid = Column(String(64), nullable=False)
    kind = Column(String(8), nullable=False)  # "image" | "voice" | "video"
    media_id = Column(String(128), nullable=False)
    # "pending", "stored", "failed"
    status = Column(String(16), nullable=False)
    attempts = Column(Integer, nullable=False, default=0)
    path = Column(String(255))  # relative to the media folder
    content_type = Column(String(64))
    size = Column(Integer)
    sha256 = Column(String(64))
    created_at = Column(DateTime(timezone=True), nullable=False)
    stored_at = Column(DateTime(timezone=True))
    error = Column(Text)
