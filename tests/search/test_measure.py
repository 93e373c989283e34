"""The measurement protocol: warm-up, median of runs, IQR, repeats, threads, environment."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import make_tiny_space
from nas.core.errors import DeviceError
from nas.search.fingerprint import (
    Workload,
    WorkloadError,
    available_cores,
    device_fingerprint,
    environment,
)
from nas.search.measure import (
    Disturbance,
    MachineProbe,
    MeasureConfig,
    Measurement,
    Measurer,
    WaitBudget,
    fastest_calm,
    less_disturbed,
    random_model,
    retry_disturbed,
    time_callable,
)


class ScriptedClock:
    """A fake clock: each call of `fn` advances time by the next scripted duration (s)."""

    def __init__(self, durations: list[float]):
        self.t = 0.0
        self.durations = iter(durations)
        self.calls = 0

    def clock(self) -> float:
        return self.t

    def fn(self) -> None:
        self.calls += 1
        self.t += next(self.durations)


def test_defaults_are_the_protocol():
    config = MeasureConfig()
    assert config.runs_for("cpu") >= 30
    assert config.runs_for("cuda") >= 100
    assert config.warmup_iters >= 10 and config.warmup_s >= 0.5
    assert config.max_rel_iqr == 0.05 and config.max_attempts >= 2


def test_median_and_iqr_of_the_timed_runs():
    warmup = [1e-3] * 3
    runs = [1e-3, 2e-3, 3e-3, 4e-3, 5e-3]  # ms: median 3, q1 2, q3 4
    fake = ScriptedClock(warmup + runs)
    config = MeasureConfig(runs=5, warmup_iters=3, warmup_s=0.0, max_attempts=1)
    m = time_callable(fake.fn, config, clock=fake.clock)
    assert m.median_ms == pytest.approx(3.0)
    assert m.iqr_ms == pytest.approx(2.0)
    assert m.rel_iqr == pytest.approx(2.0 / 3.0)
    assert m.runs == 5 and m.inner == 1 and m.warmup_iters == 3
    assert m.noisy  # 67% spread, and no attempt left to repeat it
    assert fake.calls == 8


def test_warm_up_needs_both_iterations_and_seconds():
    # 1 ms calls with a 0.02 s floor: 20 warm-up calls, not the 10-iteration minimum.
    fake = ScriptedClock([1e-3] * 25)
    config = MeasureConfig(runs=5, warmup_iters=10, warmup_s=0.02, max_attempts=1)
    m = time_callable(fake.fn, config, clock=fake.clock)
    assert m.warmup_iters == 20 and m.warmup_s == pytest.approx(0.02)
    # And a slow call cannot end the warm-up before the iteration count.
    fake = ScriptedClock([1.0] * 15)
    m = time_callable(fake.fn, config, clock=fake.clock)
    assert m.warmup_iters == 10


def test_a_noisy_measurement_is_repeated_until_quiet():
    noisy = [1e-3, 1e-3, 5e-3, 1e-3, 9e-3]  # IQR/median 400%
    quiet = [2e-3] * 5
    fake = ScriptedClock([1e-3, *noisy, 1e-3, *quiet])  # each attempt warms up first
    config = MeasureConfig(runs=5, warmup_iters=1, warmup_s=0.0, max_attempts=3)
    m = time_callable(fake.fn, config, clock=fake.clock)
    assert m.attempts == 2 and not m.noisy
    assert m.median_ms == pytest.approx(2.0) and m.iqr_ms == pytest.approx(0.0)


def test_when_every_attempt_is_noisy_the_quietest_is_kept_and_flagged():
    a = [1e-3, 1e-3, 9e-3, 1e-3, 9e-3]  # median 1, IQR 8
    b = [2e-3, 2e-3, 3e-3, 2e-3, 3e-3]  # median 2, IQR 1: quietest
    c = [4e-3, 4e-3, 8e-3, 4e-3, 8e-3]  # median 4, IQR 4
    fake = ScriptedClock([1e-3, *a, 1e-3, *b, 1e-3, *c])
    config = MeasureConfig(runs=5, warmup_iters=1, warmup_s=0.0, max_attempts=3)
    m = time_callable(fake.fn, config, clock=fake.clock)
    assert m.attempts == 3 and m.noisy
    assert m.median_ms == pytest.approx(2.0) and m.rel_iqr == pytest.approx(0.5)


class ScriptedProbe:
    """Reports a scripted disturbance per attempt: (foreign cores, slowdown)."""

    def __init__(self, seen: list[tuple[float, float]]):
        self.seen = iter(seen)

    def start(self) -> None:
        return None

    def stop(self, token) -> Disturbance:
        return Disturbance(*next(self.seen))


def test_a_disturbed_attempt_is_waited_out_and_measured_again():
    slow, clean = [8e-3] * 5, [2e-3] * 5  # another job slowed every run alike: IQR 0
    fake = ScriptedClock([1e-3, *slow, 1e-3, *slow, 1e-3, *clean])
    pauses: list[float] = []
    config = MeasureConfig(runs=5, warmup_iters=1, warmup_s=0.0, disturbed_wait_s=3.0)
    probe = ScriptedProbe([(1.5, 0.0), (0.0, 0.3), (0.0, 0.02)])  # busy, then slow, then calm
    m = time_callable(
        fake.fn, config, clock=fake.clock, probe=probe, waits=WaitBudget(sleep=pauses.append)
    )
    assert pauses == [3.0, 6.0]  # each pause doubles
    assert m.attempts == 3 and not m.contended and m.median_ms == pytest.approx(2.0)
    assert m.slowdown == pytest.approx(0.02)


def test_disturbance_that_never_ends_is_bounded_and_flagged():
    runs = [[6e-3] * 5, [3e-3] * 5, [9e-3] * 5]
    fake = ScriptedClock([x for r in runs for x in [1e-3, *r]])
    pauses: list[float] = []
    config = MeasureConfig(runs=5, warmup_iters=1, warmup_s=0.0, max_waits=2)
    probe = ScriptedProbe([(1.0, 0.0), (0.9, 0.0), (1.2, 0.0)])
    m = time_callable(
        fake.fn, config, clock=fake.clock, probe=probe, waits=WaitBudget(sleep=pauses.append)
    )
    assert len(pauses) == 2 and m.attempts == 3
    assert m.contended and m.foreign_cores == pytest.approx(0.9)
    assert m.median_ms == pytest.approx(3.0)  # the least disturbed attempt


def test_the_wait_budget_bounds_the_pauses():
    fake = ScriptedClock([1e-3] * 100)
    pauses: list[float] = []
    config = MeasureConfig(runs=5, warmup_iters=1, warmup_s=0.0, disturbed_wait_s=1.0)
    probe = ScriptedProbe([(1.0, 0.0)] * 10)
    m = time_callable(
        fake.fn, config, clock=fake.clock, probe=probe, waits=WaitBudget(2.5, sleep=pauses.append)
    )
    assert pauses == [1.0]  # the 2 s pause would overrun the 2.5 s budget
    assert m.attempts == 2 and m.contended


def test_machine_probe_sees_another_busy_process():
    probe = MachineProbe(check_speed=False)
    if not probe.has_stat:
        pytest.skip("no /proc/stat here")
    token = probe.start()
    code = "import time\nt = time.time()\nwhile time.time() - t < 0.6: pass"
    subprocess.run([sys.executable, "-c", code], check=True)
    assert probe.stop(token).foreign_cores > 0.3


def test_machine_probe_measures_speed_against_its_calm_reference():
    probe = MachineProbe()
    readings: list[float] = []
    real = probe.reference_ms

    def recorded() -> float:
        readings.append(real())
        return readings[-1]

    probe.reference_ms = recorded
    seen = probe.stop(probe.start())
    assert 0 < probe.calm_ms < math.inf
    # 10 calibration readings, one before the attempt and one after; the calm speed is the
    # fastest of all, and the slowdown is the slower of the two around the attempt over it.
    assert len(readings) == 12 and probe.calm_ms == min(readings)
    assert seen.slowdown == pytest.approx(max(readings[10:]) / min(readings) - 1.0)


def test_machine_probe_reports_a_known_slowdown_exactly():
    probe = MachineProbe(check_speed=True)
    scripted = iter([2.0] * 10 + [2.5, 2.2] + [1.6, 1.8])  # reference op times, ms
    probe.reference_ms = lambda: next(scripted)
    # Calm is 2.0 ms (calibration); the slower reading around the attempt is 2.5 ms (the
    # one before it): 25% slower.
    assert probe.stop(probe.start()).slowdown == pytest.approx(0.25)
    # A faster reading lowers the calm speed first: 1.8 ms against 1.6 ms is 12.5% slower.
    assert probe.stop(probe.start()).slowdown == pytest.approx(0.125)
    assert probe.calm_ms == pytest.approx(1.6)


def test_short_calls_are_grouped_into_samples_of_min_sample_ms():
    fake = ScriptedClock([1e-4] * (4 + 3 * 10))  # 0.1 ms calls
    config = MeasureConfig(runs=3, warmup_iters=4, warmup_s=0.0, min_sample_ms=1.0)
    m = time_callable(fake.fn, config, clock=fake.clock)
    assert m.inner == 10
    assert m.median_ms == pytest.approx(0.1)


def test_measurer_sets_threads_and_inference_mode_and_restores_threads():
    seen = []

    def fn():
        seen.append((torch.get_num_threads(), torch.is_inference_mode_enabled()))

    before = torch.get_num_threads()
    measurer = Measurer(
        Workload(threads=1), MeasureConfig(runs=3, warmup_iters=1, warmup_s=0, max_waits=0)
    )
    measurer.measure(fn)
    assert set(seen) == {(1, True)}
    assert torch.get_num_threads() == before


def test_threads_default_to_all_available_cores_and_are_recorded():
    workload = Workload()
    assert workload.threads == available_cores()
    env = environment(workload)
    for key in (
        "cpu_model",
        "cpu_cores",
        "threads",
        "torch",
        "gpu_name",
        "gpu_driver",
        "dtype",
        "mode",
        "batch",
        "seq_len",
    ):
        assert key in env
    assert env["threads"] == available_cores()


def test_fingerprint_changes_with_the_workload():
    base = device_fingerprint(environment(Workload(seq_len=16)))
    assert base == device_fingerprint(environment(Workload(seq_len=16)))
    for other in (
        Workload(seq_len=32),
        Workload(seq_len=16, batch=2),
        Workload(seq_len=16, threads=1 if available_cores() > 1 else 2),
    ):
        assert device_fingerprint(environment(other)) != base


def test_bad_workloads_are_user_errors():
    with pytest.raises(DeviceError, match="unknown device 'tpu'"):
        Workload(device="tpu")
    with pytest.raises(DeviceError, match="graph"):
        Workload(mode="graph")
    with pytest.raises(WorkloadError):
        Workload(batch=0)
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="no CUDA device"):
            Workload(device="cuda").check_available()


def test_measure_arch_times_the_extracted_model():
    space = make_tiny_space()
    measurer = Measurer(
        Workload(seq_len=16, threads=1),
        MeasureConfig(runs=5, warmup_iters=2, warmup_s=0.0, max_waits=0),
    )
    m = measurer.measure_arch(space, space.largest())
    assert m.median_ms > 0 and m.runs == 5 and np.isfinite(m.rel_iqr)


def test_random_model_is_seeded_and_not_zero():
    space = make_tiny_space()
    arch = space.sample(seed=3)
    a, b = random_model(space, arch, seed=1), random_model(space, arch, seed=1)
    for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q), name
        assert p.abs().sum() > 0, name


def _m(median: float, rel: float = 0.01, contended: bool = False) -> Measurement:
    return Measurement(median, rel * median, 30, 1, 1, rel > 0.05, contended, 0.0, 0.0, 10, 0.5)


def test_less_disturbed_prefers_undisturbed_then_quieter_then_faster():
    calm, busy = _m(5.0, rel=0.04), _m(4.0, contended=True)
    assert less_disturbed(busy, calm) is calm and less_disturbed(calm, busy) is calm
    quieter = _m(6.0, rel=0.01)
    assert less_disturbed(calm, quieter) is quieter
    slow_busy = _m(9.0, contended=True)
    assert less_disturbed(slow_busy, busy) is busy


def test_retry_disturbed_measures_only_the_disturbed_again():
    first = [_m(1.0), _m(9.0, contended=True), _m(3.0)]
    asked = []

    def measure(i: int) -> Measurement:
        asked.append(i)
        return _m(2.0)

    again = retry_disturbed(first, measure)
    assert asked == [1]
    assert [m.median_ms for m in again] == [1.0, 2.0, 3.0]


def test_fastest_calm_keeps_the_fastest_undisturbed_else_the_least_disturbed():
    slow, fast, faster_busy = _m(5.0), _m(4.0, rel=0.04), _m(3.0, contended=True)
    assert fastest_calm([slow, faster_busy, fast]) is fast
    busy_slow = _m(7.0, contended=True)
    assert fastest_calm([busy_slow, faster_busy]) is faster_busy
    assert fastest_calm([slow]) is slow
