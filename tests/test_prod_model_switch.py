"""Production mode with 2 Rasa (sanic) workers: an admin's model switch reaches every worker.

Each sanic worker holds its own agent and PUT /model (what /admin/model's switch and restore
call) reaches one of them: right after it, /status answers with the new model from one worker
and the old from the other. The supervisor sees the switched worker and restarts Rasa on that
model, after which every worker serves it."""

from __future__ import annotations

import json
import os
import shutil
import socket
import urllib.request
from pathlib import Path

import pytest

from bot.runner import newest_model
from tests.prod_helpers import ProdStack, wait_until

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.fault, pytest.mark.live]
TOKEN = "model-switch-test"


def _up(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _served(rasa: str) -> str | None:
    """The model one worker serves (a fresh connection each time: any worker may answer)."""
    try:
        with urllib.request.urlopen(f"{rasa}/status?token={TOKEN}", timeout=5) as resp:
            return str(json.loads(resp.read())["model_file"])
    except (OSError, ValueError, KeyError):
        return None


def test_a_model_switch_reaches_both_rasa_workers(tmp_path: Path) -> None:
    if not (_up(5432) and _up(6379)):
        if os.environ.get("CI"):
            pytest.fail("needs PostgreSQL :5432 and Redis :6379")
        pytest.skip("PostgreSQL or Redis not reachable")
    models = REPO / "models"
    current = newest_model(models)
    if current is None:
        pytest.fail("no trained model: run `make train`")
    # The "new" model: a copy under another name, a second older than the newest so that
    # nothing else starts on it (models/ is shared).
    switched = models / f"00000000-000000-switch-{os.getpid()}.tar.gz"
    shutil.copy2(current, switched)
    mtime = current.stat().st_mtime - 1
    os.utime(switched, (mtime, mtime))
    stack = ProdStack(tmp_path, KTP_RASA_WORKERS="2", RASA_TOKEN=TOKEN)
    rasa = f"http://127.0.0.1:{stack.env['RASA_PORT']}"
    try:
        assert stack.start(), stack.log.read_text()[-3000:]
        started_on = _served(rasa)
        assert started_on is not None and started_on != switched.name
        req = urllib.request.Request(
            f"{rasa}/model?token={TOKEN}",
            data=json.dumps({"model_file": str(switched)}).encode(),
            method="PUT",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=300) as resp:
            assert resp.status == 204
        seen = [_served(rasa) for _ in range(6)]  # before the supervisor acts (3 s settle)
        print("after PUT /model, /status said:", seen)

        def restarted() -> bool:
            return "a Rasa worker was switched" in stack.log.read_text(errors="replace")

        assert wait_until(restarted, 30, 0.5), stack.log.read_text()[-3000:]

        def all_switched() -> bool:
            answers = [_served(rasa) for _ in range(10)]
            return all(a == switched.name for a in answers)

        assert wait_until(all_switched, 240, 2.0), stack.log.read_text()[-3000:]
        # And the farmers are answered by it.
        assert wait_until(lambda: stack_healthy(stack), 60, 1.0)
    finally:
        stack.stop()
        switched.unlink(missing_ok=True)


def stack_healthy(stack: ProdStack) -> bool:
    from tests.prod_helpers import get

    return get(f"{stack.base}/healthz")[0] == 200
