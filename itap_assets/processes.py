"""Is the process that ran a Dagster run still there? Pid, host and start time, so a reused pid is not mistaken
for the process that died.

Linux: `/proc/<pid>/stat` gives the start time (clock ticks since boot), which stays the same for the life of a
process and differs for a later process given the same pid. Elsewhere only `os.kill(pid, 0)` answers (a reused pid
then reads as alive).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

# Start times read from /proc are exact, but the boot time they are added to is whole seconds and follows clock
# steps: a process that started this close after a timestamp is still taken as running at that timestamp.
START_TOLERANCE_S = 2.0


@dataclass(frozen=True)
class ProcessIdentity:
    host: str
    pid: int
    start_ticks: int | None  # /proc/<pid>/stat field 22; None where /proc is not available


def host_name() -> str:
    return socket.gethostname()


def start_ticks(pid: int) -> int | None:
    """When process `pid` started, in clock ticks since boot; None when there is no such process or no /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces: count fields after its closing one.
    return int(stat.rsplit(")", 1)[1].split()[19])


def start_epoch(pid: int) -> float | None:
    """When process `pid` started, in seconds since the epoch (Linux); None when unknown."""
    ticks = start_ticks(pid)
    if ticks is None:
        return None
    boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                if line.startswith("btime "))
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def current_process() -> ProcessIdentity:
    return ProcessIdentity(host_name(), os.getpid(), start_ticks(os.getpid()))


def pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: it exists
    return True


def is_gone(process: ProcessIdentity) -> bool:
    """True when `process` no longer runs on this host: its pid is free or now names a later process.
    Only meaningful for a process of this host (check `process.host` first)."""
    if not pid_exists(process.pid):
        return True
    if process.start_ticks is None:
        return False
    now = start_ticks(process.pid)
    return now is not None and now != process.start_ticks


def gone_since(pid: int, running_at: float) -> bool:
    """True when no process with `pid` that was already running at `running_at` (epoch seconds) is left: the
    pid is free, or the process holding it started later (a reused pid)."""
    if not pid_exists(pid):
        return True
    started = start_epoch(pid)
    return started is not None and started > running_at + START_TOLERANCE_S
