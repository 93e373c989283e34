"""What bench_weight_sharing.py prints and keeps: the table of losses per arch, tau and gaps
against each reference, the mixer ablations, OUT/results.json and OUT/weight_sharing.png."""

from __future__ import annotations

from weight_sharing_args import Setup
from weight_sharing_measure import Measured, runs_of
from weight_sharing_plot import save_plot
from weight_sharing_rankings import (
    report_few_shot,
    report_gaps,
    report_reference,
    report_tau,
    versus,
)

from nas.core.atomic import atomic_write_json


def report(setup: Setup, m: Measured) -> dict:
    """Print the bench's results for `setup` from its measurements `m`, write
    OUT/results.json and OUT/weight_sharing.png, and return what results.json holds."""
    args, space, config = setup.args, setup.space, setup.config
    print()
    print(
        f"validation loss, nats/token ({args.eval_batches} fixed batches of "
        f"{config.batch_size} x {config.seq_len}); supernet: {config.steps} steps, "
        f"{m.tokens:,} tokens, trained in {m.supernet_minutes:.1f} min this run"
    )
    rows = print_table(setup, m)
    summary = rankings(setup, m, rows)
    print("standalone@all: trained alone on the supernet's whole token budget, for reference")
    print()
    kept = (
        "inherited: the skip slot's own FFN replaces the mixer's (--ffn-per-mixer)"
        if config.ffn_per_mixer and "skip" in space.mixers
        else "its FFN kept"
    )
    print(
        f"loss change when one layer's mixer is removed ({kept}): how much each "
        "layer's mixer does, inside the supernet and in the standalone model (same tokens)"
    )
    for name, changes in m.ablation.items():
        alone = m.best[name, m.matched[name]][1].get("ablation")
        print(f"  {name:<17} inherited   {_cells(changes)}")
        print(f"  {'':<17} standalone  {_cells(alone) if alone else '(not recorded)'}")
        if name in m.few_shot_ablation:
            print(f"  {'':<17} few-shot    {_cells(m.few_shot_ablation[name])}")
    summary["mixer_ablation"] = m.ablation
    if m.few_shot:
        summary["few_shot"]["mixer_ablation"] = m.few_shot_ablation
    summary["mixer_ablation_standalone"] = {
        n: m.best[n, m.matched[n]][1].get("ablation") for n in setup.archs
    }
    atomic_write_json(m.out / "results.json", summary)
    plot = m.out / "weight_sharing.png"
    save_plot(plot, summary, set(args.family), summary["kendall_tau"])
    print(f"plot: {plot}")
    return summary


def print_table(setup: Setup, m: Measured) -> list[tuple]:
    """Print one row per arch (params, tokens seen, inherited and standalone losses, best
    lr, gaps); return the rows (inherited, standalone same tokens, whole budget, params)."""
    args, space, config = setup.args, setup.space, setup.config
    header = (
        f"{'arch':<17} {'params':>7} {'tokens seen':>11} {'inherited':>9} {'standalone':>10} "
        f"{'best lr':>7} {'gap':>7}"
        + (f" {'standalone@all':>14} {'gap':>7}" if args.full_budget else "")
        + (f" {'few-shot':>8} {'gap@all':>7}" if m.few_shot else "")
    )
    print(header)
    print("-" * len(header))
    rows = []
    for name, arch in setup.archs.items():
        inh, alone = m.inherited[name], m.results[name, m.matched[name]]
        params = space.param_count(arch)
        label = name + ("*" if name in args.family else "")
        line = (
            f"{label:<17} {params / 1e6:>6.2f}M "
            f"{m.matched[name] * config.batch_size * config.seq_len:>11,} {inh:>9.3f} "
            f"{alone:>10.3f} {m.best[name, m.matched[name]][0]:>7g} {(inh - alone) / alone:>+7.1%}"
        )
        full = m.results.get((name, config.steps))
        if args.full_budget:
            line += f" {full:>14.3f} {(inh - full) / full:>+7.1%}"
        if m.few_shot:
            line += f" {m.few_shot[name]:>8.3f} {(m.few_shot[name] - full) / full:>+7.1%}"
        rows.append((inh, alone, full, params))
        print(line)
    return rows


def rankings(setup: Setup, m: Measured, rows: list[tuple]) -> dict:
    """Print tau and gaps of the inherited losses (and of the short trainings and the
    few-shot losses) against each standalone reference; return results.json's entries."""
    args, archs, config, tokens = setup.args, setup.archs, setup.config, m.tokens
    mixed = [name.startswith("mixed") for name in archs]
    taus = report_tau("standalone (same tokens)", rows, 1, mixed, "   (target >= 0.8)")
    tau = taus["all"][0]
    worst = report_gaps("standalone (same tokens)", rows, 1, "   (target <= 3%)")
    if args.family:
        members = [r for r, name in zip(rows, archs, strict=True) if name in args.family]
        worst_member = max(abs(r[0] - r[1]) / r[1] for r in members)
        print(
            f"* the family, trained at every step (nas train --family); "
            f"largest |gap| among them: {worst_member:.1%}"
        )
    summary = {
        "config": config.to_dict(),
        "archs": {
            n: {
                "arch": a.to_dict(),
                "tokens_seen": m.matched[n] * config.batch_size * config.seq_len,
            }
            for n, a in archs.items()
        },
        "inherited": m.inherited,
        "standalone_same_tokens": {n: m.results[n, m.matched[n]] for n in archs},
        "standalone_lrs": args.standalone_lrs,
        "standalone_best_lr": {n: m.best[n, m.matched[n]][0] for n in archs},
        "standalone_lrs_tried": {n: sorted(runs_of(m.jobs, n, m.matched[n])) for n in archs},
        "kendall_tau": tau,
        "kendall_tau_detail": taus,
        "max_abs_gap": worst,
        "family": list(args.family),
    }
    if args.full_budget:
        taus_full = report_tau(f"standalone@all ({tokens:,} tokens each)", rows, 2, mixed)
        report_gaps(f"standalone@all ({tokens:,} tokens each)", rows, 2)
        summary["standalone_all_tokens"] = {n: m.results[n, config.steps] for n in archs}
        summary["kendall_tau_all_tokens"] = taus_full["all"][0]
        summary["kendall_tau_all_tokens_detail"] = taus_full
    if m.reference:
        summary["reference_seed"] = report_reference(
            rows, m.reference, args.reference_seed, config.seed, tokens, mixed
        )
    for key, label, runs in (
        ("finetuned", "fine-tuned {} steps", m.finetuned),
        ("scratch", "trained {} steps from scratch", m.scratch),
    ):
        for steps, losses in runs.items():
            short_rows = [(losses[n], *row[1:]) for n, row in zip(archs, rows, strict=True)]
            what = label.format(steps)
            detail = {
                "same_tokens": report_tau(
                    "standalone (same tokens)", short_rows, 1, mixed, what=what
                )
            }
            if args.full_budget:
                detail["all_tokens"] = report_tau(
                    f"standalone@all ({tokens:,} tokens each)", short_rows, 2, mixed, what=what
                )
            if m.reference:  # the second seed's ranking: is the agreement robust to it?
                again = versus([losses[n] for n in archs], list(m.reference.values()), rows)
                detail["reference_seed"] = report_tau(
                    f"standalone@all, seed {args.reference_seed}", again, 1, mixed, what=what
                )
            summary.setdefault(key, {})[steps] = {"loss": losses, "kendall_tau": detail}
    if m.few_shot:
        summary["few_shot"] = report_few_shot(
            archs,
            rows,
            m.few_shot,
            m.reference,
            args,
            setup.split_at,
            tokens,
            mixed,
            m.few_shot_passes,
        )
    return summary


def _cells(changes: list[float | None]) -> str:
    return "  ".join(f"L{i}:{'-' if c is None else f'{c:+.1%}'}" for i, c in enumerate(changes))
