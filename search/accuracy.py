"""The accuracy report every profile carries: how far predictions are from the device.

It is computed on held-out archs that no fit has seen, measured fresh and then measured a
second time (in the reverse order, interleaved with the others) for the noise floor. It
scores our predictor and two baselines with the figures the literature reports: MAPE,
the share of archs within ±5% and ±10%, and Kendall τ (rank agreement, which is what a
search needs). A target only counts if the noise floor sits well below it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from nas.search_space import Arch, SearchSpace

from .measure import Measurement, Measurer, retry_disturbed

# The targets (CPU, batch 1 x 256 tokens).
TARGET_WITHIN_10 = 0.97  # share of archs within ±10%, at least
TARGET_MAPE = 4.0  # percent, at most
TARGET_TAU = 0.9  # Kendall τ, at least
TARGET_MAPE_VS_FLOPS = 1 / 3  # our MAPE at most this fraction of the FLOPs baseline's

# Row labels of the report table, in order.
OURS = "ours (kernels + correction)"
KERNEL_SUM = "kernel sum alone"
FLOPS = "FLOPs-linear (fvcore)"
FEATURES = "features-linear (HAT-style)"
NOISE = "noise floor (rerun vs first)"


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's τ-b of two equal-length sequences (ties handled as in scipy's default).

    O(n^2) over all pairs, fine for the hundreds of archs a report holds. Returns nan if
    either sequence is constant or shorter than 2.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"need two 1-d sequences of one length, got {x.shape} and {y.shape}")
    i, j = np.triu_indices(len(x), k=1)
    dx = np.sign(x[i] - x[j])
    dy = np.sign(y[i] - y[j])
    concordance = float(np.sum(dx * dy))
    pairs_x = float(np.count_nonzero(dx))  # pairs not tied in x
    pairs_y = float(np.count_nonzero(dy))
    if pairs_x == 0 or pairs_y == 0:
        return float("nan")
    return concordance / np.sqrt(pairs_x * pairs_y)


@dataclass(frozen=True)
class ErrorMetrics:
    """How well one set of predictions matches measured latencies."""

    n: int  # archs scored
    mape: float  # mean absolute percentage error, percent
    within_5: float  # share of archs with |pred - true| / true <= 5%, in [0, 1]
    within_10: float  # share within 10%, in [0, 1]
    kendall_tau: float  # rank agreement of predictions with measurements, in [-1, 1]
    max_ape: float  # worst absolute percentage error, percent

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ErrorMetrics:
        return cls(**data)


def error_metrics(predicted: Sequence[float], measured: Sequence[float]) -> ErrorMetrics:
    """Score `predicted` against `measured` (both ms, same order, measured > 0)."""
    pred = np.asarray(predicted, dtype=np.float64)
    true = np.asarray(measured, dtype=np.float64)
    if pred.shape != true.shape or pred.ndim != 1 or len(true) == 0:
        raise ValueError(
            f"need two non-empty 1-d arrays of one length, got {pred.shape}, {true.shape}"
        )
    if np.any(true <= 0):
        raise ValueError("measured latencies must be positive")
    ape = np.abs(pred - true) / true
    # A tiny tolerance keeps exact boundary cases (e.g. 10.0% in decimal) inside the band.
    eps = 1e-9
    return ErrorMetrics(
        n=len(true),
        mape=float(ape.mean() * 100),
        within_5=float(np.mean(ape <= 0.05 + eps)),
        within_10=float(np.mean(ape <= 0.10 + eps)),
        kendall_tau=float(kendall_tau(pred, true)),
        max_ape=float(ape.max() * 100),
    )


@dataclass
class AccuracyReport:
    """Held-out accuracy of a profile's predictor, two baselines and the noise floor."""

    rows: dict[str, ErrorMetrics]  # label -> metrics; NOISE compares the rerun to the first
    arch_ids: list[str]  # held-out archs, in measurement order
    archs: list[str]  # the same archs as canonical JSON, so a report can be refitted offline
    measured_ms: list[float]  # first fresh measurement of each, ms (the reference)
    rerun_ms: list[float]  # second measurement, ms
    predicted_ms: dict[str, list[float]]  # label -> predictions, ms
    noisy: int = 0  # measurements still above the IQR/median threshold after repeats
    contended: int = 0  # measurements disturbed (other processes, or a slow spell)
    workload: str = ""  # what was measured, for the table's title
    notes: list[str] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.arch_ids)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": {k: v.to_dict() for k, v in self.rows.items()},
            # JSON files are written with sorted keys; the table's row order is kept here.
            "row_order": list(self.rows),
            "arch_ids": self.arch_ids,
            "archs": self.archs,
            "measured_ms": self.measured_ms,
            "rerun_ms": self.rerun_ms,
            "predicted_ms": self.predicted_ms,
            "noisy": self.noisy,
            "contended": self.contended,
            "workload": self.workload,
            "notes": self.notes,
            "targets": [list(t) for t in target_checks(self)],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AccuracyReport:
        order = data.get("row_order") or list(data["rows"])
        return cls(
            rows={k: ErrorMetrics.from_dict(data["rows"][k]) for k in order},
            arch_ids=list(data["arch_ids"]),
            archs=list(data["archs"]),
            measured_ms=list(data["measured_ms"]),
            rerun_ms=list(data["rerun_ms"]),
            predicted_ms={k: list(v) for k, v in data["predicted_ms"].items()},
            noisy=int(data.get("noisy", 0)),
            contended=int(data.get("contended", 0)),
            workload=data.get("workload", ""),
            notes=list(data.get("notes", [])),
        )

    def table(self) -> str:
        """The report as a fixed-width text table, one row per predictor."""
        lines = [
            f"held-out accuracy on {self.n} archs never used for fitting, measured fresh"
            + (f" ({self.workload})" if self.workload else ""),
            f"{'predictor':<30} {'MAPE':>7} {'≤5%':>7} {'≤10%':>7} {'τ':>6} {'max err':>8}",
        ]
        for label, m in self.rows.items():
            lines.append(
                f"{label:<30} {m.mape:>6.2f}% {m.within_5:>7.1%} {m.within_10:>7.1%} "
                f"{m.kendall_tau:>6.3f} {m.max_ape:>7.1f}%"
            )
        if self.noisy:
            lines.append(f"({self.noisy} measurements stayed above the IQR/median threshold)")
        if self.contended:
            lines.append(
                f"({self.contended} measurements were disturbed, by other processes or a slow "
                "spell of the machine, even after waiting: rerun on a quiet machine)"
            )
        lines.append(
            "targets: "
            + "; ".join(
                f"{name} {value} (target {target}) {'ok' if ok else 'MISSED'}"
                for name, value, target, ok in target_checks(self)
            )
        )
        lines.extend(self.notes)
        return "\n".join(lines)


def target_checks(report: AccuracyReport) -> list[tuple[str, str, str, bool]]:
    """(figure, value, target, met) for each of the issue's targets, from our row."""
    ours = report.rows.get(OURS)
    flops = report.rows.get(FLOPS)
    if ours is None:
        return []
    checks = [
        (
            "within ±10%",
            f"{ours.within_10:.1%}",
            f">= {TARGET_WITHIN_10:.0%}",
            ours.within_10 >= TARGET_WITHIN_10,
        ),
        ("MAPE", f"{ours.mape:.2f}%", f"<= {TARGET_MAPE:.0f}%", ours.mape <= TARGET_MAPE),
        (
            "Kendall τ",
            f"{ours.kendall_tau:.3f}",
            f">= {TARGET_TAU}",
            ours.kendall_tau >= TARGET_TAU,
        ),
    ]
    if flops is not None:
        checks.append(
            (
                "MAPE / FLOPs-linear MAPE",
                f"{ours.mape / flops.mape:.2f}",
                "<= 0.33",
                ours.mape <= flops.mape * TARGET_MAPE_VS_FLOPS,
            )
        )
    return checks


Predict = Callable[[Sequence[Arch]], np.ndarray]  # archs -> (n,) ms


def measure_twice(
    measurer: Measurer,
    space: SearchSpace,
    archs: Sequence[Arch],
    step: Callable[[str], None] | None = None,
) -> tuple[list[Measurement], list[Measurement]]:
    """Measure every arch, then every arch again in reverse order; (first, rerun).

    The reversed second pass means each arch's two figures are taken at different times,
    next to different neighbours, so drift and neighbour effects show up in the noise
    floor. Disturbed measurements are retried once at the end of their pass.
    """
    first = []
    for arch in archs:
        first.append(measurer.measure_arch(space, arch))
        if step:
            step("held-out, first pass")
    first = retry_disturbed(first, lambda i: measurer.measure_arch(space, archs[i]))
    rerun: list[Measurement] = [None] * len(archs)  # type: ignore[list-item]
    for i in reversed(range(len(archs))):
        rerun[i] = measurer.measure_arch(space, archs[i])
        if step:
            step("held-out, rerun")
    rerun = retry_disturbed(rerun, lambda i: measurer.measure_arch(space, archs[i]))
    return first, rerun


def build_report(
    archs: Sequence[Arch],
    measured_ms: np.ndarray,
    rerun_ms: np.ndarray,
    predictions: dict[str, np.ndarray],
    noisy: int = 0,
    workload: str = "",
    contended: int = 0,
) -> AccuracyReport:
    """Score each labelled prediction against `measured_ms` and add the noise floor row."""
    rows = {label: error_metrics(pred, measured_ms) for label, pred in predictions.items()}
    rows[NOISE] = error_metrics(rerun_ms, measured_ms)
    return AccuracyReport(
        rows=rows,
        arch_ids=[a.id for a in archs],
        archs=[a.to_json() for a in archs],
        measured_ms=[float(v) for v in measured_ms],
        rerun_ms=[float(v) for v in rerun_ms],
        predicted_ms={k: [float(v) for v in p] for k, p in predictions.items()},
        noisy=noisy,
        contended=contended,
        workload=workload,
    )
