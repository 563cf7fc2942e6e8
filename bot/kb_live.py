"""The action server's view of the knowledge base: cards read from the database, re-indexed when
they change, so newly published cards are answered without a restart.

The rebuild (about 5 s with the 3,500 imported cards) never runs on the request path once there is
an index: a request that finds the check due starts a background rebuild and answers from the
index it has; the new index is swapped in (one reference assignment) when complete. Only the
very first index of a process is built on the caller's thread, since there is nothing yet to
answer from (`warm()` starts it early, at action server start).
"""

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


@dataclass(frozen=True)
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
        self._lock = threading.Lock()  # guards starting a rebuild and the first build
        self._rebuild: threading.Thread | None = None
        self.rebuilds = 0  # completed background refreshes (for tests and logs)

    def sessions(self) -> sessionmaker:
        """The session factory (engine made on first use, not at import)."""
        if self._sessions is None:
            self._engine = db.make_engine(self.url)
            self._sessions = db.make_sessionmaker(self._engine)
        return self._sessions

    def current(self) -> Snapshot:
        """The index to answer with now. When the freshness check is due, a background thread
        checks the cards and, if they changed, builds a new index and swaps it in; this call
        returns the index in use without waiting for it."""
        snap = self._snapshot
        if snap is None:
            with self._lock:
                if self._snapshot is None:
                    self._snapshot = self._refresh(None)
                    self._checked = time.monotonic()
                return self._snapshot
        if time.monotonic() - self._checked >= self.check_every_s:
            self._start_rebuild()
        return snap

    def warm(self) -> None:
        """Build the first index in the background (at start, before the first question)."""
        if self._snapshot is None:
            threading.Thread(target=self.current, name="kb-warm", daemon=True).start()

    def settle(self, timeout: float = 60.0) -> bool:
        """Wait for a running rebuild to finish; True when none is running any more."""
        thread = self._rebuild
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True

    def _start_rebuild(self) -> None:
        with self._lock:
            if self._rebuild is not None and self._rebuild.is_alive():
                return
            # Checked now: requests arriving during the rebuild do not start another one.
            self._checked = time.monotonic()
            self._rebuild = threading.Thread(
                target=self._rebuild_in_background, name="kb-rebuild", daemon=True
            )
            self._rebuild.start()

    def _rebuild_in_background(self) -> None:
        try:
            new = self._refresh(self._snapshot)
        except Exception:  # keep answering from the old index; try again at the next check
            log.exception("knowledge base: re-indexing failed, keeping the current index")
            return
        if new is not self._snapshot:
            self._snapshot = new  # atomic swap: readers hold either the old or the new one
        self._checked = time.monotonic()
        self.rebuilds += 1

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
