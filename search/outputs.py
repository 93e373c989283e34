"""A search's last phase: the front, the plot, report.md and the summary from its trials."""

from __future__ import annotations

import math
from typing import Any

from nas.search_space import SearchSpace

from .accuracy import kendall_tau
from .budget import format_ms
from .driver import TrialRow
from .flops import analytic_flops
from .report import (
    PARETO_PNG,
    TrialRecord,
    front_table,
    plot_front,
    write_front,
)
from .report_md import summary_json, write_report_md
from .run_folder import RunFolder
from .verify import Pick, Verification


def trial_records(rows: list[TrialRow], space: SearchSpace, batch: int, seq_len: int, budget_ms):
    """The report's view of the study's trials (repeats of an arch left out)."""
    records = []
    for row in rows:
        if row.state == "repeat":
            continue
        records.append(
            TrialRecord(
                number=row.number,
                arch=row.arch,
                loss=row.loss,
                predicted_ms=row.predicted_ms,
                feasible=row.predicted_ms <= budget_ms,
                state=row.state,
                node=row.node,
                worker=row.worker,
                seconds=row.seconds,
                params=space.param_count(row.arch),
                flops=analytic_flops(space, row.arch, batch, seq_len),
            )
        )
    return records


def rerank_tau(reranked: dict[str, Any]) -> float | None:
    """Kendall τ between the inherited and the fine-tuned losses of the re-ranked archs."""
    if len(reranked) < 2:
        return None
    inherited = [r.inherited_loss for r in reranked.values()]
    tuned = [r.finetuned_loss for r in reranked.values()]
    tau = kendall_tau(inherited, tuned)
    return None if math.isnan(tau) else tau


def write_outputs(
    run: RunFolder,
    space: SearchSpace,
    rows: list[TrialRow],
    budget_ms: float,
    batch: int,
    seq_len: int,
    workload: str,
    drift: dict[str, Any],
    reranked: dict[str, Any],
    winner_tuned: Any,
    verified: list[Verification],
    pick: Pick | None,
    phases_s: dict[str, float],
    command: str,
    journal: str,
) -> tuple[dict[str, Any], str]:
    """Write pareto.csv/json/png and report.md; return (the --json summary, the front table)."""
    records = trial_records(rows, space, batch, seq_len, budget_ms)
    tuned = {arch_id: r.finetuned_loss for arch_id, r in reranked.items()}
    if winner_tuned is not None:  # fine-tuned after the re-rank (--rerank 0, or none fit)
        tuned[winner_tuned.arch.id] = winner_tuned.finetuned_loss
    verifications = {v.arch.id: v.to_dict() for v in verified}
    front = write_front(run.path, records, budget_ms, tuned, verifications)
    winner_id = pick.verification.arch.id if pick else None
    plot_front(run.path / PARETO_PNG, records, front, budget_ms, winner_id, tuned, workload)
    summary = summary_json(
        trials=records,
        front=front,
        budget_ms=budget_ms,
        workload=workload,
        winner_id=winner_id,
        winner_status=pick.status if pick else None,
        rerank=tuned,
        rerank_tau=rerank_tau(reranked),
        verifications=verifications,
        drift=drift,
        phases_s=phases_s,
        command=command,
        run_dir=run.path,
        journal=journal,
        best=run.best if pick else None,
    )
    write_report_md(run.path, summary)
    return summary, front_table(front, tuned, verifications)


def console_lines(summary: dict[str, Any]) -> list[str]:
    """What the console prints after the front's table: the winner and where things are."""
    lines = []
    winner = summary.get("winner")
    counts = summary["trials"]
    lines.append(
        f"trials: {counts['complete']} evaluated, {counts['infeasible']} over budget, "
        f"{counts['failed']} failed"
    )
    tau = summary.get("rerank_tau")
    if tau is not None:
        lines.append(f"re-rank: Kendall tau inherited vs fine-tuned {tau:.2f}")
    if winner is None:
        lines.append(
            f"no candidate measured within {format_ms(summary['budget_ms'])}; see "
            f"{summary['paths']['report_md']}"
        )
        return lines
    status = winner["status"]
    flag = "" if status == "fits" else f"  ** {status.upper()}: within the measurement spread **"
    tuned = winner.get("finetuned_loss")
    loss = f"loss {winner['inherited_loss']:.4f} inherited" + (
        f", {tuned:.4f} fine-tuned" if tuned is not None else ""
    )
    lines.append(
        f"winner {winner['arch_id']}: {loss}; predicted {format_ms(winner['predicted_ms'])}, "
        f"measured {format_ms(winner['measured_ms'])} (spread {winner['measured_spread']:.1%})"
        f"; {winner['params']:,} params{flag}"
    )
    lines.append(f"saved: {summary['paths']['best']} (load with nas.load)")
    lines.append(f"report: {summary['paths']['report_md']}  plot: {summary['paths']['pareto_png']}")
    return lines
