"""What a `nas search` run leaves behind: the Pareto front, its plot, report.md, the summary.

The driver hands over one `TrialRecord` per trial plus the re-rank and verification
results; this module writes, into the run folder,
- `pareto.csv` / `pareto.json`: the front of the feasible, evaluated archs on (inherited
  loss, predicted latency), one row per arch;
- `pareto.png`: every trial, the front, the budget, the re-ranked archs and the winner;
- `report.md`: the run for a person to read;
and builds the dict `nas search --json` prints (`summary_json`), which is also what
`write_report_md` renders. Every file is written atomically.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from nas.core.atomic import atomic_write_json, atomic_write_text, atomic_write_with
from nas.search.pareto import pareto_front
from nas.search_space import Arch

__all__ = [
    "FRONT_COLUMNS",
    "PARETO_CSV",
    "PARETO_JSON",
    "PARETO_PNG",
    "REPORT_MD",
    "TrialRecord",
    "arch_short",
    "front_rows",
    "front_table",
    "pareto_members",
    "plot_front",
    "write_front",
]

PARETO_CSV = "pareto.csv"
PARETO_JSON = "pareto.json"
PARETO_PNG = "pareto.png"
REPORT_MD = "report.md"

FRONT_COLUMNS = (
    "rank", "trial", "arch_id", "loss", "finetuned_loss", "predicted_ms", "measured_ms",
    "status", "params", "flops", "arch",
)  # fmt: skip

# Re-rank results: arch id -> fine-tuned validation loss (nats/token).
Rerank = Mapping[str, float]
# Verification results: arch id -> {"predicted_ms", "passes_ms" (list), "median_ms" (ms),
# "spread" ((max - min) / median of the passes, a fraction), "status": "fits" |
# "borderline" | "over"}; other keys are carried into the summary as they are.
Verifications = Mapping[str, Mapping[str, Any]]


@dataclass(frozen=True)
class TrialRecord:
    """One trial of the study, as the report sees it."""

    number: int  # Optuna trial number
    arch: Arch  # the proposed subnetwork
    loss: float | None  # inherited validation loss, nats/token; None if never evaluated
    predicted_ms: float  # predicted latency in ms, drift-scaled when scaling was applied
    feasible: bool  # predicted_ms <= budget
    state: Literal["complete", "infeasible", "failed"]
    node: str  # host that evaluated it
    worker: str  # worker that evaluated it
    seconds: float  # wall time of the evaluation
    params: int  # parameters of the extracted model
    flops: int  # FLOPs of one forward pass of the extracted model (fvcore convention)

    @property
    def evaluated(self) -> bool:
        """Whether the trial has a usable inherited loss."""
        return self.state != "failed" and self.loss is not None and not math.isnan(self.loss)


def _first_evaluated(trials: Sequence[TrialRecord]) -> dict[str, TrialRecord]:
    """Arch id -> its earliest evaluated trial: an arch proposed twice counts once."""
    first: dict[str, TrialRecord] = {}
    for trial in sorted(trials, key=lambda t: t.number):
        if trial.evaluated:
            first.setdefault(trial.arch.id, trial)
    return first


# ------------------------------------------------------------------ the front
def pareto_members(trials: Sequence[TrialRecord], budget_ms: float) -> list[TrialRecord]:
    """The Pareto front of the evaluated archs whose predicted latency is within budget.

    Objectives: inherited loss and predicted ms, both minimised; each arch counts once,
    as its earliest trial. Sorted by predicted ms ascending (so loss descending).
    """
    candidates = [t for t in _first_evaluated(trials).values() if t.predicted_ms <= budget_ms]
    points = [(float(t.loss), t.predicted_ms) for t in candidates]  # type: ignore[arg-type]
    return [candidates[i] for i in pareto_front(points)]


def front_rows(
    front: Sequence[TrialRecord], rerank: Rerank, verifications: Verifications
) -> list[dict[str, Any]]:
    """One dict per front member with the keys `FRONT_COLUMNS`; None where not known.

    `rank` counts from 1 in the order given; `arch` is the arch's dict form; `status` is
    the verification status, or "unverified" when the arch was not measured.
    """
    rows = []
    for rank, trial in enumerate(front, start=1):
        verified = verifications.get(trial.arch.id) or {}
        rows.append(
            {
                "rank": rank,
                "trial": trial.number,
                "arch_id": trial.arch.id,
                "loss": trial.loss,
                "finetuned_loss": rerank.get(trial.arch.id),
                "predicted_ms": trial.predicted_ms,
                "measured_ms": verified.get("median_ms"),
                "status": verified.get("status", "unverified"),
                "params": trial.params,
                "flops": trial.flops,
                "arch": trial.arch.to_dict(),
            }
        )
    return rows


def write_front(
    run_dir: str | Path,
    trials: Sequence[TrialRecord],
    budget_ms: float,
    rerank: Rerank,
    verifications: Verifications,
) -> list[TrialRecord]:
    """Write `pareto.csv` and `pareto.json` into `run_dir`; return the front (by ms).

    The CSV has a header row and blank cells for unknown values; floats are written in
    Python's shortest round-trip form and `arch` as canonical JSON. The JSON file is a
    list of the same rows with `arch` as an object and null for unknowns.
    """
    front = pareto_members(trials, budget_ms)
    rows = front_rows(front, rerank, verifications)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=FRONT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row, trial in zip(rows, front, strict=True):
        cells = {key: "" if value is None else value for key, value in row.items()}
        writer.writerow({**cells, "arch": trial.arch.to_json()})
    atomic_write_text(Path(run_dir) / PARETO_CSV, buffer.getvalue())
    atomic_write_json(Path(run_dir) / PARETO_JSON, _json_safe(rows))
    return front


# ------------------------------------------------------------------ the plot
def plot_front(
    path_png: str | Path,
    trials: Sequence[TrialRecord],
    front: Sequence[TrialRecord],
    budget_ms: float,
    winner_id: str | None,
    rerank: Rerank,
    workload: str = "",
) -> None:
    """Draw validation loss against predicted latency and save it as a PNG, atomically.

    Shows every evaluated trial (within and over budget told apart), the front as a step
    line, the budget, each re-ranked arch's fine-tuned loss joined to its inherited point
    by a thin line, and the winner as a star (at its fine-tuned loss when it has one).
    Draws on a bare `Figure` (Agg canvas): no display, no pyplot global state.
    """
    from matplotlib.figure import Figure  # deferred: matplotlib is slow to import

    fig = Figure(figsize=(7.5, 4.8), dpi=100, layout="constrained")
    ax = fig.subplots()
    by_id = _first_evaluated(trials)
    evaluated = [t for t in trials if t.evaluated]
    within = [(t.predicted_ms, t.loss) for t in evaluated if t.predicted_ms <= budget_ms]
    over = [(t.predicted_ms, t.loss) for t in evaluated if t.predicted_ms > budget_ms]
    reranked = [(by_id[a], loss) for a, loss in rerank.items() if a in by_id]
    for trial, finetuned in reranked:
        ax.plot([trial.predicted_ms] * 2, [trial.loss, finetuned], color="tab:green", lw=0.7)
    layers = [
        (within, dict(s=12, alpha=0.3, color="tab:blue", label=f"within budget ({len(within)})")),
        (
            over,
            dict(s=14, alpha=0.3, color="tab:gray", marker="x", label=f"over budget ({len(over)})"),
        ),
        (
            [(t.predicted_ms, f) for t, f in reranked],
            dict(s=26, color="tab:green", marker="D", zorder=4, label="fine-tuned (re-rank)"),
        ),
    ]
    for points, style in layers:
        if points:
            ax.scatter(*zip(*points, strict=True), **style)
    if front:
        # where="post": at latency x the best loss on offer is that of the last member at
        # or below x, so the line steps down at each member's latency.
        xs, ys = [t.predicted_ms for t in front], [t.loss for t in front]
        ax.step(
            xs, ys, where="post", color="tab:orange", lw=1.6, marker="o", ms=4, label="Pareto front"
        )
    ax.axvline(budget_ms, color="tab:red", ls="--", lw=1, label=f"budget {budget_ms:g} ms")
    winner = by_id.get(winner_id) if winner_id else None
    if winner is not None:
        y = rerank.get(winner.arch.id, winner.loss)
        ax.scatter([winner.predicted_ms], [y], marker="*", s=260, facecolor="gold",
                   edgecolor="black", zorder=5, label=f"winner {winner.arch.id}")  # fmt: skip
    if not evaluated:
        ax.text(0.5, 0.5, "no evaluated trials", transform=ax.transAxes, ha="center")
    ax.set_xlabel("predicted latency (ms)")
    ax.set_ylabel("validation loss (nats/token)")
    ax.set_title(f"Pareto front: {workload}" if workload else "Pareto front")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    # format= is explicit because the temp file's name does not end in .png.
    atomic_write_with(path_png, lambda tmp: fig.savefig(tmp, format="png"))


# ------------------------------------------------------------------ tables
_MIXER_SHORT = dict(attention="attn", sliding_window="swa", linear_attention="lin")


def arch_short(arch: Arch) -> str:
    """A one-line sketch of an arch: its width, then each layer's mixer and FFN width."""
    layers = " ".join(
        _MIXER_SHORT.get(layer.mixer, layer.mixer) + (f"/{layer.ffn}" if layer.ffn else "")
        for layer in arch.layers
    )
    return f"d{arch.d_model} {layers}"


Column = tuple[str, Callable[[Mapping[str, Any]], str]]  # header, row -> cell text

_FRONT_COLUMNS: list[Column] = [
    ("rank", lambda r: str(r["rank"])),
    ("loss", lambda r: _num(r["loss"], 4)),
    ("fine-tuned", lambda r: _num(r["finetuned_loss"], 4)),
    ("pred ms", lambda r: _num(r["predicted_ms"], 3)),
    ("meas ms", lambda r: _num(r["measured_ms"], 3)),
    ("status", lambda r: str(r["status"])),
    ("params", lambda r: _count(r["params"])),
    ("FLOPs", lambda r: _count(r["flops"])),
    ("arch", lambda r: f"{r['arch_id']} {arch_short(Arch.from_dict(r['arch']))}"),
]


def front_table(
    front: Sequence[TrialRecord],
    rerank: Rerank,
    verifications: Verifications,
    markdown: bool = False,
) -> str:
    """The front as a table: fixed-width text for the console, or a markdown table.

    Columns: rank, inherited loss, fine-tuned loss, predicted ms, measured ms, status,
    params, FLOPs, arch id and sketch (`arch_short`). Unknown values print as "-".
    """
    return _table(front_rows(front, rerank, verifications), _FRONT_COLUMNS, markdown)


def _table(rows: Sequence[Mapping[str, Any]], columns: list[Column], markdown: bool) -> str:
    headers = [header for header, _ in columns]
    cells = [[cell(row) for _, cell in columns] for row in rows]
    if markdown:
        lines = [headers, ["---"] * len(headers), *cells]
        return "\n".join("| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in lines)
    widths = [max(len(c) for c in column) for column in zip(headers, *cells, strict=True)]
    # Right-aligned numbers; the last column (free text) is left unpadded.
    lines = [headers, ["-" * w for w in widths], *cells]
    return "\n".join(
        "  ".join([*(c.rjust(w) for c, w in zip(r[:-1], widths, strict=False)), r[-1]])
        for r in lines
    )


# ------------------------------------------------------------------ summary and report.md
def _num(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _pct(fraction: float | None) -> str:
    return "-" if fraction is None else f"{fraction:.1%}"


def _rel_error(predicted: float | None, measured: float | None) -> float | None:
    """(predicted - measured) / measured, or None when either is unknown."""
    if predicted is None or not measured:
        return None
    return (predicted - measured) / measured


def _count(value: int | None) -> str:
    """1234567 -> "1.23M": params and FLOPs at a glance."""
    if value is None:
        return "-"
    for scale, unit in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.2f}{unit}"
    return str(value)


def _json_safe(value: Any) -> Any:
    """NaN and infinities become None (they are not JSON); tuples become lists."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {key: _json_safe(v) for key, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value
