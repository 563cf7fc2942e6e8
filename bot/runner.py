"""`ketepai run`: the action server, the Rasa server and the gateway, in the foreground.

Waits until each is ready, prints the URLs, and stops all three on Ctrl-C (SIGINT) or SIGTERM.
Children get PR_SET_PDEATHSIG, so even a killed runner leaves no orphan behind.
"""

from __future__ import annotations

import ctypes
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bot import db, kb_cli
from bot.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
READY_TIMEOUT_S = {"actions": 60.0, "rasa": 240.0, "gateway": 60.0}
STOP_GRACE_S = 10.0


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the runner dies (Linux), so nothing is orphaned."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


@dataclass
class Child:
    """One supervised process."""

    name: str
    argv: Sequence[str]
    ready_url: str
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    log_threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        self.proc = subprocess.Popen(
            list(self.argv),
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches the runner only; it stops the children
            preexec_fn=_die_with_parent,
        )
        t = threading.Thread(target=self._pump, daemon=True)
        t.start()
        self.log_threads.append(t)

    def _pump(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").rstrip()
            if line:
                print(f"[{self.name:7}] {line}", flush=True)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if not self.alive():
            return
        assert self.proc is not None
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return

    def kill_group(self) -> None:
        """SIGKILL what is left of the child's process group (e.g. orphaned sanic workers)."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def wait_stopped(self, deadline: float) -> None:
        if self.proc is None:
            return
        try:
            self.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - loopback URLs only
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def newest_model(models: Path) -> Path | None:
    """The newest trained model, as the contract defines it."""
    found = sorted(models.glob("*.tar.gz"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def rasa_endpoints(settings: Settings, out_dir: Path) -> Path:
    """endpoints.yml, plus Redis tracker and lock stores when REDIS_URL is set.

    More than one Rasa worker (KTP_RASA_WORKERS) needs shared stores: with the in-memory ones each
    worker would hold its own half of a farmer's conversation.
    """
    import yaml

    trackers = os.environ.get("KTP_RASA_TRACKER_DB")
    if not settings.redis_url:
        if not trackers:
            return ROOT / "endpoints.yml"
        # Tests (and second instances) keep their conversations apart from var/'s.
        doc = yaml.safe_load((ROOT / "endpoints.yml").read_text(encoding="utf-8")) or {}
        doc["action_endpoint"] = {"url": f"{settings.action_url}/webhook"}
        doc["tracker_store"] = {"type": "SQL", "dialect": "sqlite", "db": trackers}
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"endpoints.{settings.rasa_port}.yml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
        return path
    from urllib.parse import urlsplit

    url = urlsplit(settings.redis_url)
    db_index = int((url.path or "/0").lstrip("/") or 0)
    redis = {"url": url.hostname or "127.0.0.1", "port": url.port or 6379}
    if url.password:
        redis["password"] = url.password
    doc = yaml.safe_load((ROOT / "endpoints.yml").read_text(encoding="utf-8")) or {}
    doc["action_endpoint"] = {"url": f"{settings.action_url}/webhook"}
    doc["tracker_store"] = {"type": "redis", **redis, "db": db_index, "key_prefix": "ktptracker"}
    doc["lock_store"] = {"type": "redis", **redis, "db": db_index, "key_prefix": "ktplock"}
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "endpoints.generated.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def build_children(settings: Settings, rasa_token: str, model: Path) -> list[Child]:
    """The three processes, in start order."""
    py = sys.executable
    base_env = dict(os.environ)
    base_env.update(
        {
            "ACTION_PORT": str(settings.action_port),
            "RASA_PORT": str(settings.rasa_port),
            "RASA_TOKEN": rasa_token,
            "PYTHONUNBUFFERED": "1",
            # Rasa's dependencies print pages of deprecation warnings that bury real errors.
            "PYTHONWARNINGS": os.environ.get("PYTHONWARNINGS", "ignore::DeprecationWarning"),
            "SQLALCHEMY_SILENCE_UBER_WARNING": "1",
            "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
        }
    )
    # KTP_WARM_KB: the action server builds its card index as it starts (actions/actions.py).
    actions_env = {**base_env, "SANIC_HOST": "127.0.0.1", "KTP_WARM_KB": "1"}
    rasa_env = dict(base_env)
    workers = os.environ.get("KTP_RASA_WORKERS", "1")
    if workers != "1" and not settings.redis_url:
        raise SystemExit("KTP_RASA_WORKERS > 1 needs REDIS_URL (shared tracker and lock stores)")
    rasa_env["SANIC_WORKERS"] = workers
    # A killed Rasa leaves its conversation locks behind; they expire after this (Rasa: 60 s).
    rasa_env.setdefault("TICKET_LOCK_LIFETIME", "15")
    return [
        Child(
            "actions",
            [py, "-m", "rasa_sdk", "--actions", "actions", "--port", str(settings.action_port)],
            f"{settings.action_url}/health",
            actions_env,
        ),
        Child(
            "rasa",
            [
                py,
                "-m",
                "bot.rasa_main",  # Rasa's CLI with bot/rasa_speedups.py applied
                "run",
                "--enable-api",
                "--auth-token",
                rasa_token,
                "--interface",
                "127.0.0.1",
                "--port",
                str(settings.rasa_port),
                "--model",
                str(model),
                "--endpoints",
                str(rasa_endpoints(settings, ROOT / "var")),
                "--credentials",
                "credentials.yml",
            ],
            f"{settings.rasa_url}/status?token={rasa_token}",
            rasa_env,
        ),
        Child(
            "gateway",
            [py, "-m", "bot.cli", "serve"],
            f"{settings.self_url}/healthz",
            base_env,
        ),
    ]


def wait_ready(child: Child, timeout_s: float, stopping: Callable[[], bool]) -> bool:
    """Poll the child's readiness URL until it answers 200, it dies, or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not stopping():
        if not child.alive():
            return False
        if _http_ok(child.ready_url):
            return True
        time.sleep(0.5)
    return False


def run(settings: Settings) -> int:
    """Start everything, supervise, and stop everything; return the exit status."""
    model = newest_model(ROOT / "models")
    if model is None:
        print("error: no trained model in models/ (run `make train`)", file=sys.stderr)
        return 2
    # endpoints.yml keeps Rasa's conversations in var/ whatever DATABASE_URL says.
    (ROOT / "var").mkdir(exist_ok=True)
    db.upgrade(settings.database_url)
    print("==> knowledge base: " + kb_cli.load_into(settings.database_url), flush=True)
    rasa_token = settings.rasa_token or secrets.token_hex(24)  # never starts with "-" (argparse)
    children = build_children(settings, rasa_token, model)

    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        print(f"\n==> {signal.Signals(signum).name}: stopping", flush=True)
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    status = 0
    try:
        for child in children:
            print(f"==> starting {child.name}", flush=True)
            child.start()
            t0 = time.monotonic()
            if not wait_ready(child, READY_TIMEOUT_S[child.name], stop.is_set):
                if not stop.is_set():
                    print(f"error: {child.name} did not become ready", file=sys.stderr)
                    status = 1
                return status
            print(f"==> {child.name} ready in {time.monotonic() - t0:.1f} s", flush=True)
        print(
            "\n"
            f"  WeChat simulator : {settings.self_url}/sim\n"
            f"  WeChat webhook   : {settings.self_url}/wechat\n"
            f"  health           : {settings.self_url}/healthz\n"
            f"  Rasa (loopback)  : {settings.rasa_url}  model {model.name}\n"
            f"  actions          : {settings.action_url}\n"
            f"  database         : {_safe_url(settings.database_url)}\n"
            "  Ctrl-C stops all three.\n",
            flush=True,
        )
        while not stop.wait(0.5):
            dead = [c for c in children if not c.alive()]
            if dead:
                print(f"error: {dead[0].name} exited; stopping the rest", file=sys.stderr)
                status = 1
                break
    finally:
        for child in reversed(children):
            child.stop()
        deadline = time.monotonic() + STOP_GRACE_S
        for child in reversed(children):
            child.wait_stopped(deadline)
        print("==> stopped", flush=True)
    return status


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
