"""「重新训练」: validate, train in the background, evaluate against the loaded model, and switch
the running Rasa server only when the candidate is not worse; every decision is recorded.

The trainer and the Rasa API are injected (bot.model_rasa has the real ones), so the
orchestration is tested with fakes and, in tests/test_model_update_slow.py, with real training.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from bot.admin_models import ModelSwitch
from bot.model_eval import Figures, Rule, Verdict, compare

ROOT = Path(__file__).resolve().parents[1]
Progress = Callable[[str, int | None, int | None], None]


class Trainer(Protocol):
    """Validates, trains a candidate, evaluates models (bot.model_rasa.RasaTrainer)."""

    def validate(self, on_line: Progress) -> None: ...
    def train(self, on_line: Progress) -> Path: ...
    def evaluate(self, models: Sequence[Path], on_line: Progress) -> dict[str, Figures]: ...


class ModelServer(Protocol):
    """The running Rasa server's model (bot.model_rasa.RasaModelApi)."""

    def current_model(self) -> str | None: ...
    def load(self, model: Path) -> None: ...


class Busy(RuntimeError):
    """A training (or a restore) is already under way."""


RUNNING = ("validating", "training", "evaluating", "switching")


@dataclass
class Status:
    """What the admin page polls: the phase and, at the end, the figures and the verdict."""

    phase: str = "idle"  # idle validating training evaluating switching done refused failed
    detail: str = ""
    epoch: int | None = None
    epochs: int | None = None
    started_at: float | None = None
    finished_at: float | None = None
    current: dict[str, Any] | None = None
    candidate: dict[str, Any] | None = None
    reasons: list[str] = field(default_factory=list)
    from_model: str | None = None
    to_model: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, with the elapsed seconds."""
        d = asdict(self)
        end = self.finished_at or time.time()
        d["elapsed_s"] = round(end - self.started_at) if self.started_at else None
        d["running"] = self.phase in RUNNING
        return d


class Shared:
    """The update's lock and status in files, for every gateway process on the machine.

    In production several gateway workers serve /admin: without this, a page polled by another
    worker showed 「空闲」 during a training, and a second 「重新训练」 there started a second
    one. The lock is an flock (released by the kernel when its process dies); the status is
    JSON, replaced atomically. A status that says running while nobody holds the lock is from
    a process that died mid-update, and is shown as failed.
    """

    def __init__(self, folder: Path) -> None:
        self.lock_path = folder / "model-update.lock"
        self.status_path = folder / "model-update.json"
        self._fd: int | None = None

    def acquire(self) -> bool:
        """Take the machine-wide lock (False: another process holds it)."""
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def held_elsewhere(self) -> bool:
        """Whether some process (another one, or another holder here) holds the lock."""
        if self._fd is not None:
            return True
        if not self.acquire():
            return True
        self.release()
        return False

    def write(self, status: Status) -> None:
        tmp = self.status_path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(asdict(status), ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, self.status_path)

    def read(self) -> Status | None:
        try:
            raw = json.loads(self.status_path.read_text(encoding="utf-8"))
            return Status(**raw)
        except (FileNotFoundError, ValueError, TypeError):
            return None


def _now() -> datetime:
    return datetime.now(timezone.utc)


class Updater:
    """One model update at a time, in a worker thread; the status is read by the page."""

    def __init__(
        self,
        trainer: Trainer,
        server: ModelServer,
        sessions: Callable[[], sessionmaker],
        *,
        models_dir: Path = ROOT / "models",
        rule: Rule | None = None,
        shared_dir: Path | None = None,
    ) -> None:
        """shared_dir: where the lock and the status live for every process (None: this
        process only, as in the unit tests)."""
        self.trainer, self.server, self.sessions = trainer, server, sessions
        self.models_dir, self.rule = models_dir, rule or Rule.from_env()
        self._lock = threading.Lock()  # held for the whole update or restore
        self._state = threading.Lock()
        self._status = Status()
        self._shared = Shared(shared_dir) if shared_dir is not None else None

    def status(self) -> dict[str, Any]:
        """A copy of the status (the last update's on this machine, whichever process ran it)."""
        with self._state:
            if self._shared is None or self._lock.locked():
                return self._status.as_dict()
            found = self._shared.read()
            if found is None:
                return self._status.as_dict()
            if found.phase in RUNNING and not self._shared.held_elsewhere():
                found.phase = "failed"
                found.detail = "训练所在的网关进程中途退出了，这次更新没有完成；可以重新训练"
                found.finished_at = found.finished_at or time.time()
            return found.as_dict()

    def _set(self, **changes: Any) -> None:
        with self._state:
            for k, v in changes.items():
                setattr(self._status, k, v)
            if self._shared is not None:
                with contextlib.suppress(OSError):  # the page shows this process's status then
                    self._shared.write(self._status)

    def _acquire(self, busy: str) -> None:
        """The lock of this process and, with a shared folder, of the machine; Busy if taken."""
        if not self._lock.acquire(blocking=False):
            raise Busy(busy)
        if self._shared is not None and not self._shared.acquire():
            self._lock.release()
            raise Busy(busy + "（另一个网关进程）")

    def _release(self) -> None:
        if self._shared is not None:
            self._shared.release()
        self._lock.release()

    def _line(self, phase: str) -> Progress:
        def on_line(line: str, epoch: int | None, epochs: int | None) -> None:
            # Rasa's and TensorFlow's own lines (warnings, source lines) mean nothing to an
            # admin: only the epochs and the evaluation's steps are shown; a failure shows the
            # tail of the output anyway.
            if epoch is not None:
                self._set(epoch=epoch, epochs=epochs, detail=f"第 {epoch}/{epochs} 轮")
            elif phase == "evaluating" and line.startswith("EVAL "):
                step, _, name = line.removeprefix("EVAL ").partition(" ")
                self._set(detail=f"在留出测试集上评估模型 {step}：{name}")

        return on_line

    def start(self, actor: str) -> threading.Thread:
        """Run the update in a daemon thread; Busy if one is running."""
        self._acquire("已经有一次训练在进行")
        self._status = Status()
        self._set(phase="validating", started_at=time.time())
        thread = threading.Thread(target=self._locked_run, args=(actor,), daemon=True)
        thread.start()
        return thread

    def _locked_run(self, actor: str) -> None:
        try:
            self._run(actor)
        finally:
            self._release()

    def run(self, actor: str) -> dict[str, Any]:
        """The update, in this thread (tests); the final status."""
        self._acquire("已经有一次训练在进行")
        self._status = Status()
        self._set(phase="validating", started_at=time.time())
        self._locked_run(actor)
        return self.status()

    def _current_path(self) -> Path | None:
        name = self.server.current_model()
        if not name:
            return None
        path = Path(name) if Path(name).is_absolute() else self.models_dir / name
        return path if path.exists() else None

    def _run(self, actor: str) -> None:
        current: Path | None = None
        candidate: Path | None = None
        try:
            self._set(phase="validating", detail="检查训练数据（rasa data validate）")
            self.trainer.validate(self._line("validating"))
            self._set(phase="training", detail="开始训练")
            candidate = self.trainer.train(self._line("training"))
            self._set(
                phase="evaluating", detail="在留出测试集上比较新旧模型", to_model=str(candidate)
            )
            current = self._current_path()
            models = [m for m in (current, candidate) if m is not None]
            figs = self.trainer.evaluate(models, self._line("evaluating"))
            old = figs.get(str(current)) if current else None
            new = figs[str(candidate)]
            verdict = compare(old, new, self.rule)
            self._set(
                current=old.as_dict() if old else None,
                candidate=new.as_dict(),
                reasons=list(verdict.reasons),
                from_model=str(current) if current else None,
            )
            if not verdict.accepted:
                self._record(actor, "refused", current, candidate, old, new, verdict)
                candidate.unlink(missing_ok=True)  # never served; 28 MB each
                self._set(phase="refused", detail="新模型比现在的差，没有启用")
                return
            self._set(phase="switching", detail="切换 Rasa 到新模型")
            final = self.models_dir / candidate.name
            self.models_dir.mkdir(parents=True, exist_ok=True)
            shutil.move(str(candidate), final)
            self.server.load(final)
            self._record(actor, "switch", current, final, old, new, verdict)
            self._set(phase="done", detail="已切换到新模型", to_model=str(final))
        except Exception as exc:  # the page must show every failure, not a stuck phase
            note = str(exc) or type(exc).__name__  # never an empty reason on the page
            self._record(actor, "failed", current, candidate, None, None, None, note=note)
            self._set(phase="failed", detail=(str(exc) or type(exc).__name__)[-3000:])
        finally:
            self._set(finished_at=time.time(), epoch=self._status.epoch)

    def _record(
        self,
        actor: str,
        action: str,
        frm: Path | None,
        to: Path | None,
        old: Figures | None,
        new: Figures | None,
        verdict: Verdict | None,
        note: str | None = None,
    ) -> None:
        figures = {
            "current": old.as_dict() if old else None,
            "candidate": new.as_dict() if new else None,
            "reasons": list(verdict.reasons) if verdict else [],
        }
        with self.sessions()() as session, session.begin():
            session.add(
                ModelSwitch(
                    at=_now(),
                    actor=actor,
                    action=action,
                    from_model=str(frm) if frm else None,
                    to_model=str(to) if to else None,
                    figures=figures,
                    note=(note or "")[-2000:] or None,
                )
            )

    def restore(self, actor: str, switch_id: int) -> Path:
        """Load the model a recorded switch replaced (newest again on disk); recorded."""
        self._acquire("训练进行中，稍后再恢复")
        try:
            with self.sessions()() as session:
                row = session.get(ModelSwitch, switch_id)
                target = Path(row.from_model) if row is not None and row.from_model else None
            if target is None or not target.exists():
                raise FileNotFoundError(f"找不到要恢复的模型文件：{target}")
            current = self._current_path()
            self.server.load(target)
            os.utime(target)  # the newest model in models/: `make run` starts with it too
            self._record(actor, "restore", current, target, None, None, None, f"撤回 #{switch_id}")
            return target
        finally:
            self._release()


def history(session: Session, limit: int = 20) -> list[ModelSwitch]:
    """The latest model decisions, newest first."""
    rows = session.execute(select(ModelSwitch).order_by(ModelSwitch.id.desc()).limit(limit))
    return list(rows.scalars())
