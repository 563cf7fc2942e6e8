"""Starting the real stack (`ketepai run`) for live tests, and stopping it like Ctrl-C does."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HEALTHY_WITHIN_S = 300


def http_get(url: str, timeout: float = 3) -> tuple[int, bytes]:
    """Status and body of a GET, HTTP errors included."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def port_open(port: int) -> bool:
    """Whether something listens on the loopback port."""
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@contextmanager
def running_stack(
    env: dict[str, str], port: int, log: Path, cwd: Path = REPO
) -> Iterator[subprocess.Popen]:
    """`ketepai run` with `env`, healthy on `port`; SIGINT (as Ctrl-C) on the way out.

    `cwd`: a copy of the repo runs its own code, data and models (`python -m` imports from it)."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bot.cli", "run"], cwd=cwd, env=env, stdout=out, stderr=out
        )
    try:
        deadline = time.monotonic() + HEALTHY_WITHIN_S
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"ketepai run exited early:\n{log.read_text()[-3000:]}")
            if port_open(port) and http_get(f"http://127.0.0.1:{port}/healthz")[0] == 200:
                break
            time.sleep(1)
        else:
            pytest.fail(f"stack not healthy in time:\n{log.read_text()[-3000:]}")
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
