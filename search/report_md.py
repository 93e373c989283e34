"""report.md and the `nas search --json` summary of a run (report.py writes the front)."""

from __future__ import annotations

import math
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from nas.core.atomic import atomic_write_text
from nas.search_space import Arch

from .report import (
    _FRONT_COLUMNS,
    PARETO_CSV,
    PARETO_JSON,
    PARETO_PNG,
    REPORT_MD,
    Column,
    Rerank,
    TrialRecord,
    Verifications,
    _count,
    _first_evaluated,
    _json_safe,
    _num,
    _pct,
    _rel_error,
    _table,
    front_rows,
)


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
    report_md, best), phases_s; and for the report: command, front (rows as in
    pareto.json), rerank and verifications (one row per arch), fastest_predicted_ms
    (least predicted ms of any evaluated trial). Latencies in ms, losses in nats/token;
    NaN and infinities become None. Raises `ValueError` if `winner_id` names no
    evaluated trial (a caller's bug).
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
