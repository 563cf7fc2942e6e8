"""Faults survived by the production mode (`ketepai run --prod`: 2 gateway workers, Rasa on the
PostgreSQL tracker store and the Redis lock store), under a small load: kill -9 a gateway
worker, the action server, the Rasa server; cut the database (a TCP proxy in front of
PostgreSQL, so the shared server is never stopped). Each time every farmer message is in the
records, every farmer got an answer or an acknowledgement followed by the pushed answer, and
the stack heals by itself."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from bot.runner import newest_model
from bot.settings import DEV_WECHAT_TOKEN
from tests.prod_helpers import (
    ProdStack,
    Sent,
    TcpProxy,
    find_child,
    get,
    is_ack,
    kill9,
    outcome,
    wait_until,
    wechat_post,
)

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.fault, pytest.mark.live]
QUESTIONS = ["猕猴桃叶子上有褐色斑点怎么办", "白菜长了菜青虫打什么药", "玉米叶子发黄是什么原因"]
HEAL_S = 240.0  # Rasa reloads its model in 30-120 s on this 2-core machine


def _up(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def prod(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    if not (_up("127.0.0.1", 5432) and _up("127.0.0.1", 6379)):
        if os.environ.get("CI"):
            pytest.fail("the fault tests need PostgreSQL :5432 and Redis :6379")
        pytest.skip("PostgreSQL or Redis not reachable")
    if newest_model(REPO / "models") is None:
        pytest.fail("no trained model: run `make train`")
    stack = ProdStack(
        tmp_path_factory.mktemp("prod"), KTP_RECOVER_FAILED_S="3", KTP_RECOVER_ACKED_S="20"
    )
    try:
        if not stack.start():
            pytest.fail(f"production stack not healthy:\n{stack.log.read_text()[-3000:]}")
        assert stack.proc is not None
        yield {
            "proc": stack.proc,
            "base": stack.base,
            "db_url": stack.db_url,
            "proxy": stack.proxy,
            "log": stack.log,
        }
    finally:
        stack.stop()
        (REPO / "var").mkdir(exist_ok=True)
        (REPO / "var" / "fault-run.log").write_bytes(stack.log.read_bytes())  # post-mortem


def _load(
    base: str,
    tag: str,
    during: Callable[[], None],
    farmers: int = 4,
    each: int = 4,
    gap_s: float = 0.3,
) -> list:
    """`farmers` farmers send `each` messages, `gap_s` apart; `during()` runs meanwhile."""
    first = int(time.time() * 1000) % 10**9 * 100

    def farmer(n: int) -> list[Sent]:
        out = []
        for k in range(each):
            msg_id = first + n * 10 + k
            out.append(wechat_post(base, DEV_WECHAT_TOKEN, f"{tag}-{n}", QUESTIONS[k % 3], msg_id))
            time.sleep(gap_s)
        return out

    with ThreadPoolExecutor(farmers + 1) as pool:
        futures = [pool.submit(farmer, n) for n in range(farmers)]
        time.sleep(1.0)
        during()
        return [s for f in futures for s in f.result()]


def _healed(prod: dict[str, Any]) -> bool:
    """Healthy, and a new question gets a real answer."""
    if get(f"{prod['base']}/healthz")[0] != 200:
        return False
    probe = wechat_post(prod["base"], DEV_WECHAT_TOKEN, "probe", QUESTIONS[0], time.time_ns())
    return bool(probe.reply) and not is_ack(probe.reply or "")


def _check(prod: dict[str, Any], sent: list[Sent]) -> None:
    assert len(sent) >= 8
    assert all(s.reply is not None for s in sent), [s for s in sent if s.reply is None]
    assert wait_until(lambda: _healed(prod), HEAL_S, 2.0), "did not recover"
    final: dict[str, list[Any]] = {}

    def settled() -> bool:
        final.update(outcome(prod["db_url"], sent))
        return not final["missing"] and not final["unanswered"]

    wait_until(settled, 90, 2.0)
    assert final["missing"] == [], "messages not in the records"
    assert final["unanswered"] == [], f"acknowledged but never answered: {final['why']}"


def test_gateway_worker_killed(prod: dict[str, Any]) -> None:
    def kill() -> None:
        kill9(find_child(prod["proc"].pid, "bot.cli serve"))

    _check(prod, _load(prod["base"], "gw", kill))


def test_action_server_killed(prod: dict[str, Any]) -> None:
    def kill() -> None:
        kill9(find_child(prod["proc"].pid, "rasa_sdk"))

    _check(prod, _load(prod["base"], "act", kill))


DB_CUT_S = 30.0  # the figure


def test_database_cut_for_30_s(prod: dict[str, Any]) -> None:
    proxy: TcpProxy = prod["proxy"]
    cut_at: list[float] = []

    def cut() -> None:
        proxy.cut()
        cut_at.append(time.monotonic())
        time.sleep(DB_CUT_S)
        proxy.restore()
        cut_at.append(time.monotonic())

    try:
        # Farmers keep writing through the whole cut: 12 messages each, 3 s apart.
        sent = _load(prod["base"], "db", cut, each=12, gap_s=3.0)
    finally:
        proxy.restore()
    assert cut_at[1] - cut_at[0] >= DB_CUT_S
    during_cut = [s for s in sent if cut_at[0] <= s.sent_at <= cut_at[1]]
    assert len(during_cut) >= 20, f"only {len(during_cut)} messages were sent during the cut"
    _check(prod, sent)
    status, body = get(f"{prod['base']}/metrics")
    assert status == 200 and "ktp_spooled_total" in body


def test_rasa_server_killed(prod: dict[str, Any]) -> None:
    def kill() -> None:
        kill9(find_child(prod["proc"].pid, "-m bot.rasa_main run"))

    _check(prod, _load(prod["base"], "rasa", kill))
    health = json.loads(get(f"{prod['base']}/healthz")[1])
    assert health == {"rasa": "ok", "actions": "ok", "db": "ok"}
