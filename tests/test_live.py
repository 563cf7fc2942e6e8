"""The whole product, for real: `ketepai run` starts Rasa, the action server and the gateway;
a farmer asks through the simulator; the answer and its service record are checked; Ctrl-C
stops all three with nothing left behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from sqlalchemy import select

from bot import db
from bot.models import Message
from bot.runner import newest_model
from tests.conftest import free_port
from tests.live_stack import http_get, port_open, running_stack

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.live


def _post_json(url: str, payload: dict, timeout: float = 30) -> dict:
    req = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    if newest_model(REPO / "models") is None:
        pytest.fail("no trained model: run `make train` (make test does it first)")
    ports = {"KTP_PORT": free_port(), "RASA_PORT": free_port(), "ACTION_PORT": free_port()}
    db_url = f"sqlite:///{tmp_path_factory.mktemp('live')}/ketepai.db"
    env = {
        **os.environ,
        **{k: str(v) for k, v in ports.items()},
        "DATABASE_URL": db_url,
        # Rasa's conversations too, or a rerun meets the farmer's half-finished form of last time.
        "KTP_RASA_TRACKER_DB": str(tmp_path_factory.mktemp("rasa") / "trackers.db"),
        "KTP_SIMULATOR": "1",
    }
    log = tmp_path_factory.mktemp("logs") / "run.log"
    with running_stack(env, ports["KTP_PORT"], log) as proc:
        base = f"http://127.0.0.1:{ports['KTP_PORT']}"
        yield {"proc": proc, "base": base, "db_url": db_url, "ports": ports, "log": log}


def test_health_reports_all_parts_up(stack: dict) -> None:
    status, body = http_get(f"{stack['base']}/healthz")
    assert status == 200
    assert json.loads(body) == {"rasa": "ok", "actions": "ok", "db": "ok"}


def test_rasa_api_is_loopback_only_and_needs_the_token(stack: dict) -> None:
    rasa_port = stack["ports"]["RASA_PORT"]
    status, _ = http_get(f"http://127.0.0.1:{rasa_port}/conversations/x/tracker")
    assert status in {401, 403}


def test_first_question_gets_a_relevant_answer_and_is_recorded(stack: dict) -> None:
    started = time.perf_counter()
    result = _post_json(
        f"{stack['base']}/sim/api/send",
        {"openid": "live-farmer", "text": "猕猴桃叶子上有褐色斑点怎么办"},
    )
    elapsed_ms = round((time.perf_counter() - started) * 1000)
    print(f"first answer through the simulator: {elapsed_ms} ms")
    reply = result["reply"]
    assert reply and "猕猴桃" in reply and "褐斑病" in reply, result

    engine = db.make_engine(stack["db_url"])
    with db.make_sessionmaker(engine)() as session:
        rows = list(
            session.execute(
                select(Message).where(Message.openid == "live-farmer").order_by(Message.id)
            ).scalars()
        )
    engine.dispose()
    inbound, out = rows
    assert inbound.text == "猕猴桃叶子上有褐色斑点怎么办"
    assert inbound.intent == "ask_disease" and inbound.confidence > 0.5
    assert {"entity": "crop", "value": "猕猴桃"}.items() <= inbound.entities[0].items()
    assert out.text == reply and out.source == "kb:kiwi-brown-spot"


def test_ctrl_c_stops_all_three(stack: dict) -> None:
    proc: subprocess.Popen = stack["proc"]
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 0
    for name, port in stack["ports"].items():
        deadline = time.monotonic() + 10
        while port_open(port) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not port_open(port), f"{name} still listening after Ctrl-C"
