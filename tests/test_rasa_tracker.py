"""bot/rasa_tracker.py: Rasa's SQL tracker store with the SQL in worker threads, on PostgreSQL.

Same stored rows and same trackers as Rasa's own `SQLTrackerStore`, built from the endpoints.yml
that production mode writes (bot/prod.py `prod_endpoints`); the event loop keeps running while
PostgreSQL makes a query wait (Rasa's own class stops it: shown below for contrast); the saves
of one conversation do not interleave; a database that goes away is handled by Rasa's fail-safe
store as before.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from rasa.core.agent import Agent
from rasa.core.tracker_store import (
    FailSafeTrackerStore,
    SQLTrackerStore,
    TrackerStore,
    check_if_tracker_store_async,
)
from rasa.core.utils import read_endpoint_config
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import (
    ActionExecuted,
    BotUttered,
    Event,
    SessionStarted,
    SlotSet,
    UserUttered,
)
from rasa.shared.core.trackers import DialogueStateTracker
from rasa.utils.endpoints import EndpointConfig

from bot.prod import prod_endpoints
from bot.rasa_tracker import ThreadedSQLTrackerStore
from bot.settings import Settings
from tests.prod_helpers import TcpProxy

DOMAIN = Domain.from_yaml(
    """
version: "3.1"
intents: [ask_disease, greet]
entities: [crop]
slots:
  crop:
    type: text
    mappings:
    - type: from_entity
      entity: crop
responses:
  utter_greet:
  - text: 您好
"""
)

T0 = 1_700_000_000.0


def _turn(t: float, text: str, intent: str, crop: str | None, answer: str) -> list[Event]:
    entities = [{"entity": "crop", "value": crop, "start": 0, "end": len(crop)}] if crop else []
    events: list[Event] = [
        UserUttered(
            text,
            intent={"name": intent, "confidence": 0.93},
            entities=entities,
            parse_data={
                "intent": {"name": intent, "confidence": 0.93},
                "entities": entities,
                "text": text,
            },
            timestamp=t,
        )
    ]
    if crop:
        events.append(SlotSet("crop", crop, timestamp=t + 0.1))
    events += [
        ActionExecuted("utter_answer", policy="RulePolicy", confidence=1.0, timestamp=t + 0.2),
        BotUttered(answer, {"custom": {"ketepai_source": "kb:kiwi"}}, timestamp=t + 0.3),
        ActionExecuted("action_listen", timestamp=t + 0.4),
    ]
    return events


def _session_start(t: float) -> list[Event]:
    """As Rasa's processor logs it: `action_session_start` first, stamped after the
    `SessionStarted` its run made (so it belongs to the new session)."""
    return [
        ActionExecuted("action_session_start", timestamp=t + 0.01),
        SessionStarted(timestamp=t),
        ActionExecuted("action_listen", timestamp=t + 0.02),
    ]


# A farmer's conversation in chunks, each chunk saved as one turn would be: two sessions.
CHUNKS: list[list[Event]] = [
    _session_start(T0),
    _turn(T0 + 1, "猕猴桃叶子上有褐色斑点怎么办", "ask_disease", "猕猴桃", "先摘除病叶，再喷药。"),
    _turn(T0 + 5, "要喷几次", "ask_disease", None, "间隔7到10天，连喷2到3次。"),
    [*_session_start(T0 + 4000), SlotSet("crop", "猕猴桃", timestamp=T0 + 4000.03)],
    _turn(T0 + 4001, "你好", "greet", None, "您好"),
]


def _dump(tracker: DialogueStateTracker | None) -> list[dict[str, Any]]:
    assert tracker is not None
    return [e.as_dict() for e in tracker.events]


@pytest.fixture
def endpoint(pg_url: str, tmp_path: Path) -> EndpointConfig:
    """The tracker store section of production mode's endpoints.yml, read as Rasa reads it."""
    settings = Settings(database_url=pg_url, redis_url="redis://127.0.0.1:6379/0")
    config = read_endpoint_config(str(prod_endpoints(settings, tmp_path)), "tracker_store")
    assert config is not None
    return config


@pytest.fixture
def stores(endpoint: EndpointConfig) -> Iterator[tuple[TrackerStore, SQLTrackerStore]]:
    """(ours as Rasa creates it from endpoints.yml, Rasa's own SQLTrackerStore) on one schema."""
    ours = TrackerStore.create(endpoint, domain=DOMAIN)
    theirs = SQLTrackerStore(domain=DOMAIN, host=endpoint.url, **endpoint.kwargs)
    yield ours, theirs
    for store in (ours, theirs):
        store.engine.dispose()


async def _save_in_chunks(store: TrackerStore, sender_id: str) -> DialogueStateTracker:
    """Turn by turn as Rasa's processor does: retrieve (latest session), update, save. Return
    a tracker with every event."""
    everything = store.init_tracker(sender_id)
    for chunk in CHUNKS:
        tracker = await store.retrieve(sender_id) or store.init_tracker(sender_id)
        for event in chunk:
            tracker.update(event)
            everything.update(event)
        await store.save(tracker)
    return everything


def _rows(store: SQLTrackerStore, sender_id: str) -> list[tuple[Any, ...]]:
    with store.engine.connect() as conn:
        return [
            tuple(row)
            for row in conn.execute(
                sa.text(
                    "SELECT type_name, timestamp, intent_name, action_name, data FROM events "
                    "WHERE sender_id = :s ORDER BY id"
                ),
                {"s": sender_id},
            )
        ]


def test_production_endpoints_load_our_store_inside_rasas_fail_safe_store(
    endpoint: EndpointConfig,
) -> None:
    """Rasa falls back to an in-memory store, silently, when a custom type does not import:
    make sure production mode's endpoints.yml gives our class, async, wrapped by the agent."""
    assert endpoint.type == "bot.rasa_tracker.ThreadedSQLTrackerStore"
    store = TrackerStore.create(endpoint, domain=DOMAIN)
    try:
        assert type(store) is ThreadedSQLTrackerStore
        assert check_if_tracker_store_async(store)
        assert store.engine.url.get_backend_name() == "postgresql"
        wrapped = Agent._create_tracker_store(store, DOMAIN)
        assert isinstance(wrapped, FailSafeTrackerStore)
        assert wrapped._tracker_store is store
    finally:
        store.engine.dispose()


async def test_saved_rows_and_trackers_equal_rasas_own(
    stores: tuple[TrackerStore, SQLTrackerStore],
) -> None:
    ours, theirs = stores
    written_by_ours = await _save_in_chunks(ours, "farmer-ours")
    await _save_in_chunks(theirs, "farmer-rasa")

    # the same rows (save counts what is stored since the session start, then inserts the rest)
    assert _rows(theirs, "farmer-ours") == _rows(theirs, "farmer-rasa")
    assert len(_rows(theirs, "farmer-ours")) == sum(len(c) for c in CHUNKS)

    for sender in ("farmer-ours", "farmer-rasa"):
        # latest session only
        got, want = await ours.retrieve(sender), await theirs.retrieve(sender)
        assert got == want  # same sender_id and as_dialogue()
        assert _dump(got) == _dump(want)
        assert got.current_state() == want.current_state()
        assert got.get_slot("crop") == "猕猴桃"
        assert got.events[0].as_dict()["name"] == "action_session_start"
        assert len(got.events) == len(CHUNKS[-2]) + len(CHUNKS[-1])
        # every session
        full, full_want = (
            await ours.retrieve_full_tracker(sender),
            await theirs.retrieve_full_tracker(sender),
        )
        assert full == full_want
        assert _dump(full) == _dump(written_by_ours)
        assert await ours.exists(sender) and await theirs.exists(sender)

    assert await ours.retrieve("nobody") is None is await theirs.retrieve("nobody")
    assert await ours.retrieve_full_tracker("nobody") is None
    assert not await ours.exists("nobody")
    assert (
        sorted(await ours.keys()) == sorted(await theirs.keys()) == ["farmer-ours", "farmer-rasa"]
    )


async def test_saves_of_one_conversation_do_not_interleave(
    stores: tuple[TrackerStore, SQLTrackerStore],
) -> None:
    """Saves of the same tracker at once: each counts what the previous one stored, so no event
    is stored twice (Rasa's own save is atomic on one event loop; ours holds a lock)."""
    ours, theirs = stores
    tracker = ours.init_tracker("farmer-twice")
    for chunk in CHUNKS[:3]:
        for event in chunk:
            tracker.update(event)
    for n in range(8):  # without the lock, most runs store some events twice
        tracker.update(ActionExecuted("action_listen", timestamp=T0 + 10 + n))
        await asyncio.gather(*(ours.save(tracker) for _ in range(6)))
    stored = _rows(theirs, "farmer-twice")
    assert len(stored) == len(tracker.events)
    assert _dump(await ours.retrieve("farmer-twice")) == _dump(tracker)


async def _loop_ticks_while_events_locked(
    pg_url: str, op: Callable[[], Awaitable[Any]], hold_s: float = 1.0
) -> tuple[int, float, Any]:
    """Run `op` while another connection holds an ACCESS EXCLUSIVE lock on `events` for
    `hold_s` (released by a timer thread: the loop may be stuck); return how many times a
    coroutine ticking every 10 ms ran meanwhile, how long `op` took, and its result."""
    locker = sa.create_engine(pg_url)
    conn = locker.connect()
    tx = conn.begin()
    conn.execute(sa.text("LOCK TABLE events IN ACCESS EXCLUSIVE MODE"))
    ticks = 0
    stop = False

    async def tick() -> None:
        nonlocal ticks
        while not stop:
            ticks += 1
            await asyncio.sleep(0.01)

    ticker = asyncio.create_task(tick())
    timer = threading.Timer(hold_s, tx.rollback)
    try:
        await asyncio.sleep(0.05)
        before = ticks
        timer.start()
        t0 = time.monotonic()
        result = await op()
        took = time.monotonic() - t0
        during = ticks - before
    finally:
        stop = True
        await ticker
        timer.join()
        conn.close()
        locker.dispose()
    return during, took, result


async def test_the_loop_runs_while_postgresql_makes_a_query_wait(
    pg_url: str, stores: tuple[TrackerStore, SQLTrackerStore]
) -> None:
    ours, theirs = stores
    tracker = await _save_in_chunks(theirs, "farmer-wait")

    # Rasa's own class: the loop stands still for the whole wait (what the fix is about)
    ticks, took, got = await _loop_ticks_while_events_locked(
        pg_url, lambda: theirs.retrieve("farmer-wait")
    )
    assert took >= 0.8 and ticks <= 2, (ticks, took)
    assert got == await theirs.retrieve("farmer-wait")

    # ours: the retrieve waits as long, the loop keeps running, and the result is the same
    ticks, took, got = await _loop_ticks_while_events_locked(
        pg_url, lambda: ours.retrieve("farmer-wait")
    )
    assert took >= 0.8 and ticks >= 20, (ticks, took)
    assert got == await theirs.retrieve("farmer-wait")

    ticks, took, got = await _loop_ticks_while_events_locked(
        pg_url, lambda: ours.retrieve_full_tracker("farmer-wait")
    )
    assert took >= 0.8 and ticks >= 20, (ticks, took)
    assert _dump(got) == _dump(tracker)

    # a save (its count, then its inserts) waits the same way without stopping the loop
    latest = await ours.retrieve("farmer-wait")
    listen = ActionExecuted("action_listen", timestamp=T0 + 4100)
    latest.update(listen)
    tracker.update(listen)
    ticks, took, _ = await _loop_ticks_while_events_locked(pg_url, lambda: ours.save(latest))
    assert took >= 0.8 and ticks >= 20, (ticks, took)
    assert _dump(await theirs.retrieve_full_tracker("farmer-wait")) == _dump(tracker)


@pytest.mark.parametrize("cls", [SQLTrackerStore, ThreadedSQLTrackerStore])
async def test_database_down_is_handled_by_rasas_fail_safe_store_as_before(
    endpoint: EndpointConfig, cls: type[SQLTrackerStore]
) -> None:
    """PostgreSQL unreachable mid-conversation: retrieve gives None, save goes to memory (no
    exception reaches Rasa's processor), and the stored conversation is back with the database."""
    proxy = TcpProxy(endpoint.kwargs.get("port") or 5432)
    kwargs = {**endpoint.kwargs, "port": proxy.port}
    store = cls(domain=DOMAIN, host=endpoint.url, **kwargs)
    errors: list[Exception] = []
    safe = FailSafeTrackerStore(store, on_tracker_store_error=errors.append)
    try:
        tracker = safe.init_tracker("farmer-cut")
        for event in CHUNKS[0] + CHUNKS[1]:
            tracker.update(event)
        await safe.save(tracker)
        stored = _dump(await safe.retrieve("farmer-cut"))

        proxy.cut()
        assert await safe.retrieve("farmer-cut") is None
        for event in CHUNKS[2]:
            tracker.update(event)
        await safe.save(tracker)  # falls back to the in-memory store
        assert await safe.keys() == []
        assert len(errors) == 3

        proxy.restore()
        assert _dump(await safe.retrieve("farmer-cut")) == stored
    finally:
        proxy.close()
        store.engine.dispose()
