"""CPU accounting for the benches: what a phase cost each process, read from /proc.

A process's CPU is ``utime + stime`` of ``/proc/PID/stat`` (every thread of it, kernel time
included: an fsync's or a socket's system time counts), read before and after a phase. The
machine's busy cores over the same span come from the first line of ``/proc/stat``, so a
record says whether the shared machine itself was saturated. Linux only; elsewhere every
figure is None and the bench still runs.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from typing import Any

_TICK_S = 1.0 / os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 0.01
NEAR_CEILING = 0.9  # a generator using >= 90% of the cores it could use is "near its ceiling"


def process_times_s(pid: int | None) -> tuple[float, float] | None:
    """(utime, stime) of process `pid` in seconds, or None if it is gone (or not Linux)."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read().decode()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) ": state is field 3
    return int(fields[11]) * _TICK_S, int(fields[12]) * _TICK_S  # fields 14, 15 of proc(5)


def process_cpu_s(pid: int | None) -> float | None:
    """utime + stime of process `pid` in seconds, or None if it is gone (or not Linux)."""
    times = process_times_s(pid)
    return None if times is None else times[0] + times[1]


def machine_busy_s() -> float | None:
    """CPU seconds the whole machine spent not idle (all cores) since boot."""
    try:
        with open("/proc/stat", "rb") as f:
            head = f.readline().split()
    except OSError:
        return None
    ticks = [int(x) for x in head[1:]]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    return (sum(ticks[:8]) - idle) * _TICK_S


class Meter:
    """CPU seconds of some processes and of the machine over one phase (``with`` block)."""

    def __init__(self, pids: dict[str, int | None]) -> None:
        self.pids = pids
        self.cpu_s: dict[str, float | None] = {}
        self.sys_s: dict[str, float | None] = {}  # the kernel's part of cpu_s
        self.machine_busy_cores: float | None = None
        self.wall_s = 0.0

    def __enter__(self) -> Meter:
        self._start = {name: process_times_s(pid) for name, pid in self.pids.items()}
        self._busy = machine_busy_s()
        self._t0 = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall_s = time.monotonic() - self._t0
        for name, pid in self.pids.items():
            before, after = self._start[name], process_times_s(pid)
            if before is None or after is None:
                self.cpu_s[name] = self.sys_s[name] = None
            else:
                self.cpu_s[name] = sum(after) - sum(before)
                self.sys_s[name] = after[1] - before[1]
        busy = machine_busy_s()
        if busy is not None and self._busy is not None and self.wall_s > 0:
            self.machine_busy_cores = (busy - self._busy) / self.wall_s


def per_write_us(cpu_s: float | None, writes: int) -> float | None:
    return None if cpu_s is None or writes <= 0 else cpu_s / writes * 1e6


def generator(
    cpu_s: float | None, wall_s: float, writes: int, ceiling_cores: float, **extra: Any
) -> dict[str, Any]:
    """One load generator's cost: CPU per write, cores used, and whether it was near the
    cores it could use (`ceiling_cores`: one per Python process, its GIL, at most the
    machine's cores)."""
    cores = None if cpu_s is None or wall_s <= 0 else cpu_s / wall_s
    return {
        "cpu_s": cpu_s,
        "cpu_us_per_write": per_write_us(cpu_s, writes),
        "cores": cores,
        "ceiling_cores": ceiling_cores,
        "near_ceiling": None if cores is None else cores >= NEAR_CEILING * ceiling_cores,
        **extra,
    }


def ceiling_cores(python_processes: int) -> float:
    """The cores `python_processes` load processes can use: one each (their GIL), at most
    the machine's."""
    return float(min(os.cpu_count() or 1, python_processes))


def total(values: Iterable[float | None]) -> float | None:
    got = list(values)
    return None if any(v is None for v in got) else sum(v for v in got if v is not None)
