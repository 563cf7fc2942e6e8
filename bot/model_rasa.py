"""The real collaborators of a model update: Rasa's CLI in child processes (validate, train,
evaluate) and the running Rasa server's HTTP API (which model is loaded, load another)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bot.model_eval import HELDOUT, Figures

ROOT = Path(__file__).resolve().parents[1]
CANDIDATES = ROOT / "var" / "model-candidates"
# tqdm's bar as DIET prints it: "Epochs:  45%|████▌     | 27/60 [00:10<00:12, ...]"
EPOCH = re.compile(r"Epochs:\s*\d+%\|[^|]*\|\s*(\d+)/(\d+)")
CHILD_ENV = {
    "RASA_TELEMETRY_ENABLED": "false",
    "TF_CPP_MIN_LOG_LEVEL": "2",
    "PYTHONWARNINGS": "ignore::DeprecationWarning,ignore::PendingDeprecationWarning",
    "PYTHONUNBUFFERED": "1",
}
Progress = Callable[[str, int | None, int | None], None]  # (line, epoch, epochs)
# bot.model_eval's answer; anything (a colour code) may precede it on its line.
FIGURES = re.compile(r"FIGURES (\{.*\})\s*$", re.MULTILINE)


class StepFailed(RuntimeError):
    """A child process failed; the message ends with the tail of its output."""


def epoch_of(line: str) -> tuple[int, int] | None:
    """(epoch, epochs) from a line of Rasa's training output, if it is a progress bar."""
    m = EPOCH.search(line)
    return (int(m.group(1)), int(m.group(2))) if m else None


def run_child(argv: Sequence[str], on_line: Progress | None = None, cwd: Path = ROOT) -> str:
    """Run `argv` niced, feeding each output line (tqdm's \\r lines too); its whole output."""
    proc = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
        ["/usr/bin/nice", "-n", "10", *argv],
        cwd=cwd,
        env={**os.environ, **CHILD_ENV},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert proc.stdout is not None
    out: list[str] = []
    pending = b""
    while chunk := proc.stdout.read1(4096):  # type: ignore[attr-defined]
        pending += chunk
        *lines, pending = re.split(rb"[\r\n]", pending)
        for raw in lines:
            line = raw.decode("utf-8", "replace").strip()
            if line:
                out.append(line)
                if on_line is not None:
                    ep = epoch_of(line)
                    on_line(line, *(ep or (None, None)))
    text = "\n".join(out[-400:])
    if proc.wait() != 0:
        raise StepFailed(f"{' '.join(argv[:4])} … 失败（{proc.returncode}）：\n{text[-2500:]}")
    return text


class RasaTrainer:
    """Validates the training data, trains a candidate and evaluates models on the held-out set."""

    def __init__(
        self,
        *,
        config: Path = ROOT / "config.yml",
        data: Path = ROOT / "nlu_data",
        domain: Path = ROOT / "domain.yml",
        out: Path = CANDIDATES,
        heldout: Path = HELDOUT,
    ) -> None:
        self.config, self.data, self.domain, self.out, self.heldout = (
            config,
            data,
            domain,
            out,
            heldout,
        )
        self._rasa = [sys.executable, "-m", "rasa"]

    def validate(self, on_line: Progress) -> None:
        """`rasa data validate` with warnings as failures (as `make validate`)."""
        run_child(
            [*self._rasa, "data", "validate", "--data", str(self.data), "--domain",
             str(self.domain), "--config", str(self.config), "--fail-on-warnings"],
            on_line,
        )  # fmt: skip

    def train(self, on_line: Progress) -> Path:
        """`rasa train` into the candidates folder (never models/ until it is accepted)."""
        self.out.mkdir(parents=True, exist_ok=True)
        name = time.strftime("%Y%m%d-%H%M%S") + "-candidate"
        run_child(
            [*self._rasa, "train", "--data", str(self.data), "--config", str(self.config),
             "--domain", str(self.domain), "--out", str(self.out), "--fixed-model-name", name],
            on_line,
        )  # fmt: skip
        return self.out / f"{name}.tar.gz"

    def evaluate(self, models: Sequence[Path], on_line: Progress) -> dict[str, Figures]:
        """Figures of every model, computed by one child with the same code (bot.model_eval)."""
        text = run_child(
            [sys.executable, "-m", "bot.model_eval", *map(str, models), "--heldout",
             str(self.heldout)],
            on_line,
        )  # fmt: skip
        found = [m.group(1) for m in FIGURES.finditer(text)]
        if not found:
            raise StepFailed(f"评估没有给出结果：\n{text[-2500:]}")
        raw = json.loads(found[-1])
        return {k: Figures.from_dict(v) for k, v in raw.items()}


class SwitchFailed(RuntimeError):
    """The Rasa server did not load the model."""


class RasaModelApi:
    """The Rasa server's model endpoints (blocking; call from a worker thread)."""

    def __init__(self, base_url: str, token: str | None) -> None:
        self.base = base_url.rstrip("/")
        self.query = "?" + urllib.parse.urlencode({"token": token}) if token else ""

    def _call(self, method: str, path: str, body: Any = None, timeout: float = 10) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(  # noqa: S310 - the loopback Rasa URL from settings
            self.base + path + self.query,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
            raw = resp.read()
        return json.loads(raw) if raw else None

    def current_model(self) -> str | None:
        """The file name of the model Rasa has loaded (GET /status), None if none or down."""
        try:
            return (self._call("GET", "/status") or {}).get("model_file") or None
        except (urllib.error.URLError, OSError, ValueError):
            return None

    def load(self, model: Path) -> None:
        """PUT /model: Rasa loads `model` and swaps its agent (lock store kept)."""
        try:
            self._call("PUT", "/model", {"model_file": str(model.resolve())}, timeout=600)
        except urllib.error.HTTPError as exc:
            raise SwitchFailed(
                f"Rasa 拒绝加载模型（HTTP {exc.code}）：{exc.read()[:500]!r}"
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            raise SwitchFailed(f"连不上 Rasa：{exc}") from None
