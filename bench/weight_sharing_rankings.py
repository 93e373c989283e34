"""Rankings for bench_weight_sharing.py: Kendall tau with its bootstrap interval, and gaps.

Each `report_*` prints its lines and returns what results.json keeps. Rows are tuples
whose first entry is the ranked value (e.g. an inherited loss), other columns the
references, and whose last entry is the arch's parameter count.
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy.stats import kendalltau
from weight_sharing_measure import sum_or_none

from nas import Arch


def report_gaps(
    reference: str, rows: list[tuple], col: int, target: str = "", what: str = "inherited"
) -> float:
    """Print the largest and the mean gap of `what` (rows[i][0]) against `reference`
    (rows[i][col]), and how many archs are within 3%; return the largest."""
    gaps = [(r[0] - r[col]) / r[col] for r in rows]
    worst = max(abs(g) for g in gaps)
    within = sum(abs(g) <= 0.03 for g in gaps)
    print(
        f"gap, {what} vs {reference}: largest |gap| {worst:.1%}{target}; "
        f"mean {np.mean(gaps):+.1%}; within 3%: {within} of {len(gaps)}"
    )
    return worst


def report_few_shot(
    archs: dict[str, Arch],
    rows: list[tuple],
    losses: dict[str, float],
    reference: dict[str, float],
    args: argparse.Namespace,
    split_at: int,
    tokens: int,
    mixed: list[bool],
    passes: dict[str, int | None],
) -> dict:
    """Print tau and gaps of the few-shot losses against the whole-budget standalone
    losses (and the second seed's), and what the split cost in arch passes (`passes` of
    the one-shot phase and of the sub-supernets, None where the runs did not log them)
    against training each arch alone; return them for results.json."""
    layers = ("layers " if len(args.few_shot) > 1 else "layer ") + ",".join(map(str, args.few_shot))
    branched = ", branched" if args.few_shot_branch and split_at else ""
    lr = f", lr {args.few_shot_lr:g}" if args.few_shot_lr is not None else ""
    what = f"few-shot ({layers}, split at step {split_at}{branched}{lr})"
    values = [losses[n] for n in archs]
    alone = versus(values, [r[2] for r in rows], rows)
    label = f"standalone@all ({tokens:,} tokens each)"
    detail = {
        "layers": list(args.few_shot),
        "split_at": split_at,
        "branched": bool(args.few_shot_branch and split_at),
        "lr": args.few_shot_lr,
        "loss": losses,
        "kendall_tau_all_tokens": report_tau(label, alone, 1, mixed, what=what),
        "max_abs_gap_all_tokens": report_gaps(label, alone, 1, what=what),
    }
    if reference:
        again = versus(values, list(reference.values()), rows)
        detail["kendall_tau_reference_seed"] = report_tau(
            f"standalone@all, seed {args.reference_seed}", again, 1, mixed, what=what
        )
    alone_steps = len(archs) * args.steps  # each arch alone for the whole budget
    detail["arch_passes"] = passes
    # Runs trained before the trainer logged its passes have no count: say which part.
    shown = {
        k: "not logged (trained before passes were logged)" if n is None else f"{n:,}"
        for k, n in passes.items()
    }
    line = (
        f"{what}: arch passes (forward+backward of one arch on one batch): one-shot phase "
        f"{shown['one_shot']}, sub-supernets {shown['sub_supernets']}"
    )
    total = sum_or_none(list(passes.values()))
    if total is not None:
        detail["share_of_training_alone"] = total / alone_steps
        line += (
            f"; in all {total:,}, {total / alone_steps:.2f} of training all {len(archs)} "
            f"alone ({len(archs)} x {args.steps:,} steps)"
        )
    print(line)
    return detail


def versus(values: list[float], reference: list[float], rows: list[tuple]) -> list[tuple]:
    """Rows for `report_tau` and `report_gaps`: values[i] against reference[i], with the
    parameter count of the bench's rows[i] (its last column)."""
    return [(v, ref, row[-1]) for v, ref, row in zip(values, reference, rows, strict=True)]


def report_reference(
    rows: list[tuple],
    reference: dict[str, float],
    seed: int,
    first_seed: int,
    tokens: int,
    mixed: list[bool],
) -> dict:
    """Print how far the whole-budget standalone losses of two seeds agree (tau and gaps),
    and tau of the inherited losses against the second seed; return them for results.json.
    `rows` are the bench's (inherited, same tokens, whole budget, params) rows, in the
    order of `reference`."""
    again = f"standalone@all, seed {seed}"
    print(
        f"{again}: every arch trained alone on the whole budget ({tokens:,} tokens) again, "
        f"initialisation and batches from seed {seed}, each at its best lr above"
    )
    second = list(reference.values())
    seeds = versus([r[2] for r in rows], second, rows)
    first = f"standalone@all, seed {first_seed}"
    ceiling = report_tau(again, seeds, 1, mixed, "   (the ceiling of any ranking)", what=first)
    report_gaps(again, seeds, 1, what=first)
    return {
        "standalone_all_tokens": reference,
        "kendall_tau_between_seeds": ceiling,
        "kendall_tau_inherited": report_tau(
            again, versus([r[0] for r in rows], second, rows), 1, mixed
        ),
    }


def report_tau(
    reference: str,
    rows: list[tuple],
    column: int,
    mixed: list[bool],
    target: str = "",
    what: str = "inherited",
) -> dict[str, list[float]]:
    """Print Kendall tau of `what` (rows[i][0]) vs rows[i][column], over all archs and,
    with 3 or more, over the random mixed ones alone, each with its 90% bootstrap
    interval, and beside it the tau of a ranking by parameter count (rows[i][-1]; more
    parameters ranked as lower loss), the floor a supernet must beat to be worth asking.
    Returns {"all": [tau, low, high, params tau], "mixed": [...]} (no "mixed" if too few)."""
    subsets = {"all": rows, "mixed": [r for r, m in zip(rows, mixed, strict=True) if m]}
    taus = {}
    for label, subset in subsets.items():
        if label == "mixed" and len(subset) < 3:
            continue
        a, b = [r[0] for r in subset], [r[column] for r in subset]
        by_params = kendalltau([-r[-1] for r in subset], b).statistic
        taus[label] = [kendalltau(a, b).statistic, *tau_interval(a, b), by_params]
        tau, low, high, _ = taus[label]
        among = "" if label == "all" else f", among the {len(subset)} mixed archs alone"
        note = target if label == "all" else ""
        print(
            f"Kendall tau, {what} vs {reference}{among}: {tau:.3f}{note}"
            f"   (90% bootstrap interval over the archs {low:.2f}..{high:.2f}; "
            f"ranking by parameter count: {by_params:.3f})"
        )
    return taus


def tau_b_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Kendall's tau-b of each row pair (a[r], b[r]), as scipy's `kendalltau` gives it.

    Vectorized over rows because the bootstrap needs thousands of taus and scipy's
    per-call overhead made it most of the bench's run time. tau-b = (concordant -
    discordant) / sqrt((pairs - ties in a) (pairs - ties in b)); NaN where a row has no
    untied pair.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    rows, n = a.shape
    out = np.empty(rows)
    step = max(1, 2**22 // max(1, n * n))  # rows per chunk: bounded memory for large n
    pairs = n * (n - 1) / 2
    for start in range(0, rows, step):
        sa = np.sign(a[start : start + step, :, None] - a[start : start + step, None, :])
        sb = np.sign(b[start : start + step, :, None] - b[start : start + step, None, :])
        # Each unordered pair appears twice in the full n x n sign matrices.
        score = (sa * sb).sum(axis=(1, 2)) / 2
        untied_a = pairs - (sa == 0).sum(axis=(1, 2)) / 2 + n / 2  # the diagonal is 0
        untied_b = pairs - (sb == 0).sum(axis=(1, 2)) / 2 + n / 2
        with np.errstate(invalid="ignore", divide="ignore"):
            out[start : start + step] = score / np.sqrt(untied_a * untied_b)
    return out


def tau_interval(
    a: list[float], b: list[float], resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """5th and 95th percentiles of Kendall tau over bootstrap resamples of the archs.

    With ten archs one swapped pair moves tau by 0.04, so a single tau says little alone;
    resampling the archs shows how far it could move with another choice of them.
    """
    rng = np.random.default_rng(seed)
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    picks = rng.integers(0, len(a), (resamples, len(a)))
    taus = tau_b_rows(a[picks], b[picks])
    taus = taus[np.isfinite(taus)]  # a resample of one repeated arch has no ranking
    low, high = np.percentile(taus, [5, 95])
    return float(low), float(high)
