"""How far this host's speed has moved since its latency profile was built.

A profile is a snapshot of a host whose speed moves: on these machines the same archs
measured an hour after a build came out about 11% slower than the profile said (MAPE
11-13%), where right after the build they were within the 5-7% rerun noise (see
shared/notes/latency-measurement.md). So anything that relies on a profile later
(a search, `nas latency --measure`) first re-times a few archs the profile measured at
build time, with the profile's own protocol, and compares:

* the drift ratio is the median over those archs of (time now / time at build);
* it is applied (predictions are multiplied by it) only when it exceeds the noise, the
  profile's own rerun noise floor (its accuracy report's NOISE row), so that ordinary
  rerun noise is never mistaken for drift.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nas.core.errors import ProfileError
from nas.search_space import Arch, SearchSpace

from .accuracy import NOISE
from .measure import MeasureConfig, Measurer, retry_disturbed
from .profile import Profile, Step, check_device, check_space

# Rerun noise on these machines when a profile carries no noise-floor row: the same archs
# timed twice a minute apart differed by 6-10% MAPE (shared notes, "a second look"); 8%
# is the middle of that range.
DEFAULT_RERUN_NOISE = 0.08


def profile_noise(profile: Profile) -> tuple[float, str]:
    """(noise as a fraction, where it came from) for `profile`.

    The profile's own rerun noise floor (NOISE row MAPE / 100) when its accuracy report
    has one, else `DEFAULT_RERUN_NOISE`.
    """
    row = profile.accuracy.rows.get(NOISE)
    if row is not None and np.isfinite(row.mape) and row.mape > 0:
        return row.mape / 100.0, "the profile's rerun noise floor"
    return DEFAULT_RERUN_NOISE, "the default rerun noise of these machines"


def drift_ratio(
    then_ms: Sequence[float], now_ms: Sequence[float], noise: float
) -> tuple[float, bool, float]:
    """(ratio, applied, scale) for the same archs timed at build time and now (ms).

    ratio = median of now / then; applied = |ratio - 1| > noise (a fraction);
    scale = ratio if applied else 1.0. Raises `ValueError` on empty, mismatched or
    non-positive times.
    """
    then = np.asarray(then_ms, dtype=np.float64)
    now = np.asarray(now_ms, dtype=np.float64)
    if then.shape != now.shape or then.ndim != 1 or len(then) == 0:
        raise ValueError(
            f"need two non-empty 1-d sequences of one length, got {then.shape}, {now.shape}"
        )
    if np.any(then <= 0) or np.any(now <= 0):
        raise ValueError("latencies must be positive")
    ratio = float(np.median(now / then))
    applied = bool(abs(ratio - 1.0) > noise)
    return ratio, applied, ratio if applied else 1.0


@dataclass
class Drift:
    """The host's speed now against the profile's, measured on a few of the profile's archs."""

    ratio: float  # median of now / then over the re-timed archs (1.1 = 10% slower now)
    scale: float  # what predictions are multiplied by: ratio if applied, else 1.0
    applied: bool  # |ratio - 1| exceeded the noise
    noise: float  # the threshold, a fraction (0.065 = 6.5%)
    noise_source: str  # where the noise figure came from
    arch_ids: list[str]  # the re-timed archs, in measuring order
    then_ms: list[float]  # their times recorded at build time, ms
    now_ms: list[float]  # their times now, ms
    contended: list[bool] = field(default_factory=list)  # now-measurements left disturbed
    seconds: float = 0.0  # wall time the re-timing took

    @property
    def n(self) -> int:
        return len(self.arch_ids)

    def scaled(self, predicted_ms: float | np.ndarray) -> float | np.ndarray:
        """`predicted_ms` (ms) corrected for drift: multiplied by `scale`."""
        return predicted_ms * self.scale

    def to_dict(self) -> dict[str, Any]:
        return {
            "ratio": self.ratio,
            "scale": self.scale,
            "applied": self.applied,
            "noise": self.noise,
            "noise_source": self.noise_source,
            "n": self.n,
            "arch_ids": self.arch_ids,
            "then_ms": self.then_ms,
            "now_ms": self.now_ms,
            "contended": self.contended,
            "seconds": self.seconds,
            "line": self.line(),
        }

    def line(self) -> str:
        """One sentence for a report: how far the host moved, and what was done about it."""
        pct = abs(self.ratio - 1.0) * 100
        way = "slower" if self.ratio >= 1.0 else "faster"
        head = (
            f"host drift: measured {pct:.1f}% {way} than the profile on {self.n} of its archs "
            f"(noise {self.noise:.1%})"
        )
        if self.applied:
            tail = f": predictions scaled by {self.scale:.3f}"
        else:
            tail = ": within noise, predictions unscaled"
        disturbed = sum(self.contended)
        if disturbed:
            tail += (
                f" ({disturbed} of {self.n} re-timings stayed disturbed by other processes "
                "or a slow spell: rerun when the machine is quiet)"
            )
        return head + tail


def drift_archs(profile: Profile, n: int) -> list[int]:
    """Indices into `profile.train` of `n` archs spread evenly over its latency range.

    Deterministic: the archs are sorted by their build-time latency and taken at evenly
    spaced ranks (both extremes included). Archs whose build measurement was disturbed
    are skipped while enough undisturbed ones remain.
    """
    measured = list(profile.train["measured_ms"])
    disturbed = list(profile.train.get("contended", [False] * len(measured)))
    pool = [i for i in range(len(measured)) if not disturbed[i]]
    if len(pool) < n:
        pool = list(range(len(measured)))
    pool.sort(key=lambda i: (measured[i], i))
    ranks = np.unique(np.round(np.linspace(0, len(pool) - 1, min(n, len(pool)))).astype(int))
    return [pool[r] for r in ranks]


def measure_drift(
    profile: Profile,
    space: SearchSpace,
    n: int = 4,
    config: MeasureConfig | None = None,
    noise: float | None = None,
    step: Step | None = None,
) -> Drift:
    """Re-time `n` of the archs `profile` measured at build time and compare (see module doc).

    Each arch is measured as the build measured it: a `Measurer` for the profile's
    workload and seed, with `config` (default: the profile's own whole-model protocol)
    and the same seeded random weights. `noise` (a fraction) overrides the threshold
    (default: `profile_noise(profile)`). `step` is called once per measurement.

    Raises `ProfileError` if the profile is for another space or another device or
    stack (its times would mean nothing here), or records no archs; `DeviceError` if its
    device is missing.
    """
    if n < 1:
        raise ProfileError(f"drift needs at least 1 arch to re-time, got {n}")
    check_space(profile, space)
    check_device(profile)
    if not profile.train.get("archs"):
        raise ProfileError("the profile records no measured archs; rebuild it with `nas profile`")
    start = time.perf_counter()
    picked = drift_archs(profile, n)
    archs = [Arch.from_json(profile.train["archs"][i]) for i in picked]
    then = [float(profile.train["measured_ms"][i]) for i in picked]
    seed = profile.config.seed
    measurer = Measurer(profile.workload, config or profile.config.measure, seed=seed)

    def measure(i: int):
        m = measurer.measure_arch(space, archs[i], seed=seed)
        if step:
            step("drift: whole model")
        return m

    now = retry_disturbed([measure(i) for i in range(len(archs))], measure)
    if noise is None:
        noise, source = profile_noise(profile)
    else:
        source = "given"
    now_ms = [m.median_ms for m in now]
    ratio, applied, scale = drift_ratio(then, now_ms, noise)
    return Drift(
        ratio=ratio,
        scale=scale,
        applied=applied,
        noise=float(noise),
        noise_source=source,
        arch_ids=[a.id for a in archs],
        then_ms=then,
        now_ms=now_ms,
        contended=[m.contended for m in now],
        seconds=time.perf_counter() - start,
    )
