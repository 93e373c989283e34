"""Watching a shared machine around a CPU measurement: is it busy, is it slow?

`MachineProbe` reports a `Disturbance` for each measurement attempt (other processes'
CPU use, and how much slower than calm a fixed reference op ran); `WaitBudget` bounds how
long a measurer may pause for a disturbed machine to calm down. `timing.time_callable`
uses both (see measure.py for the protocol).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch


@dataclass(frozen=True)
class Disturbance:
    """Signs that the machine was disturbed while an attempt ran."""

    foreign_cores: float  # CPU time other processes used per wall second, cores
    slowdown: float  # a reference op's time over this machine's calm time, minus 1


class Probe(Protocol):
    """Watches the machine around an attempt: `stop(start())` says how disturbed it was."""

    def start(self) -> Any: ...

    def stop(self, token: Any) -> Disturbance: ...


class MachineProbe:
    """Detects the two ways a shared machine spoils a CPU measurement.

    * Other processes: the machine's busy time minus this process's own CPU time, per
      wall second (Linux /proc/stat). With every core in use, another job slows each run
      alike and leaves the IQR narrow, so a narrow spread alone proves nothing.
    * A slow machine: on a virtual machine, neighbours on the host slow every core by
      10-35% for seconds at a time, invisibly to /proc/stat. A fixed reference op (a
      matmul, ~2 ms) is timed before and after each attempt and compared with the
      fastest time seen in this process (its calm speed).

    Where /proc/stat is missing the first part reports 0 (no evidence either way).
    """

    def __init__(self, check_speed: bool = True, seed: int = 0):
        self.has_stat = os.path.exists("/proc/stat")
        self.tick_s = 1.0 / os.sysconf("SC_CLK_TCK") if self.has_stat else 0.0
        self.check_speed = check_speed
        gen = torch.Generator().manual_seed(seed)
        self._a = torch.randn(256, 384, generator=gen)  # a (T, d)-sized activation
        self._w = torch.randn(384, 384, generator=gen)
        self.calm_ms = math.inf  # fastest reference time seen so far

    def _busy_s(self) -> float:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        # user nice system idle iowait irq softirq steal: all but idle and iowait are busy;
        # steal (the hypervisor running someone else) slows us just as another job does.
        return sum(fields[i] for i in (0, 1, 2, 5, 6, 7) if i < len(fields)) * self.tick_s

    def reference_ms(self) -> float:
        """Median of 7 timings of 8 fixed (256 x 384) @ (384 x 384) matmuls, ms."""
        times = []
        with torch.inference_mode():
            for _ in range(7):
                start = time.perf_counter()
                for _ in range(8):
                    torch.mm(self._a, self._w)
                times.append(time.perf_counter() - start)
        return float(np.median(times) * 1e3)

    def _speed(self) -> float:
        if not self.check_speed:
            return 0.0
        if math.isinf(self.calm_ms):  # calibrate once: the best of a few readings
            self.calm_ms = min(self.reference_ms() for _ in range(10))
        t = self.reference_ms()
        self.calm_ms = min(self.calm_ms, t)
        return t

    def start(self) -> tuple[float, float, float, float]:
        ref = self._speed()
        busy = self._busy_s() if self.has_stat else 0.0
        return time.perf_counter(), busy, time.process_time(), ref

    def stop(self, token: tuple[float, float, float, float]) -> Disturbance:
        wall0, busy0, own0, ref0 = token
        foreign = 0.0
        if self.has_stat:
            wall, busy, own = time.perf_counter(), self._busy_s(), time.process_time()
            if wall > wall0:
                foreign = max(0.0, (busy - busy0) - (own - own0)) / (wall - wall0)
        slowdown = 0.0
        if self.check_speed:
            slowdown = max(ref0, self._speed()) / self.calm_ms - 1.0
        return Disturbance(foreign, slowdown)


class WaitBudget:
    """Seconds a measurer may still spend waiting out disturbances.

    It bounds how long a profile build can stall on a machine that never calms down:
    once spent, disturbed measurements are kept (the least disturbed attempt) and
    flagged instead of waited out.
    """

    def __init__(self, total_s: float = 90.0, sleep: Callable[[float], None] = time.sleep):
        self.left_s = total_s
        self.spent_s = 0.0
        self.sleep = sleep

    def wait(self, seconds: float) -> bool:
        """Sleep `seconds` if the budget allows; return whether it did."""
        if seconds > self.left_s:
            return False
        self.sleep(seconds)
        self.left_s -= seconds
        self.spent_s += seconds
        return True
