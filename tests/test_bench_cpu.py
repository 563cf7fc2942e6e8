"""bench/proc_cpu.py finds a stack by its gateway port and counts its processes' CPU."""

from __future__ import annotations

import socket
import subprocess
import sys

from bench.proc_cpu import StackCpu, part_of, report
from tests.conftest import free_port

CHILD = """
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen()
print("ready", flush=True)
sys.stdin.readline()          # burn CPU when told
end = time.process_time() + 0.4
while time.process_time() < end:
    pass
print("done", flush=True)
time.sleep(30)
"""
RUNNER = """
import subprocess, sys
child = subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2], "bot.cli" + " serve"])
child.wait()
"""


def test_finds_the_runner_and_counts_cpu_by_part() -> None:
    port = free_port()
    runner = subprocess.Popen(
        [sys.executable, "-c", RUNNER, CHILD, str(port), "ketepai run"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert runner.stdout is not None and runner.stdin is not None
        assert runner.stdout.readline().strip() == "ready"
        stack = StackCpu.find(port)
        assert stack is not None and stack.root == runner.pid
        before = stack.take()
        assert sorted(part for part, _ in before.values()) == ["gateway", "runner"]
        runner.stdin.write("go\n")
        runner.stdin.flush()
        assert runner.stdout.readline().strip() == "done"
        used = stack.since(before)
        assert used["gateway"] >= 0.3 and used["runner"] < 0.2
        text = report(used, 10)
        assert "gateway" in text and "CPU ceiling" in text
    finally:
        runner.kill()
        subprocess.run(["pkill", "-f", f"{port} bot.cli serve"], check=False)


def test_nothing_listening_is_none() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening
        assert StackCpu.find(port) is None


def test_parts() -> None:
    assert part_of("python -m rasa_sdk --actions actions --port 5055") == "actions"
    assert part_of("python -m bot.rasa_main run --enable-api") == "rasa"
    assert part_of("python -m bot.cli serve") == "gateway"
    assert part_of("python ketepai run") == "runner"
