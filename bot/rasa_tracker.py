"""Rasa's SQL tracker store with its database work in worker threads (production mode).

Rasa 3.6's `SQLTrackerStore` runs its SQL synchronously inside `async def` methods, so each
Sanic worker's event loop stands still while PostgreSQL answers (issue #8: py-spy put 60 % of
a Rasa worker's wall time in `SQLTrackerStore._retrieve`). `ThreadedSQLTrackerStore` runs the
same database work in a small thread pool and awaits it; everything else is Rasa's:

- the same queries and results: `retrieve`, `retrieve_full_tracker` and `keys` run Rasa's own
  methods (coroutines that never suspend) to their end in a worker thread; `save` streams the
  new events to the event broker on the loop as Rasa does (`stream_events`, usually no broker),
  then runs Rasa's SQL part of `save` (count the stored events of the latest session, insert
  the rest, commit) in a thread, on a snapshot of the tracker's events;
- one SQLAlchemy session per call (Rasa's `session_scope`); the engine and its pool are
  thread-safe;
- the saves of one conversation never interleave in a process: a per-conversation lock is held
  by the thread that writes (Rasa's lock store already serialises a conversation's turns across
  workers; this also covers a save whose awaiting coroutine was cancelled while its thread
  still writes);
- errors propagate unchanged, so Rasa's `FailSafeTrackerStore` (which wraps every tracker store
  the agent uses) still falls back to memory when PostgreSQL is down.

endpoints.yml (bot/prod.py `prod_endpoints`): `tracker_store: {type:
bot.rasa_tracker.ThreadedSQLTrackerStore, dialect: postgresql, url: host, port, db, username,
password, query}`; Rasa passes `url` as `host` and the rest as keyword arguments, as for `SQL`.

Threads: KTP_TRACKER_THREADS (default 8) per Rasa worker process, at most the engine's pool size
(Rasa's SQL_POOL_SIZE, default 50), so each thread keeps one pooled connection and no overflow
connection is opened and closed under load. One pool per process is shared by all the store
instances of that process (Rasa builds a new store at each model load).
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import logging
import os
import threading
from collections.abc import Callable, Coroutine, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from rasa.core.tracker_store import SQLTrackerStore
from rasa.shared.core.events import Event
from rasa.shared.core.trackers import DialogueStateTracker
from rasa.shared.nlu.constants import INTENT_NAME_KEY

logger = logging.getLogger(__name__)

THREADS_ENV = "KTP_TRACKER_THREADS"
DEFAULT_THREADS = 8

T = TypeVar("T")

_pool_guard = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_pool_pid: int | None = None

_locks_guard = threading.Lock()
_save_locks: dict[str, list[Any]] = {}  # sender_id -> [threading.Lock, number of users]


def _threads(engine_pool: Any) -> int:
    raw = os.environ.get(THREADS_ENV) or str(DEFAULT_THREADS)
    try:
        wanted = max(1, int(raw))
    except ValueError:
        logger.warning(f"{THREADS_ENV}={raw!r} is not a whole number: using {DEFAULT_THREADS}")
        wanted = DEFAULT_THREADS
    size = getattr(engine_pool, "size", None)  # QueuePool; SQLite's pools have no fixed size
    if callable(size):
        return max(1, min(wanted, int(size())))
    return wanted


def _executor(engine_pool: Any) -> ThreadPoolExecutor:
    """This process's pool (made on first use: Sanic forks its workers after imports)."""
    global _pool, _pool_pid
    with _pool_guard:
        if _pool is None or _pool_pid != os.getpid():
            _pool = ThreadPoolExecutor(
                max_workers=_threads(engine_pool), thread_name_prefix="rasa-tracker-sql"
            )
            _pool_pid = os.getpid()
        return _pool


class _ConversationLock:
    """A per-sender_id threading lock, dropped from the table when nobody holds or waits."""

    def __init__(self, sender_id: str) -> None:
        self.sender_id = sender_id

    def __enter__(self) -> None:
        with _locks_guard:
            entry = _save_locks.setdefault(self.sender_id, [threading.Lock(), 0])
            entry[1] += 1
        self._entry = entry
        entry[0].acquire()

    def __exit__(self, *exc: object) -> None:
        entry = self._entry
        entry[0].release()
        with _locks_guard:
            entry[1] -= 1
            if entry[1] == 0:
                _save_locks.pop(self.sender_id, None)


def _complete(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends (Rasa's blocking `async def`s) to its end here."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise RuntimeError("a tracker store coroutine suspended in a worker thread")


class ThreadedSQLTrackerStore(SQLTrackerStore):
    """`SQLTrackerStore` whose database work runs in worker threads, not on the event loop."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        logger.info(
            f"Tracker store: {type(self).__name__} on {self.engine.url.get_backend_name()}, "
            f"{_threads(self.engine.pool)} database threads per process"
        )

    async def _in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(_executor(self.engine.pool), functools.partial(fn, *args))

    async def keys(self) -> Iterable[str]:
        """Rasa's `keys` (distinct sender_ids), in a worker thread."""
        return await self._in_thread(_complete, super().keys())

    async def _retrieve(
        self, sender_id: str, fetch_events_from_all_sessions: bool
    ) -> DialogueStateTracker | None:
        """Rasa's `_retrieve` (used by `retrieve` and `retrieve_full_tracker`), in a thread."""
        return await self._in_thread(
            _complete, super()._retrieve(sender_id, fetch_events_from_all_sessions)
        )

    async def save(self, tracker: DialogueStateTracker) -> None:
        """Rasa's `save`: new events to the event broker (on the loop), then the SQL in a
        thread, under the conversation's lock."""
        await self.stream_events(tracker)
        events = list(tracker.events)  # the thread must not iterate a deque the loop may grow
        await self._in_thread(self._save_events, tracker.sender_id, events)
        logger.debug(f"Tracker with sender_id '{tracker.sender_id}' stored to database")

    def _save_events(self, sender_id: str, events: list[Event]) -> None:
        """The SQL part of Rasa 3.6.21's `SQLTrackerStore.save`, unchanged but for reading
        `events` (the snapshot) instead of `tracker.events`."""
        with _ConversationLock(sender_id), self.session_scope() as session:
            for event in self._events_to_store(session, sender_id, events):
                data = event.as_dict()
                intent = data.get("parse_data", {}).get("intent", {}).get(INTENT_NAME_KEY)
                action = data.get("name")
                timestamp = data.get("timestamp")

                session.add(
                    self.SQLEvent(
                        sender_id=sender_id,
                        type_name=event.type_name,
                        timestamp=timestamp,
                        intent_name=intent,
                        action_name=action,
                        data=json.dumps(data),
                    )
                )
            session.commit()

    def _events_to_store(
        self, session: Any, sender_id: str, events: list[Event]
    ) -> Iterator[Event]:
        """Rasa's `_additional_events`: the events past those stored since the last session
        start."""
        number_of_events_since_last_session = self._event_query(
            session, sender_id, fetch_events_from_all_sessions=False
        ).count()
        return itertools.islice(events, number_of_events_since_last_session, len(events))
