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
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from nas.search.pareto import pareto_front
from nas.search_space import Arch
from nas.supernet.atomic import atomic_write_json, atomic_write_text, atomic_write_with

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
    "summary_json",
    "write_front",
    "write_report_md",
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
def summary_json(
    *,
    trials: Sequence[TrialRecord],
    front: Sequence[TrialRecord],
    budget_ms: float,
    workload: str,
    winner_id: str | None,
    winner_status: str | None,
    rerank: Rerank,
    rerank_tau: float | None,
    verifications: Verifications,
    drift: Mapping[str, Any],
    phases_s: Mapping[str, float],
    command: str,
    run_dir: str | Path,
    journal: str | Path,
    best: str | Path | None,
) -> dict[str, Any]:
    """What `nas search --json` prints, and what `write_report_md` renders.

    Keys: winner (None when no arch fits; else arch, arch_id, inherited_loss,
    finetuned_loss, predicted_ms, measured_ms, measured_spread (a fraction), status,
    params, flops), trials (complete, infeasible, failed, total), rerank_tau, drift,
    budget_ms, workload, paths (run_dir, journal, pareto_csv, pareto_json, pareto_png,
    report_md, best), phases_s; and for the report: command, front (rows as in pareto.json), rerank and
    verifications (one row per arch), fastest_predicted_ms (least predicted ms of any
    evaluated trial). Latencies in ms, losses in nats/token; NaN and infinities become
    None. Raises `ValueError` if `winner_id` names no evaluated trial (a caller's bug).
    """
    by_id = _first_evaluated(trials)
    winner = None
    if winner_id is not None:
        if winner_id not in by_id:
            raise ValueError(f"summary_json: winner {winner_id} is not an evaluated trial")
        trial, verified = by_id[winner_id], verifications.get(winner_id) or {}
        winner = {
            "arch": trial.arch.to_dict(),
            "arch_id": winner_id,
            "inherited_loss": trial.loss,
            "finetuned_loss": rerank.get(winner_id),
            "predicted_ms": trial.predicted_ms,
            "measured_ms": verified.get("median_ms"),
            "measured_spread": verified.get("spread"),
            "status": winner_status or verified.get("status"),
            "params": trial.params,
            "flops": trial.flops,
        }
    states = [t.state for t in trials]
    counts = {state: states.count(state) for state in ("complete", "infeasible", "failed")}
    run_dir = Path(run_dir)
    files = {"pareto_csv": PARETO_CSV, "pareto_json": PARETO_JSON, "pareto_png": PARETO_PNG}
    evaluated_ms = [t.predicted_ms for t in by_id.values()]
    summary = {
        "command": command,
        "workload": workload,
        "budget_ms": budget_ms,
        "drift": dict(drift),
        "trials": {**counts, "total": len(states)},
        "phases_s": dict(phases_s),
        "front": front_rows(front, rerank, verifications),
        "rerank": [
            {
                "arch_id": arch_id,
                "predicted_ms": by_id[arch_id].predicted_ms if arch_id in by_id else None,
                "inherited_loss": by_id[arch_id].loss if arch_id in by_id else None,
                "finetuned_loss": finetuned,
            }
            for arch_id, finetuned in rerank.items()
        ],
        "rerank_tau": rerank_tau,
        "verifications": [{"arch_id": a, **v} for a, v in verifications.items()],
        "fastest_predicted_ms": min(evaluated_ms) if evaluated_ms else None,
        "winner": winner,
        "paths": {
            "run_dir": str(run_dir),
            "journal": str(journal),
            **{key: str(run_dir / name) for key, name in files.items()},
            "report_md": str(run_dir / REPORT_MD),
            "best": None if best is None else str(best),
        },
    }
    return _json_safe(summary)


_RERANK_COLUMNS: list[Column] = [
    ("arch", lambda r: f"`{r['arch_id']}`"),
    ("predicted ms", lambda r: _num(r["predicted_ms"], 3)),
    ("inherited loss", lambda r: _num(r["inherited_loss"], 4)),
    ("fine-tuned loss", lambda r: _num(r["finetuned_loss"], 4)),
]
_VERIFY_COLUMNS: list[Column] = [
    ("arch", lambda r: f"`{r['arch_id']}`"),
    ("predicted ms", lambda r: _num(r.get("predicted_ms"), 3)),
    ("measured ms (median)", lambda r: _num(r.get("median_ms"), 3)),
    ("passes ms", lambda r: ", ".join(f"{p:.3f}" for p in r.get("passes_ms") or [])),
    ("error", lambda r: _pct(_rel_error(r.get("predicted_ms"), r.get("median_ms")))),
    ("spread", lambda r: _pct(r.get("spread"))),
    ("status", lambda r: str(r.get("status", "-"))),
]


def write_report_md(run_dir: str | Path, summary: Mapping[str, Any]) -> Path:
    """Render `summary` (as built by `summary_json`) to `run_dir/report.md`; return its path.

    Sections: command; workload and budget; latency drift; trials and time per phase; the
    front; re-rank; verification; the winner, or what to do when no arch fits; the plot
    (`pareto.png` beside it); how to open the study in optuna-dashboard.
    """
    budget, drift, counts = summary["budget_ms"], summary["drift"] or {}, summary["trials"]
    scaled = (
        f"predictions were scaled by x{drift['ratio']:.3f} to match the device"
        if drift.get("applied") and drift.get("ratio") is not None
        else "predictions were not scaled"
    )
    phases = [{"phase": k, "s": v} for k, v in summary["phases_s"].items()]
    phases.append({"phase": "total", "s": sum(summary["phases_s"].values())})
    tau = summary["rerank_tau"]
    journal = shlex.quote(summary["paths"]["journal"])
    md = lambda rows, columns: _table(rows, columns, markdown=True)
    sections = [
        "# nas search report",
        f"## Command\n\n```\n{summary['command']}\n```",
        f"## Workload and budget\n\n- workload: {summary['workload']}\n"
        f"- latency budget: {budget:g} ms (predicted during the search, measured after)",
        f"## Latency drift\n\n{drift.get('line', 'no drift check')}; {scaled}.",
        f"## Trials\n\n{counts['complete']} complete, {counts['infeasible']} infeasible, "
        f"{counts['failed']} failed, {counts['total']} in all.\n\nTime per phase:\n\n"
        + md(phases, [("phase", lambda r: r["phase"]), ("seconds", lambda r: f"{r['s']:.1f}")]),
        "## Pareto front\n\n"
        + (
            f"Feasible, evaluated archs on (inherited loss, predicted ms); also in "
            f"`{PARETO_CSV}` and `{PARETO_JSON}`.\n\n" + md(summary["front"], _FRONT_COLUMNS)
            if summary["front"]
            else f"No evaluated trial is predicted within {budget:g} ms: the front is empty."
        ),
        "## Re-rank\n\n"
        + (
            md(summary["rerank"], _RERANK_COLUMNS) + "\n\nKendall tau, inherited vs fine-tuned "
            f"loss: {'n/a (fewer than two candidates)' if tau is None else f'{tau:.3f}'}."
            if summary["rerank"]
            else "No candidates were fine-tuned."
        ),
        "## Verification on the device\n\n"
        + (
            md(summary["verifications"], _VERIFY_COLUMNS)
            if summary["verifications"]
            else "No arch was measured."
        ),
        "## Winner\n\n" + _winner_text(summary),
        f"## Plot\n\n![front]({PARETO_PNG})",
        "## Viewing the study\n\nWith `optuna-dashboard` installed (`pip install "
        "optuna-dashboard`), pass it the journal file; it opens a JournalFileBackend file "
        f"by its path:\n\n```\noptuna-dashboard {journal}\n```\n\n"
        "then browse http://127.0.0.1:8080/.",
    ]
    path = Path(run_dir) / REPORT_MD
    atomic_write_text(path, "\n\n".join(sections) + "\n")
    return path


def _winner_text(summary: Mapping[str, Any]) -> str:
    budget, winner = summary["budget_ms"], summary["winner"]
    if winner is None:
        measured = [v for v in summary["verifications"] if v.get("median_ms") is not None]
        if measured:
            fastest = min(measured, key=lambda v: v["median_ms"])
            advice = (
                f"The smallest measured latency was {fastest['median_ms']:.3f} ms (arch "
                f"`{fastest['arch_id']}`)"
            )
            least = fastest["median_ms"]
        elif summary["fastest_predicted_ms"] is not None:
            least = summary["fastest_predicted_ms"]
            advice = f"No arch was measured; the least predicted latency was {least:.3f} ms"
        else:
            return f"**No arch fits the budget of {budget:g} ms**: no trial was evaluated."
        return (
            f"**No arch fits the budget of {budget:g} ms.**\n\n{advice}. Rerun with a larger "
            f"budget, at least that: e.g. `--budget {_round_up(least)}ms`."
        )
    arch = Arch.from_dict(winner["arch"])
    measured, spread = winner["measured_ms"], winner["measured_spread"]
    measured_text = "not measured" if measured is None else f"measured {measured:.3f} ms"
    if measured is not None and spread is not None:
        measured_text += f" (spread {_pct(spread)})"
    lines = [
        f"- arch `{winner['arch_id']}`: {arch}",
        f"- params {winner['params']:,} ({_count(winner['params'])}), "
        f"FLOPs {winner['flops']:,} ({_count(winner['flops'])})",
        f"- loss: inherited {_num(winner['inherited_loss'], 4)}, "
        f"fine-tuned {_num(winner['finetuned_loss'], 4)} nats/token",
        f"- latency: predicted {_num(winner['predicted_ms'], 3)} ms, {measured_text}, "
        f"budget {budget:g} ms: **{winner['status']}**",
        f"- saved to `{summary['paths']['best']}`",
        f"\n```json\n{arch.to_json()}\n```",
    ]
    if winner["status"] == "borderline":
        lines.append("\nBorderline: the budget lies within the measurement spread.")
    return "\n".join(lines)


# ------------------------------------------------------------------ formatting
def _round_up(ms: float) -> str:
    """A budget just above `ms`, two significant digits: 7.31 -> "7.4", 0.123 -> "0.13"."""
    if not ms > 0:
        return "1"
    step = 10 ** (math.floor(math.log10(ms)) - 1)
    return f"{(math.floor(ms / step) + 1) * step:.10g}"


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
