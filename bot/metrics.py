"""`GET /metrics` in the Prometheus text format, written by hand (no new dependency).

Counters and the latency histogram live in each process and, with REDIS_URL, are added up in
one Redis hash every few seconds, so that a scrape of any gateway worker shows the whole
service. Outbox depth/failures and handoff cases are read from the database at scrape time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import web
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

log = logging.getLogger(__name__)
BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 4.5, 10.0)
REDIS_KEY = "ktp:metrics"
HELP = {
    "ktp_messages_total": ("counter", "WeChat POSTs by message type and HTTP status"),
    "ktp_reply_seconds": ("histogram", "time from receipt to the reply leaving the gateway"),
    "ktp_dedupe_hits_total": ("counter", "retries answered without processing them again"),
    "ktp_spooled_total": ("counter", "messages kept on disk while the database was down"),
    "ktp_recovered_total": ("counter", "messages answered late after a failure (re-asked)"),
    "ktp_handed_over_total": ("counter", "messages the bot never answered, given to a person"),
}
Key = tuple[str, tuple[tuple[str, str], ...]]


class Registry:
    """Counters and one histogram; `pending` holds what is not yet added to Redis."""

    def __init__(self) -> None:
        self.values: dict[Key, float] = defaultdict(float)
        self.pending: dict[Key, float] = defaultdict(float)

    def inc(self, name: str, amount: float = 1.0, /, **labels: str) -> None:
        """Add to a counter (or a histogram series)."""
        key = (name, tuple(sorted(labels.items())))
        self.values[key] += amount
        self.pending[key] += amount

    def observe(self, name: str, seconds: float, /, **labels: str) -> None:
        """Record one latency in the histogram `name`."""
        for le in BUCKETS:  # every bucket, so that each series exists from the first scrape
            self.inc(f"{name}_bucket", 1.0 if seconds <= le else 0.0, le=str(le), **labels)
        self.inc(f"{name}_bucket", le="+Inf", **labels)
        self.inc(f"{name}_sum", seconds, **labels)
        self.inc(f"{name}_count", **labels)


REGISTRY = Registry()


def _field(key: Key) -> str:
    name, labels = key
    return name + "|" + ",".join(f"{k}={v}" for k, v in labels)


def _unfield(raw: str) -> Key:
    name, _, rest = raw.partition("|")
    labels = tuple(tuple(p.split("=", 1)) for p in rest.split(",") if p)
    return name, labels  # type: ignore[return-value]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _order(key: Key) -> tuple[str, tuple[tuple[str, str], ...], float]:
    """Series in name order, histogram buckets by bound with +Inf last."""
    name, labels = key
    le = dict(labels).get("le")
    bound = float("inf") if le == "+Inf" else float(le) if le else 0.0
    return name, tuple(lb for lb in labels if lb[0] != "le"), bound


def render(values: dict[Key, float], gauges: dict[Key, float]) -> str:
    """The Prometheus text exposition format (version 0.0.4)."""
    lines: list[str] = []
    done: set[str] = set()
    for key in sorted({**values, **gauges}, key=_order):
        name, labels = key
        base = name.removesuffix("_bucket").removesuffix("_sum").removesuffix("_count")
        family = base if base in HELP else name
        if family not in done:
            kind, text = HELP.get(family, ("gauge", family.replace("_", " ")))
            lines += [f"# HELP {family} {text}", f"# TYPE {family} {kind}"]
            done.add(family)
        label = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
        value = values.get(key, gauges.get(key, 0.0))
        lines.append(f"{name}{{{label}}} {value:g}" if label else f"{name} {value:g}")
    return "\n".join(lines) + "\n"


def db_gauges(engine: Engine) -> dict[Key, float]:
    """Outbox rows by status (queue depth, failures) and handoff cases by status."""
    from bot.handoff_models import Case
    from bot.models import OutboxItem

    out: dict[Key, float] = {}
    with engine.connect() as conn:
        for status, n in conn.execute(
            select(OutboxItem.status, func.count()).group_by(OutboxItem.status)
        ):
            out[("ktp_outbox_items", (("status", str(status)),))] = float(n)
        for status, n in conn.execute(select(Case.status, func.count()).group_by(Case.status)):
            out[("ktp_handoff_cases", (("status", str(status)),))] = float(n)
    depth = sum(v for (_, lb), v in out.items() if lb and lb[0][1] in {"pending", "sending"})
    out[("ktp_outbox_queue_depth", ())] = depth
    return out


async def flush(redis: Any, registry: Registry = REGISTRY) -> None:
    """Add this process's new counts to the shared Redis hash."""
    pending, registry.pending = registry.pending, defaultdict(float)
    if not pending:
        return
    try:
        pipe = redis.pipeline()
        for key, amount in pending.items():
            pipe.hincrbyfloat(REDIS_KEY, _field(key), amount)
        await pipe.execute()
    except Exception:
        for key, amount in pending.items():  # keep them for the next try
            registry.pending[key] += amount


async def shared_values(redis: Any) -> dict[Key, float]:
    """Every process's counts, from Redis."""
    raw = await redis.hgetall(REDIS_KEY)
    return {_unfield(k.decode() if isinstance(k, bytes) else k): float(v) for k, v in raw.items()}


def setup(
    app: web.Application, engine_of: Callable[[], Engine], redis_of: Callable[[], Any]
) -> None:
    """Add `GET /metrics`, the timing middleware and the Redis flusher to the gateway."""

    @web.middleware
    async def timing(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.path != "/wechat" or request.method != "POST":
            return await handler(request)
        t0, status = time.perf_counter(), 500
        try:
            resp = await handler(request)
            status = resp.status
            return resp
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            kind = str(request.get("ktp_msg_type", "unparsed"))
            REGISTRY.inc("ktp_messages_total", type=kind, status=str(status))
            if status == 200:
                REGISTRY.observe("ktp_reply_seconds", time.perf_counter() - t0)

    async def metrics(_request: web.Request) -> web.StreamResponse:
        redis = redis_of()
        values: dict[Key, float] = dict(REGISTRY.values)
        if redis is not None:
            with contextlib.suppress(Exception):
                await flush(redis)
                values = await shared_values(redis)
        gauges: dict[Key, float] = {}
        try:
            gauges = await asyncio.wait_for(asyncio.to_thread(db_gauges, engine_of()), 3)
            gauges[("ktp_db_up", ())] = 1.0
        except Exception:
            gauges[("ktp_db_up", ())] = 0.0
        body = render(values, gauges)
        return web.Response(text=body, content_type="text/plain", charset="utf-8")

    async def flusher(app: web.Application) -> AsyncIterator[None]:
        async def loop() -> None:
            while True:
                await asyncio.sleep(2.0)
                redis = redis_of()
                if redis is not None:
                    await flush(redis)

        task = asyncio.create_task(loop(), name="metrics-flush")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        redis = redis_of()
        if redis is not None:
            with contextlib.suppress(Exception):
                await flush(redis)

    app.middlewares.append(timing)
    app.router.add_get("/metrics", metrics)
    app.cleanup_ctx.append(flusher)
