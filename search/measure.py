"""The one way `nas` measures latency, on the CPU and on CUDA.

Every latency figure in the project (kernel table, whole-model fits, held-out checks,
`nas latency --measure`, the winner of a search) comes from `Measurer`, so that they all
follow the same protocol (see shared/notes/latency-measurement.md):

* CPU: the thread count is set explicitly and recorded; the callable runs under
  `torch.inference_mode`; it warms up for at least `warmup_iters` calls and `warmup_s`
  seconds; the figure is the median of at least `runs` timed samples, with IQR/median
  kept; a measurement whose IQR/median exceeds `max_rel_iqr` is taken again. Each attempt
  is watched by `MachineProbe`: one made while other processes used the CPU, or while
  the machine ran slower than its calm speed, is waited out and taken again, and
  flagged `contended` if the machine never calms down.
* CUDA: samples are timed with CUDA events on the current stream, each sample
  synchronised before the next so that launch gaps count (they are part of a batch-1
  forward pass). Eager mode times the Python forward; graph mode captures it once in a
  CUDA graph and times replays. Inputs live on the device before timing starts.

Latency is one forward pass, in ms, for a fixed (batch, seq_len) workload.
"""

from __future__ import annotations

import functools
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from nas.search_space import Arch, SearchSpace
from nas.supernet import NetConstants, StaticModel
from nas.supernet.static import FORMAT as STATIC_FORMAT

from .fingerprint import Workload

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


# ------------------------------------------------------------------ models
def random_model(space: SearchSpace, arch: Arch, seed: int = 0) -> StaticModel:
    """The extracted model of `arch`, with seeded random weights instead of trained ones.

    Latency does not depend on the weight values, but all-zero weights could take fast
    paths that trained weights never do, so the weights are drawn at the supernet's
    initial scale (N(0, 0.02)) from a seeded generator.
    """
    config = {
        "format": STATIC_FORMAT,
        "constants": NetConstants.from_space(space).to_dict(),
        "arch": arch.to_dict(),
    }
    model = StaticModel.from_config(config)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.02, generator=gen)
    return model.eval()


class Measurer:
    """Measures callables and models for one `Workload`, by the protocol above.

    It owns the workload's fixed input (a (batch, seq_len) int64 token tensor on the
    device) so that every measurement sees the same shapes.
    """

    def __init__(
        self,
        workload: Workload,
        config: MeasureConfig | None = None,
        clock: Clock | None = None,
        seed: int = 0,
        probe: Probe | None = None,
        waits: WaitBudget | None = None,
    ):
        workload.check_available()
        self.workload = workload
        self.config = config or MeasureConfig()
        self.clock = clock
        # The probe is on unless a fake clock is in use (a fake clock's attempts take no
        # wall time, so the machine's state over them means nothing). On CUDA only the
        # host's load is watched: the reference op would time the CPU, not the GPU.
        if probe is None and clock is None:
            probe = MachineProbe(check_speed=workload.device == "cpu")
        self.probe = probe
        self.waits = waits or WaitBudget()
        self.device = torch.device(workload.device)
        gen = torch.Generator().manual_seed(seed)
        # Created once, on the device, outside every timed region.
        self.tokens = torch.randint(0, 256, (workload.batch, workload.seq_len), generator=gen).to(
            self.device
        )  # (B, T) int64

    def tokens_for(self, vocab_size: int) -> torch.Tensor:
        """The fixed (B, T) token input, folded into `vocab_size`."""
        return self.tokens % vocab_size

    def hidden(self, d_model: int, seed: int = 0) -> torch.Tensor:
        """A fixed (B, T, d_model) activation, as the blocks of a model receive it."""
        gen = torch.Generator().manual_seed(seed)
        shape = (self.workload.batch, self.workload.seq_len, d_model)
        x = torch.randn(shape, generator=gen) * 0.02
        return x.to(self.device, self.workload.torch_dtype)

    def prepare(self, module: nn.Module) -> nn.Module:
        """`module` in eval mode, on the device, in the workload's dtype."""
        return module.eval().to(self.device, self.workload.torch_dtype)

    def measure(self, fn: Callable[[], Any], config: MeasureConfig | None = None) -> Measurement:
        """Measure `fn()` (one forward pass) under the workload's threads, device and mode."""
        config = config or self.config
        with torch_threads(self.workload.threads), torch.inference_mode():
            if self.workload.mode == "graph":
                fn = _capture_graph(fn)
            return time_callable(
                fn, config, self.workload.device, self.clock, self.probe, self.waits
            )

    def measure_model(self, model: nn.Module, config: MeasureConfig | None = None) -> Measurement:
        """One forward pass of `model(tokens)` on the workload's fixed tokens."""
        model = self.prepare(model)
        vocab = getattr(getattr(model, "consts", None), "vocab_size", 256)
        tokens = self.tokens_for(vocab)
        return self.measure(lambda: model(tokens), config)

    def measure_arch(
        self, space: SearchSpace, arch: Arch, config: MeasureConfig | None = None, seed: int = 0
    ) -> Measurement:
        """The extracted model of `arch` (seeded random weights), one forward pass."""
        return self.measure_model(random_model(space, arch, seed), config)


def _capture_graph(fn: Callable[[], Any]) -> Callable[[], Any]:
    """Capture `fn` in a CUDA graph and return its replay.

    The warm-up runs on a side stream first, as CUDA-graph capture requires; the inputs
    `fn` closes over are static tensors already on the device, so replays re-read them.
    """
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    torch.cuda.synchronize()
    return graph.replay
