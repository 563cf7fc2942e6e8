"""`ketepai run --prod`: N gateway workers and one Rasa server (M sanic workers) on PostgreSQL and
Redis, supervised: a child that dies is restarted with backoff.

Rasa's tracker store is PostgreSQL (the SQL tracker store, table `events`): Redis here keeps no
data across a restart, and a farmer's conversation must survive one; PostgreSQL is backed up with
the service records. Rasa's lock store is Redis (needed for more than one sanic worker).
"""

from __future__ import annotations

import os
import secrets
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml
from sqlalchemy.engine import make_url

from bot import db, kb_cli
from bot.dedupe import WORKER_ID_ENV, worker_died
from bot.runner import READY_TIMEOUT_S, ROOT, STOP_GRACE_S, Child, newest_model, wait_ready
from bot.settings import Settings, SettingsError

MAX_BACKOFF_S = 30.0
STABLE_AFTER_S = 60.0  # a child up this long has its backoff reset
MODEL_CHECK_S = 2.0  # how often the supervisor asks Rasa which model it serves
MODEL_SETTLE_S = 3.0  # a switched worker seen this long ago: the PUT /model has answered


def _int_env(env: Mapping[str, str], name: str, default: int, top: int) -> int:
    raw = env.get(name) or str(default)
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, got {raw!r}") from None
    if not 1 <= value <= top:
        raise SettingsError(f"{name} must be between 1 and {top}, got {value}")
    return value


@dataclass(frozen=True)
class ProdPlan:
    """How many of each process, checked before anything starts."""

    gateways: int
    rasa_workers: int


def check(settings: Settings, env: Mapping[str, str] | None = None) -> ProdPlan:
    """Fail fast on what production needs: PostgreSQL, Redis, real secrets."""
    env = os.environ if env is None else env
    problems = []
    if make_url(settings.database_url).get_backend_name() != "postgresql":
        problems.append("DATABASE_URL must be PostgreSQL (postgresql+psycopg2://user@host/db)")
    if not settings.redis_url:
        problems.append("REDIS_URL is required (dedupe, ordering, rate limit, Rasa's lock store)")
    if not env.get("KTP_DATA_KEY"):
        problems.append("KTP_DATA_KEY is required (encrypts farmers' phone numbers)")
    if not env.get("KTP_SESSION_SECRET"):
        problems.append("KTP_SESSION_SECRET is required (console logins across workers)")
    if problems:
        raise SettingsError("production mode: " + "; ".join(problems))
    return ProdPlan(
        gateways=_int_env(env, "KTP_GATEWAY_WORKERS", 2, 64),
        rasa_workers=_int_env(env, "KTP_RASA_WORKERS", 1, 16),
    )


def prod_endpoints(settings: Settings, out_dir: Path) -> Path:
    """endpoints.yml with the SQL tracker store (PostgreSQL) and the Redis lock store.

    The tracker store is Rasa's SQL one with its database work in worker threads
    (bot/rasa_tracker.py: Rasa's own blocks the event loop while PostgreSQL answers); Rasa
    passes it the same keys as to `type: SQL`."""
    from bot.runner import rasa_endpoints

    doc = yaml.safe_load(rasa_endpoints(settings, out_dir).read_text(encoding="utf-8")) or {}
    url = make_url(settings.database_url)
    store: dict[str, object] = {
        "type": "bot.rasa_tracker.ThreadedSQLTrackerStore",
        "dialect": "postgresql",
        "url": url.host or "127.0.0.1",
        "port": url.port or 5432,
        "db": url.database,
        "username": url.username or "postgres",
    }
    if url.password:
        store["password"] = url.password
    query = dict(url.query) if url.query else {}
    if query:  # e.g. options=-csearch_path=... (a schema of its own)
        store["query"] = {k: v if isinstance(v, str) else v[0] for k, v in query.items()}
    doc["tracker_store"] = store
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "endpoints.prod.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), encoding="utf-8")
    path.chmod(0o600)  # may hold the database password
    return path


def build(settings: Settings, plan: ProdPlan, token: str, model: Path, var: Path) -> list[Child]:
    """Actions, Rasa and `plan.gateways` gateway workers sharing KTP_PORT (SO_REUSEPORT)."""
    from bot.runner import build_children

    actions, rasa, gateway = build_children(settings, token, model)
    rasa.env["SANIC_WORKERS"] = str(plan.rasa_workers)  # on the Redis lock store
    argv = list(rasa.argv)
    argv[argv.index("--endpoints") + 1] = str(prod_endpoints(settings, var))
    rasa.argv = argv
    children = [actions, rasa]
    for n in range(plan.gateways):
        genv = {**gateway.env, "KTP_REUSE_PORT": "1", "KTP_WORKER": str(n), WORKER_ID_ENV: ""}
        children.append(Child(f"gw{n}", gateway.argv, gateway.ready_url, genv))
    return children


def redis_notifier(redis_url: str) -> Callable[[str], None]:
    """What the supervisor calls with a gateway worker's id once it reaped it: mark it dead in
    Redis, so that WeChat's retry of a message it held is taken over at once (and the farmer's
    later messages do not wait for its lane ticket). On failure the TTLs still free them."""
    import redis

    client = redis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)

    def notify(worker: str) -> None:
        try:
            worker_died(client, worker)
        except Exception as exc:  # Redis down: its heartbeat expires in ALIVE_TTL_S anyway
            print(f"==> could not mark {worker} dead in Redis: {exc!r}", flush=True)

    return notify


class Supervised:
    """A child with its restart schedule. A gateway worker gets a fresh Redis identity
    (KTP_WORKER_ID) at each start; `on_exit(identity)` is called the moment it is reaped."""

    def __init__(self, child: Child, on_exit: Callable[[str], None] | None = None) -> None:
        self.child = child
        self.backoff = 1.0
        self.started = time.monotonic()
        self.restart_at: float | None = None
        self.restarts = 0
        self.on_exit = on_exit

    def start(self) -> None:
        """Start the child (a gateway worker under a new identity) and watch for its exit."""
        self.started = time.monotonic()
        if WORKER_ID_ENV not in self.child.env:
            self.child.start()
            return
        worker = f"{self.child.name}-{secrets.token_hex(6)}"
        self.child.env[WORKER_ID_ENV] = worker
        self.child.start()
        proc = self.child.proc
        assert proc is not None

        def watch() -> None:
            proc.wait()  # reaps it: tick() sees the exit through the same Popen
            if self.on_exit is not None:
                self.on_exit(worker)

        threading.Thread(target=watch, name=f"watch-{worker}", daemon=True).start()

    def tick(self, now: float) -> None:
        """Restart the child when it died and its backoff has passed."""
        if self.child.alive():
            if now - self.started > STABLE_AFTER_S:
                self.backoff = 1.0
            return
        if self.restart_at is None:
            code = self.child.proc.returncode if self.child.proc else None
            print(f"==> {self.child.name} exited ({code}); restart in {self.backoff:.0f} s")
            self.child.kill_group()
            self.restart_at = now + self.backoff
            self.backoff = min(MAX_BACKOFF_S, self.backoff * 2)
        elif now >= self.restart_at:
            self.restart_at, self.started = None, now
            self.restarts += 1
            print(f"==> restarting {self.child.name} (#{self.restarts})", flush=True)
            if "--model" in self.child.argv:
                # An admin may have switched models since start (/admin/model moves the accepted
                # model into models/ as the newest): Rasa comes back on that one, not the old.
                self.child.argv = with_newest_model(self.child.argv, ROOT / "models")
            self.start()

    def restart_now(self, argv: Sequence[str]) -> None:
        """Stop the child and start it again at once with `argv` (not a failure: no backoff)."""
        self.child.stop()
        self.child.wait_stopped(time.monotonic() + STOP_GRACE_S)
        self.child.kill_group()  # its orphaned sanic workers too
        self.child.argv = list(argv)
        self.restart_at = None
        self.restarts += 1
        print(f"==> restarting {self.child.name} (#{self.restarts})", flush=True)
        self.start()


class ModelFollower:
    """Sanic's workers each hold their own Rasa agent, and PUT /model (an admin's switch or
    restore through /admin/model) reaches one of them. A thread asks Rasa's /status every
    MODEL_CHECK_S (each on a fresh connection, so any worker may answer); a worker serving a
    model other than the one Rasa was started with has been switched, and once that has held
    for MODEL_SETTLE_S (the PUT's answer is out) `due()` names the model to restart Rasa on, so
    that every worker serves it. A model merely added to models/ (`make train`) is not
    followed: only what Rasa was told to load."""

    def __init__(
        self, status: Callable[[], str | None], models: Path, serving: Callable[[], str]
    ) -> None:
        self._status, self._models, self._serving = status, models, serving
        self._seen: tuple[Path, float] | None = None
        self._lock = threading.Lock()

    def check(self, now: float) -> None:
        """One look at what a Rasa worker serves."""
        name = self._status()
        found: Path | None = None
        if name:
            path = Path(name) if Path(name).is_absolute() else self._models / name
            if path.name != Path(self._serving()).name and path.exists():
                found = path
        with self._lock:
            if found is None:
                return  # this worker serves the started model, or nobody answered
            if self._seen is None or self._seen[0] != found:
                self._seen = (found, now)

    def due(self, now: float) -> Path | None:
        """The model to restart Rasa on, once (None when nothing is due)."""
        with self._lock:
            if self._seen is None or now - self._seen[1] < MODEL_SETTLE_S:
                return None
            path, self._seen = self._seen[0], None
        return path if path.name != Path(self._serving()).name else None

    def run(self, stop: threading.Event) -> None:
        """check() every MODEL_CHECK_S until `stop`."""
        while not stop.wait(MODEL_CHECK_S):
            try:
                self.check(time.monotonic())
            except Exception as exc:  # never let the watcher die on a surprise
                print(f"==> model check failed: {exc!r}", flush=True)


def model_of(argv: Sequence[str]) -> str:
    """The `--model` value of a Rasa command line."""
    return str(argv[list(argv).index("--model") + 1])


def with_model(argv: Sequence[str], model: Path) -> list[str]:
    """`argv` with its `--model` value replaced by `model`."""
    out = list(argv)
    out[out.index("--model") + 1] = str(model)
    return out


def with_newest_model(argv: Sequence[str], models: Path) -> list[str]:
    """`argv` with its `--model` value replaced by the newest model in `models` (if any)."""
    newest = newest_model(models)
    return list(argv) if newest is None else with_model(argv, newest)


def run(settings: Settings) -> int:
    """Start everything, restart what dies, stop everything on SIGINT/SIGTERM."""
    try:
        plan = check(settings)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    model = newest_model(ROOT / "models")
    if model is None:
        print("error: no trained model in models/ (run `make train`)", file=sys.stderr)
        return 2
    db.upgrade(settings.database_url)
    print("==> knowledge base: " + kb_cli.load_into(settings.database_url), flush=True)
    token = settings.rasa_token or secrets.token_hex(24)  # never starts with "-" (argparse)
    var = Path(os.environ.get("KTP_VAR_DIR") or ROOT / "var")
    children = build(settings, plan, token, model, var)
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        print(f"\n==> {signal.Signals(signum).name}: stopping", flush=True)
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    notify = redis_notifier(settings.redis_url) if settings.redis_url else None
    supervised = [Supervised(c, notify) for c in children]
    try:
        for s in supervised:
            print(f"==> starting {s.child.name}", flush=True)
            s.start()
            kind = s.child.name if s.child.name in ("actions", "rasa") else "gateway"
            if kind != "gateway" or s.child.name == f"gw{plan.gateways - 1}":
                if not wait_ready(s.child, READY_TIMEOUT_S[kind], stop.is_set):
                    if stop.is_set():
                        return 0
                    print(f"error: {s.child.name} did not become ready", file=sys.stderr)
                    return 1
        print(
            f"\n  production mode  : {plan.gateways} gateway worker(s) on {settings.public_url}"
            f", Rasa with {plan.rasa_workers} worker(s)\n"
            f"  WeChat webhook   : {settings.self_url}/wechat   metrics: /metrics\n"
            f"  Rasa (loopback)  : {settings.rasa_url}  model {model.name}\n"
            f"  database         : {make_url(settings.database_url).render_as_string(True)}\n"
            "  Ctrl-C stops all.\n",
            flush=True,
        )
        rasa = next(s for s in supervised if s.child.name == "rasa")
        follower = None
        if plan.rasa_workers > 1:
            from bot.model_rasa import RasaModelApi

            api = RasaModelApi(settings.rasa_url, token)

            follower = ModelFollower(
                api.current_model, ROOT / "models", lambda: model_of(rasa.child.argv)
            )
            threading.Thread(target=follower.run, args=(stop,), daemon=True).start()
        while not stop.wait(0.5):
            now = time.monotonic()
            for s in supervised:
                s.tick(now)
            switched = follower.due(now) if follower is not None else None
            if switched is not None and rasa.child.alive():
                print(
                    f"==> a Rasa worker was switched to {switched.name}: restarting Rasa so "
                    f"that all {plan.rasa_workers} workers serve it",
                    flush=True,
                )
                rasa.restart_now(with_model(rasa.child.argv, switched))
    finally:
        for s in reversed(supervised):
            s.child.stop()
        deadline = time.monotonic() + STOP_GRACE_S
        for s in reversed(supervised):
            s.child.wait_stopped(deadline)
            s.child.kill_group()
        print("==> stopped", flush=True)
    return 0
