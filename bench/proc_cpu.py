"""CPU time spent by each process of a running stack, for the load benchmarks.

Messages/s on a shared 2-core machine depend on what else runs; CPU milliseconds per message of
each of our processes do much less. `StackCpu.find(port)` finds the process listening on the
gateway's port, walks up to the `ketepai run` runner and takes all of its descendants; `take()`
reads their user+system CPU from /proc; `report()` prints the difference per message, by part
(gateway, rasa, actions), and the ceiling that CPU alone would put on this machine:
cores x 1000 / total CPU ms per message. Linux only (/proc).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def _listening_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            local, state, inode = cols[1], cols[3], cols[9]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:  # 0A = LISTEN
                inodes.add(inode)
    return inodes


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _owner_of(inodes: set[str]) -> int | None:
    wanted = {f"socket:[{i}]" for i in inodes}
    for pid in _pids():
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}") in wanted:
                    return pid
        except OSError:
            continue
    return None


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds) of a process, None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / TICK


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def part_of(cmdline: str) -> str:
    """Which part of the stack a command line is."""
    if "rasa_sdk" in cmdline:
        return "actions"
    if "bot.rasa_main" in cmdline or " rasa run" in cmdline or "-m rasa " in cmdline:
        return "rasa"
    if "bot.cli serve" in cmdline or "bot.app" in cmdline:
        return "gateway"
    return "runner"


@dataclass
class StackCpu:
    """The processes of one running stack and their CPU seconds at the last take()."""

    root: int
    seen: dict[int, tuple[str, float]] = field(default_factory=dict)

    @classmethod
    def find(cls, gateway_port: int) -> StackCpu | None:
        """The stack whose gateway listens on `gateway_port`, or None if not found."""
        pid = _owner_of(_listening_inodes(gateway_port))
        if pid is None:
            return None
        up = pid
        for _ in range(4):  # up to the runner (`ketepai run` / `--prod`), if there is one
            if "ketepai" in _cmdline(up):
                return cls(up)
            stat = _stat(up)
            if stat is None or stat[0] <= 1:
                break
            up = stat[0]
        return cls(pid)

    def _tree(self) -> dict[int, tuple[str, float]]:
        parents: dict[int, int] = {}
        cpu: dict[int, float] = {}
        for pid in _pids():
            stat = _stat(pid)
            if stat is not None:
                parents[pid], cpu[pid] = stat
        members, grew = {self.root}, True
        while grew:
            grew = False
            for pid, parent in parents.items():
                if parent in members and pid not in members:
                    members.add(pid)
                    grew = True
        return {pid: (part_of(_cmdline(pid)), cpu[pid]) for pid in members if pid in cpu}

    def take(self) -> dict[int, tuple[str, float]]:
        """Read every process's CPU seconds now; returns (and keeps) them."""
        self.seen = self._tree()
        return self.seen

    def since(self, before: dict[int, tuple[str, float]]) -> dict[str, float]:
        """CPU seconds by part since `before` (processes born since count from zero)."""
        now = self._tree()
        out: dict[str, float] = {}
        for pid, (part, secs) in now.items():
            start = before.get(pid, (part, 0.0))[1]
            out[part] = out.get(part, 0.0) + max(0.0, secs - start)
        return out


def report(by_part: dict[str, float], messages: int) -> str:
    """CPU ms per message, by part, and the ceiling CPU alone puts on messages/s here."""
    if messages <= 0:
        return "  CPU per message: no messages"
    per = {k: 1000 * v / messages for k, v in sorted(by_part.items())}
    total = sum(per.values())
    parts = "  ".join(f"{k} {v:.1f}" for k, v in per.items())
    cores = os.cpu_count() or 1
    ceiling = cores * 1000 / total if total else float("inf")
    return (
        f"  CPU ms/message: {parts}  total {total:.1f}\n"
        f"  CPU ceiling   : {ceiling:.0f} messages/s on {cores} cores (our processes alone)"
    )
