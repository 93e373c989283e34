"""Timing one callable by the protocol: warm-up, median of runs, IQR, repeats when noisy
or disturbed; and choosing the most trustworthy of several measurements of one thing.

`time_callable` is the protocol itself (see measure.py's docstring); `Measurer` sets the
threads, device and inference mode around it. Times are ms per call.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from .probe import Disturbance, Probe, WaitBudget

Clock = Callable[[], float]  # seconds, monotonic

CPU_RUNS = 30  # the protocol's minimum on the CPU
CUDA_RUNS = 100  # the protocol's minimum on CUDA


@dataclass(frozen=True)
class MeasureConfig:
    """How hard to measure. The defaults are the protocol; tests may lower them."""

    runs: int | None = None  # timed samples per attempt; None = 30 on CPU, 100 on CUDA
    warmup_iters: int = 10  # every attempt first makes at least this many untimed calls
    warmup_s: float = 0.5  # and spends at least this many seconds on them
    max_rel_iqr: float = 0.05  # IQR/median above this counts as noisy and is measured again
    max_attempts: int = 3  # uncontended attempts in all for a noisy measurement
    min_sample_ms: float = 0.0  # group calls until one sample lasts this long (0: one call)
    # An attempt is disturbed if other processes used more CPU than this (cores; with all
    # cores in use even 0.05 cores of another job can add 30%), or if the reference op
    # ran this much slower than the machine's calm speed.
    max_foreign_cores: float = 0.05
    max_slowdown: float = 0.10
    disturbed_wait_s: float = 1.0  # first pause before measuring a disturbed attempt again
    max_waits: int = 4  # disturbed attempts waited out, per measurement (pauses double)

    def runs_for(self, device: str) -> int:
        if self.runs is not None:
            return self.runs
        return CUDA_RUNS if device == "cuda" else CPU_RUNS

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Measurement:
    """The latency of one callable: the median of `runs` samples of `inner` calls each."""

    median_ms: float  # median time of one call, ms
    iqr_ms: float  # interquartile range of the per-call times, ms
    runs: int  # timed samples in the kept attempt
    inner: int  # calls per timed sample (1 unless min_sample_ms asked for more)
    attempts: int  # attempts made (more than 1 when noisy or contended)
    noisy: bool  # the kept attempt's IQR/median is above the threshold
    contended: bool  # the kept attempt was disturbed (other processes, or a slow machine)
    foreign_cores: float  # CPU other processes used during the kept attempt, cores
    slowdown: float  # how much slower than calm the machine was around it (0.1 = 10%)
    warmup_iters: int  # untimed calls before the kept attempt's timed runs
    warmup_s: float  # seconds those calls took

    @property
    def rel_iqr(self) -> float:
        """IQR/median, the spread the protocol bounds."""
        return self.iqr_ms / self.median_ms if self.median_ms > 0 else math.inf

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["rel_iqr"] = self.rel_iqr
        return out


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with `n` intra-op threads, restoring the previous count afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


# ------------------------------------------------------------------ timers
class _CpuTimer:
    """Wall-clock samples from a monotonic clock (injectable for tests)."""

    def __init__(self, clock: Clock):
        self.clock = clock

    def now(self) -> float:
        return self.clock()

    def sample(self, fn: Callable[[], Any], inner: int) -> float:
        """Seconds for `inner` calls of `fn`."""
        start = self.clock()
        for _ in range(inner):
            fn()
        return self.clock() - start


class _CudaTimer:
    """CUDA-event samples on the current stream; each sample is synchronised."""

    def __init__(self) -> None:
        self.clock = time.perf_counter

    def now(self) -> float:
        torch.cuda.synchronize()
        return self.clock()

    def sample(self, fn: Callable[[], Any], inner: int) -> float:
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(inner):
            fn()
        end.record()
        # Synchronising before the next sample keeps the host from running ahead: a
        # queued backlog would hide the launch gaps that a single forward pass pays.
        end.synchronize()
        return start.elapsed_time(end) / 1e3  # ms -> s


def _warm_up(
    timer: _CpuTimer | _CudaTimer, fn: Callable[[], Any], iters: int, seconds: float
) -> tuple[int, float]:
    """Call `fn` until both `iters` calls and `seconds` have passed; return (calls, seconds)."""
    start = timer.now()
    calls = 0
    while True:
        fn()
        calls += 1
        elapsed = timer.now() - start
        if calls >= iters and elapsed >= seconds:
            return calls, elapsed


def _attempt(timer, fn, runs: int, inner: int) -> np.ndarray:
    """`runs` per-call times in ms, each the mean of `inner` back-to-back calls."""
    return np.array([timer.sample(fn, inner) / inner * 1e3 for _ in range(runs)])


@dataclass(frozen=True)
class _Attempt:
    median: float  # ms
    iqr: float  # ms
    disturbance: Disturbance
    contended: bool
    warm_calls: int
    warm_s: float

    @property
    def rel(self) -> float:
        return self.iqr / self.median if self.median > 0 else math.inf


def time_callable(
    fn: Callable[[], Any],
    config: MeasureConfig,
    device: str = "cpu",
    clock: Clock | None = None,
    probe: Probe | None = None,
    waits: WaitBudget | None = None,
) -> Measurement:
    """Measure `fn()` by the protocol (warm-up, median of runs, repeat when noisy).

    Each attempt warms up, then times `runs` samples. An attempt that `probe` finds
    disturbed (see `MachineProbe`) is made again after a pause that doubles each time
    (at most `max_waits` pauses, within the `waits` budget). An undisturbed attempt with
    IQR/median above `max_rel_iqr` is noisy and is made again (at most `max_attempts`
    undisturbed attempts). The kept attempt is the quietest undisturbed one, else the
    fastest disturbed one (the least disturbed), flagged `contended`.

    The caller sets threads, inference mode and the device; `Measurer` does all three.
    `clock` (seconds), `probe` and `waits` (with its sleep) are injectable for tests.
    """
    runs = config.runs_for(device)
    if runs < 1 or config.max_attempts < 1:
        raise ValueError(f"need runs >= 1 and max_attempts >= 1, got {runs}, {config.max_attempts}")
    timer = _CudaTimer() if device == "cuda" else _CpuTimer(clock or time.perf_counter)
    waits = waits or WaitBudget(math.inf)
    inner = 0  # calibrated on the first warm-up
    done: list[_Attempt] = []
    paused = 0
    while True:
        token = probe.start() if probe else None
        calls, warm_s = _warm_up(timer, fn, config.warmup_iters, config.warmup_s)
        if inner == 0:
            inner = 1
            if config.min_sample_ms > 0:
                per_call_ms = warm_s / calls * 1e3
                inner = max(1, math.ceil(config.min_sample_ms / max(per_call_ms, 1e-6)))
        q1, median, q3 = np.percentile(_attempt(timer, fn, runs, inner), [25, 50, 75])
        seen = probe.stop(token) if probe else Disturbance(0.0, 0.0)
        contended = (
            seen.foreign_cores > config.max_foreign_cores or seen.slowdown > config.max_slowdown
        )
        attempt = _Attempt(float(median), float(q3 - q1), seen, contended, calls, warm_s)
        done.append(attempt)
        if contended:
            if paused < config.max_waits and waits.wait(config.disturbed_wait_s * 2**paused):
                paused += 1
                continue
            break
        if attempt.rel <= config.max_rel_iqr:
            break
        if sum(not a.contended for a in done) >= config.max_attempts:
            break
    quiet = [a for a in done if not a.contended]
    kept = min(quiet, key=lambda a: a.rel) if quiet else min(done, key=lambda a: a.median)
    return Measurement(
        median_ms=kept.median,
        iqr_ms=kept.iqr,
        runs=runs,
        inner=inner,
        attempts=len(done),
        noisy=bool(kept.rel > config.max_rel_iqr),
        contended=kept.contended,
        foreign_cores=kept.disturbance.foreign_cores,
        slowdown=kept.disturbance.slowdown,
        warmup_iters=kept.warm_calls,
        warmup_s=kept.warm_s,
    )


def less_disturbed(a: Measurement, b: Measurement) -> Measurement:
    """The more trustworthy of two measurements of the same thing.

    An undisturbed one beats a disturbed one; of two undisturbed, the quieter (lower
    IQR/median); of two disturbed, the faster (disturbance only ever adds time).
    """
    if a.contended != b.contended:
        return b if a.contended else a
    if a.contended:
        return a if a.median_ms <= b.median_ms else b
    return a if a.rel_iqr <= b.rel_iqr else b


def fastest_calm(measurements: Sequence[Measurement]) -> Measurement:
    """Of several measurements of one thing taken at different times, the most trustworthy.

    The fastest undisturbed one: on a shared host a slow spell can slow every run of one
    measurement alike (a narrow IQR, and too mild for the probe), but never speeds one
    up. With none undisturbed, the least disturbed (see `less_disturbed`).
    """
    calm = [m for m in measurements if not m.contended]
    if calm:
        return min(calm, key=lambda m: m.median_ms)
    return functools.reduce(less_disturbed, measurements)


def retry_disturbed(
    measurements: list[Measurement], measure: Callable[[int], Measurement]
) -> list[Measurement]:
    """Measure each disturbed item of a finished pass once more and keep the better.

    `measure(i)` measures item i again. Coming back at the end of a pass, minutes later,
    often finds the machine calm again when waiting a few seconds in place did not.
    """
    out = list(measurements)
    for i, m in enumerate(measurements):
        if m.contended:
            out[i] = less_disturbed(m, measure(i))
    return out
