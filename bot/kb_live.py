"""The action server's view of the knowledge base: cards read from the database, re-indexed when
they change, so newly published cards are answered without a restart."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from sqlalchemy.engine import Engine
from sqlalchemy.orm import sessionmaker

from bot import db
from bot.kb_search import Retriever
from bot.kb_store import published_cards, signature
from bot.knowledge import KB_DIR, Names, load_cards, load_names

log = logging.getLogger(__name__)
CHECK_EVERY_S = 5.0


@dataclass
class Snapshot:
    """An index over one state of the cards."""

    retriever: Retriever
    names: Names
    signature: tuple[int, str]
    from_db: bool


class LiveKnowledge:
    """Cards from the database behind a cheap freshness check (count and newest update)."""

    def __init__(self, url: str, check_every_s: float = CHECK_EVERY_S) -> None:
        self.url = url
        self.check_every_s = check_every_s
        self._engine: Engine | None = None
        self._sessions: sessionmaker | None = None
        self._snapshot: Snapshot | None = None
        self._checked = 0.0
        self._lock = threading.Lock()

    def sessions(self) -> sessionmaker:
        """The session factory (engine made on first use, not at import)."""
        if self._sessions is None:
            self._engine = db.make_engine(self.url)
            self._sessions = db.make_sessionmaker(self._engine)
        return self._sessions

    def current(self) -> Snapshot:
        """The index, rebuilt first if the cards changed since the last check."""
        now = time.monotonic()
        snap = self._snapshot
        if snap is not None and now - self._checked < self.check_every_s:
            return snap
        with self._lock:
            if self._snapshot is not None and now - self._checked < self.check_every_s:
                return self._snapshot
            self._snapshot = self._refresh(self._snapshot)
            self._checked = time.monotonic()
            return self._snapshot

    def _refresh(self, snap: Snapshot | None) -> Snapshot:
        names = snap.names if snap else load_names(KB_DIR)
        try:
            with self.sessions()() as session:
                sig = signature(session)
                if snap is not None and snap.from_db and snap.signature == sig:
                    return snap
                cards = published_cards(session) if sig[0] else []
        except Exception:  # the database is down: keep answering from what we have
            log.exception("knowledge base: cannot read cards from the database")
            if snap is not None:
                return snap
            sig, cards = (0, ""), []
        if not cards:
            # Nothing loaded yet (`ketepai kb load` not run): the curated YAML beats silence.
            if snap is not None and not snap.from_db:
                return snap
            log.warning("knowledge base: no cards in the database, answering from kb/cards")
            return Snapshot(Retriever(load_cards(KB_DIR), names), names, (-1, ""), False)
        started = time.perf_counter()
        retriever = Retriever(cards, names)
        log.info(
            "knowledge base: indexed %d published cards in %.1f s",
            len(retriever.cards),
            time.perf_counter() - started,
        )
        return Snapshot(retriever, names, sig, True)
