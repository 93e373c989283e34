"""Measure a search's top candidates for real, and pick the winner on measured latency.

A prediction is not a result: before a search calls an arch its winner, the arch is
measured on the device with the profile's own protocol (shared notes, protocol step 5).
These machines are noisy (the same arch timed twice a minute apart differs by 6-10% on
average), so each candidate is measured in at least two passes, interleaved (pass 1
over every candidate in order, pass 2 in reverse order, and so on), and judged on the
median of its passes. The caller runs this after the evaluation workers have stopped,
so that they do not compete with the measurements for the CPU.

Each candidate gets one of three statuses against the budget:

* "fits": measured under the budget by more than the margin;
* "over": measured over the budget by more than the margin;
* "borderline": within the margin of the budget, either side.

The margin (a fraction of the measured median) is the larger of the passes' own spread,
(max - min) / median, and the rerun noise of the host (a fraction; default the notes'
8%): two passes that happen to agree say little on a host whose reruns differ by 6-10%.
A borderline candidate is never silently accepted: `pick_winner` returns it only when no
candidate fits, and says so in the status it returns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from torch import nn

from nas.core.errors import VerifyError
from nas.search_space import Arch, SearchSpace

from .drift import DEFAULT_RERUN_NOISE
from .fingerprint import Workload
from .measure import MeasureConfig, Measurement, Measurer, less_disturbed
from .profile import Step

FITS = "fits"
BORDERLINE = "borderline"
OVER = "over"
STATUSES = (FITS, BORDERLINE, OVER)


def classify(median_ms: float, spread: float, budget_ms: float, noise: float) -> str:
    """The status of a candidate measured at `median_ms` against `budget_ms` (both ms).

    margin = max(spread, noise) * median_ms, with `spread` and `noise` fractions;
    "borderline" if |median - budget| <= margin, else "fits" below the budget and
    "over" above it.
    """
    margin = max(spread, noise) * median_ms
    if abs(median_ms - budget_ms) <= margin:
        return BORDERLINE
    return FITS if median_ms < budget_ms else OVER


@dataclass
class Verification:
    """One candidate measured for real, pass by pass, and judged against the budget."""

    arch: Arch
    predicted_ms: float  # what the search believed, ms (drift-scaled if the search scaled it)
    passes_ms: list[float]  # one measured median per pass, ms, in pass order
    median_ms: float  # median of passes_ms: the figure judged against the budget
    spread: float  # (max - min) / median of passes_ms, a fraction
    noise: float  # the host's rerun noise used for the margin, a fraction
    budget_ms: float
    status: str  # "fits", "borderline" or "over" (see `classify`)
    contended: list[bool]  # per pass: the measurement stayed disturbed by other processes
    rel_iqr: list[float]  # per pass: IQR/median of the runs inside that measurement

    @property
    def margin(self) -> float:
        """The borderline band's half-width, a fraction of the median."""
        return max(self.spread, self.noise)

    @property
    def error_pct(self) -> float:
        """(predicted - measured) / measured, percent."""
        return (self.predicted_ms - self.median_ms) / self.median_ms * 100

    def to_dict(self) -> dict[str, Any]:
        return {
            "arch_id": self.arch.id,
            "arch": self.arch.to_dict(),
            "predicted_ms": self.predicted_ms,
            "passes_ms": self.passes_ms,
            "median_ms": self.median_ms,
            "spread": self.spread,
            "noise": self.noise,
            "margin": self.margin,
            "budget_ms": self.budget_ms,
            "status": self.status,
            "error_pct": self.error_pct,
            "contended": self.contended,
            "rel_iqr": self.rel_iqr,
        }


def judge(
    arch: Arch,
    predicted_ms: float,
    passes: Sequence[Measurement],
    budget_ms: float,
    noise: float = DEFAULT_RERUN_NOISE,
) -> Verification:
    """The `Verification` of one candidate from its per-pass measurements."""
    times = [m.median_ms for m in passes]
    median = float(np.median(times))
    spread = (max(times) - min(times)) / median if median > 0 else float("inf")
    return Verification(
        arch=arch,
        predicted_ms=float(predicted_ms),
        passes_ms=times,
        median_ms=median,
        spread=float(spread),
        noise=float(noise),
        budget_ms=float(budget_ms),
        status=classify(median, spread, budget_ms, noise),
        contended=[m.contended for m in passes],
        rel_iqr=[m.rel_iqr for m in passes],
    )


def verify(
    space: SearchSpace,
    archs: Sequence[Arch],
    predicted_ms: Sequence[float],
    budget_ms: float,
    workload: Workload,
    config: MeasureConfig,
    passes: int = 2,
    models: Sequence[nn.Module] | None = None,
    step: Step | None = None,
    noise: float = DEFAULT_RERUN_NOISE,
    seed: int = 0,
) -> list[Verification]:
    """Measure every candidate in `passes` interleaved passes; one `Verification` each.

    `archs[i]` was predicted at `predicted_ms[i]` (ms). Pass p measures every candidate,
    in order for even p and in reverse for odd p, with `Measurer.measure_arch` (seeded
    random weights: latency does not depend on weight values) or, where `models` is
    given, `Measurer.measure_model(models[i])` (e.g. the fine-tuned models; each is put
    in eval mode and moved to the workload's device and dtype). A measurement left
    disturbed is retried once at the end of its pass. `noise` is the host's rerun noise
    (a fraction; pass the profile's noise floor, `drift.profile_noise`), `step` is
    called once per measurement. Call it after the search's workers have stopped.

    Raises `VerifyError` for fewer than 2 passes, a non-positive budget or mismatched
    lengths, `DeviceError`
    if the workload's device is missing.
    """
    if passes < 2:
        raise VerifyError(f"verification needs at least 2 passes to see its spread, got {passes}")
    if len(predicted_ms) != len(archs) or (models is not None and len(models) != len(archs)):
        raise VerifyError(
            f"need one prediction (and model) per arch: {len(archs)} archs, "
            f"{len(predicted_ms)} predictions, {len(models) if models is not None else 0} models"
        )
    if budget_ms <= 0:
        raise VerifyError(f"budget must be positive, got {budget_ms} ms")
    measurer = Measurer(workload, config, seed=seed)

    def measure(i: int, label: str) -> Measurement:
        if models is not None:
            m = measurer.measure_model(models[i])
        else:
            m = measurer.measure_arch(space, archs[i], seed=seed)
        if step:
            step(f"{label}: {archs[i].id}")
        return m

    results: list[list[Measurement]] = [[] for _ in archs]
    for p in range(passes):
        order = range(len(archs)) if p % 2 == 0 else reversed(range(len(archs)))
        label = f"verify pass {p + 1}"
        done = {i: measure(i, label) for i in order}
        # Coming back at the end of the pass often finds the machine calm again.
        for i, m in done.items():
            if m.contended:
                m = less_disturbed(m, measure(i, f"{label} retry"))
            results[i].append(m)
    return [
        judge(arch, pred, runs, budget_ms, noise)
        for arch, pred, runs in zip(archs, predicted_ms, results, strict=True)
    ]


class Pick(NamedTuple):
    """The winner: its index among the candidates, and how it stands against the budget.

    `status` is "fits", or "borderline" when no candidate fits: the caller must then
    report it as borderline, never as a winner within the budget.
    """

    index: int  # into the `candidates` given to `pick_winner`
    status: str  # FITS or BORDERLINE
    verification: Verification

    @property
    def within_budget(self) -> bool:
        """Whether the measurement says it fits (a borderline pick does not)."""
        return self.status == FITS


def pick_winner(candidates: Sequence[Arch], verifications: Sequence[Verification]) -> Pick | None:
    """The best candidate whose measured latency fits the budget.

    `candidates` are ordered best quality first; `verifications` (any order) are
    matched to them by arch id, and a candidate without one is skipped. The first
    candidate that fits wins; if none fits, the first borderline one is returned with
    status "borderline"; if every measured candidate is over, None.
    """
    by_id = {v.arch.id: v for v in verifications}
    for wanted in (FITS, BORDERLINE):
        for i, arch in enumerate(candidates):
            v = by_id.get(arch.id)
            if v is not None and v.status == wanted:
                return Pick(i, wanted, v)
    return None
