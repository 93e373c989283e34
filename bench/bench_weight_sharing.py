"""Weight sharing vs standalone training: do inherited weights rank archs as training alone would?

1. Train the supernet of the space on the default corpus or --data (with the trainer of `nas train`:
   sandwich rule, in-place distillation, a loss at every exit) for --steps steps of
   --batch-size x --seq-len tokens. The run goes to OUT/supernet and is resumed if there.
2. Pick archs: the smallest, the largest, middle archs built on the non-attention
   mixers (ssm, linear_attention, conv, glu, pool) and on sliding_window, of varied sizes,
   and --mixed random archs (default 2) whose mixers vary by layer (what a search returns);
   --mixed all takes every other arch of a space of at most 64 archs instead.
3. Measure each arch's validation loss with the supernet's weights, as they are
   (inherited; no fine-tuning).
4. Train each arch alone from scratch (initialised like the supernet, the prefix of a
   freshly seeded one) for the number of tokens it saw inside the supernet: the largest
   and the smallest run at every step; a middle arch's own weights (its mixer at each
   layer) trained only at the steps where some arch of the sandwich used that mixer at
   that layer, which the trainer counts (`exposure_steps`, averaged over its layers).
   Same batches (the first N of the run's stream), same optimizer, a cosine schedule over
   its N steps, once per peak lr of --standalone-lrs; the best validation loss counts, so
   each arch is compared with a baseline tuned for itself (linear attention wants a lower
   lr than conv). With --extend-lrs N, an arch that does best at the grid's lowest
   (highest) lr also tries half (double) it, up to N times, until its best lr is inside.
   For reference, each arch is also trained alone on the whole budget (standalone@all).
   Results go to OUT/standalone/*.json (or --standalone-dir) and are reused by a rerun
   with the same standalone settings, space, corpus and --eval-batches.
5. Print per arch: tokens seen, inherited and standalone validation loss (nats/token,
   fixed batches of the validation split), the relative gap, and Kendall tau between the
   two rankings, with a 90% bootstrap interval over the archs (and, with --mixed 3 or
   more, tau among the random archs alone: the comparisons a search makes).
   Targets: every inherited loss within 3% of standalone; tau >= 0.8.
6. Print, per arch and layer, how much the inherited loss rises when that layer's mixer
   is removed (made a skip, its FFN kept): which mixers the supernet actually uses.
7. With --finetune-steps 25,50: fine-tune each arch's inherited weights alone for that
   many steps and print tau of those losses against the same references (a cheap
   ranking aid a search could use); and, as its control, the same short training from
   the standalone runs' initialisation ("from scratch").
8. With --few-shot LAYERS: split the supernet on those layers' mixers (few-shot NAS,
   nas.supernet.few_shot) and print tau and gaps of the archs read from their own
   sub-supernet against the whole-budget references, and its mixer ablation.
9. With --reference-seed S: train every arch alone on the whole budget again with seed S
   (initialisation and batches), at its best lr, and print tau between the two
   standalone rankings: how far two trainings of the same archs agree, the ceiling for
   any ranking measured against one of them.
With --family NAMES, those bench archs train at every step beside the sandwich (nas
train --family) and are marked * in the table. --fair, --ffn-per-mixer and
--sandwich-random-mixers train the supernet with those trainer options; the standalone
runs do not depend on them.

Usage: python bench/bench_weight_sharing.py [--steps 800] [--batch-size 8] [--seq-len 64]
       [--out runs/bench_weight_sharing] [--space FILE] [--data PATH] [--eval-batches 32]
       [--distill-weight W] [--homogeneous-share S] [--standalone-lrs 0.001,0.003,0.006]
       [--extend-lrs N] [--no-full-budget] [--family mixed0,mixed1] [--mixed 2|all]
       [--finetune-steps 25,50] [--finetune-lr 0.001] [--fair] [--ffn-per-mixer]
       [--sandwich-random-mixers] [--few-shot 1[,2]] [--few-shot-split-at STEPS]
       [--few-shot-branch | --few-shot-lr LR] [--reference-seed 1]
       [--device cpu|cuda|auto] [--jobs 1]
The README's figures: --space bench/spaces/weight_sharing.yaml --steps 6000
--batch-size 16 --seq-len 64 --distill-weight 0 --no-full-budget (about 60 min on 2 cores:
15 for the supernet, 45 for 30 standalone runs).
"""

from __future__ import annotations

import argparse
import itertools
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from scipy.stats import kendalltau
from standalone_runs import (
    StandaloneRunner,
    lr_past_edge,
    mixer_removal,
    skipped,
    static_loss,
    train_step,
)

import nas
from nas import Arch, LayerArch
from nas.cli.common import layer_list, load_space
from nas.core.atomic import atomic_write_json
from nas.core.errors import NasError
from nas.search_space import MIXERS
from nas.supernet.batches import BatchSampler, eval_batches
from nas.supernet.checkpoint import load_supernet, read_checkpoint
from nas.supernet.corpus import load_corpus
from nas.supernet.device import resolve_device
from nas.supernet.few_shot import check_split, train_few_shot
from nas.supernet.training import (
    TrainConfig,
    evaluate,
    exposure_steps,
    logged_passes,
    make_optimizer,
    train,
)

# (mixer, d_model index, heads index, ffn index, exit index): varied sizes, so that the
# ranking spans a range and is not only decided by the mixer.
MIDDLE = [
    ("ssm", 2, 2, 3, 1),
    ("linear_attention", 2, 2, 2, 1),
    ("conv", 1, 0, 3, 2),
    ("glu", 1, 1, 2, 1),
    ("pool", 0, 0, 2, 1),
    ("sliding_window", 3, 3, 3, 0),
]
# Random archs of the space, mixers varying by layer: the kind a search returns.
MIXED_ARCHS, MIXED_SEED = 2, 7


# `--mixed all` enumerates a small space; beyond this many archs, sample instead.
MAX_ENUMERATED = 64


def every_arch(space: nas.SearchSpace) -> list[Arch]:
    """Every arch of `space`, in a fixed order (widths, then depths, then layer choices)."""
    options = space.layer_options()
    return [
        Arch(d_model, layers)
        for d_model in space.d_model
        for depth in space.exits
        for layers in itertools.product(options, repeat=depth)
    ]


def bench_archs(space: nas.SearchSpace, mixed: int | None = MIXED_ARCHS) -> dict[str, Arch]:
    """The smallest, the largest, one middle arch per mixer of `MIDDLE` in the space, and
    `mixed` random archs ("mixed0", ...; one seeded stream, so a larger `mixed` keeps the
    first ones). `mixed=None` takes every other arch of the space instead (as "mixed0",
    ...), so that a small space is compared whole; each arch appears once."""
    archs = {"smallest": space.smallest(), "largest": space.largest()}

    def pick(values: tuple[int, ...], i: int) -> int:
        return values[min(i, len(values) - 1)]

    for mixer, d_i, h_i, f_i, e_i in MIDDLE:
        if mixer not in space.mixers:
            continue
        spec = MIXERS[mixer]
        layer = LayerArch(
            mixer,
            pick(space.heads, h_i) if spec.uses_heads else None,
            pick(space.windows, 1) if spec.uses_window else None,
            pick(space.ffn, f_i),
        )
        depth = pick(space.exits, e_i)
        arch = space.validate(Arch(pick(space.d_model, d_i), (layer,) * depth))
        if arch not in archs.values():  # in a tiny space a middle arch can be an extreme one
            archs[mixer] = arch
    if mixed is None:
        named = set(archs.values())
        rest = [a for a in every_arch(space) if a not in named]
    else:
        rest = space.sample_many(mixed, seed=MIXED_SEED)
    for i, arch in enumerate(rest):
        archs[f"mixed{i}"] = arch
    return archs


def _mixed_count(text: str) -> int | None:
    """'20' -> 20 random archs; 'all' -> None, every arch of a small space."""
    if text == "all":
        return None
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a count or 'all'") from None
    if count < 0:
        raise argparse.ArgumentTypeError("--mixed must be 0 or more (or 'all')")
    return count


def _lr_list(text: str) -> list[float]:
    """'0.001,0.003' -> [0.001, 0.003]: distinct positive learning rates, ascending."""
    try:
        lrs = sorted({float(x) for x in text.split(",")})
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"'{text}' is not a comma-separated list of numbers"
        ) from None
    if not lrs or min(lrs) <= 0:
        raise argparse.ArgumentTypeError(f"learning rates must be > 0, got '{text}'")
    return lrs


def _steps_list(text: str) -> tuple[int, ...]:
    """'25,50' -> (25, 50): distinct positive step counts, ascending."""
    try:
        steps = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a list of step counts") from None
    if not steps or steps[0] < 1:
        raise argparse.ArgumentTypeError(f"'{text}': step counts must be 1 or more")
    return tuple(steps)


def _runs_of(jobs: dict, name: str, steps: int) -> dict[float, Future]:
    """lr -> the standalone run of arch `name` for `steps` steps at that lr, from `jobs`."""
    return {lr: job for (n, s, lr), job in jobs.items() if (n, s) == (name, steps)}


def _best_standalone(
    jobs: dict, runner: StandaloneRunner, archs: dict, config, args, folder: Path
) -> dict[tuple[str, int], tuple[float, dict]]:
    """(name, steps) -> (lr, record) of the best standalone run of each arch and budget,
    over --standalone-lrs and, with --extend-lrs, the lrs past its edges (`lr_past_edge`).
    `jobs` ((name, steps, lr) -> future) gains the runs this adds."""
    pending = {(name, steps) for name, steps, _ in jobs}
    while pending:
        extra = {}
        for name, steps in sorted(pending):
            runs = _runs_of(jobs, name, steps)
            losses = {lr: job.result()["val_loss"] for lr, job in runs.items()}
            lr = lr_past_edge(losses, args.standalone_lrs, args.extend_lrs)
            if lr is not None:
                extra[name, steps, lr] = runner.submit(
                    name, archs[name], replace(config, lr=lr), steps, folder
                )
        jobs.update(extra)
        pending = {(name, steps) for name, steps, _ in extra}
    best: dict[tuple[str, int], tuple[float, dict]] = {}
    for (name, steps, lr), job in jobs.items():
        record = job.result()
        if (name, steps) not in best or record["val_loss"] < best[name, steps][1]["val_loss"]:
            best[name, steps] = (lr, record)
    return best


def _name_list(text: str) -> tuple[str, ...]:
    """'mixed0,mixed1' -> ('mixed0', 'mixed1'); main checks them against `bench_archs`."""
    return tuple(n.strip() for n in text.split(",") if n.strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--space", help="search space file (default: the shipped space)")
    parser.add_argument(
        "--data", help="corpus, as nas train --data takes it (default: the default corpus)"
    )
    parser.add_argument("--dtype", help="token dtype of a raw .bin corpus (e.g. uint16)")
    parser.add_argument("--steps", type=int, default=800, help="supernet (and standalone) steps")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--random-archs", type=int, default=TrainConfig.random_archs)
    parser.add_argument("--homogeneous-share", type=float, default=TrainConfig.homogeneous_share)
    parser.add_argument(
        "--ffn-per-mixer",
        action="store_true",
        help="an FFN per (layer, mixer) in the supernet (nas train --ffn-per-mixer); the "
        "standalone runs are initialised as always, so their records are shared",
    )
    parser.add_argument(
        "--fair",
        action="store_true",
        help="fair sampling (nas train --fair): every mixer trains at every layer in every step",
    )
    parser.add_argument(
        "--sandwich-random-mixers",
        action="store_true",
        help="the sandwich's largest and smallest archs draw their mixers at random each step",
    )
    parser.add_argument("--distill-weight", type=float, default=TrainConfig.distill_weight)
    parser.add_argument("--early-exit-weight", type=float, default=TrainConfig.early_exit_weight)
    parser.add_argument("--lr", type=float, default=TrainConfig.lr, help="supernet peak lr")
    parser.add_argument(
        "--standalone-lrs",
        type=_lr_list,
        default="0.001,0.003,0.006",
        help="comma-separated peak lrs each standalone run tries; the best validation loss counts",
    )
    parser.add_argument(
        "--extend-lrs",
        type=int,
        default=0,
        metavar="N",
        help="where an arch does best at the lowest (highest) lr of --standalone-lrs, also "
        "try half (double) that lr, up to N steps past the grid's edge, until its best lr "
        "has a tried lr on each side (default 0: the grid as given)",
    )
    parser.add_argument("--eval-batches", type=int, default=32, help="validation batches per arch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--device",
        default="cpu",
        help="cpu (fp32, the default), cuda (bf16 autocast, as nas train) or auto; the "
        "supernet, the standalone runs and every evaluation run there",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="standalone runs trained at once, each in its own process (default 1); the "
        "whole-budget ones start beside the supernet",
    )
    parser.add_argument("--out", default="runs/bench_weight_sharing")
    parser.add_argument(
        "--no-full-budget",
        dest="full_budget",
        action="store_false",
        help="skip the reference column: every arch trained alone on the whole budget",
    )
    parser.add_argument(
        "--family",
        type=_name_list,
        default=(),
        help="comma-separated bench archs (e.g. mixed0,mixed1) that the supernet trains at "
        "every step as its family (nas train --family); marked * in the table",
    )
    parser.add_argument(
        "--mixed",
        type=_mixed_count,
        default=MIXED_ARCHS,
        help="random archs of the space (mixers varying by layer) to compare; with 3 or more, "
        "tau among them alone is printed too: the ranking a search relies on. 'all' compares "
        f"every arch of a space of at most {MAX_ENUMERATED}",
    )
    parser.add_argument(
        "--finetune-steps",
        type=_steps_list,
        default=(),
        help="comma-separated step counts (e.g. 25,50): also rank the archs after fine-tuning "
        "each one's inherited weights for that many steps (lr --finetune-lr, on a batch "
        "stream of its own), and print tau of those losses against each reference",
    )
    parser.add_argument("--finetune-lr", type=float, default=1e-3)
    parser.add_argument(
        "--reference-seed",
        type=int,
        help="train every arch alone on the whole budget once more, initialisation and "
        "batches from this seed, at its best lr, and print tau between the two standalone "
        "rankings: how far two trainings agree, the most any ranking can be expected to",
    )
    parser.add_argument(
        "--few-shot",
        type=layer_list,
        metavar="LAYERS",
        help="also split the supernet on these layers' mixers (e.g. 1 or 1,2; few-shot NAS, "
        "nas train --few-shot): a one-shot phase, then one sub-supernet per combination of "
        "their mixers from its weights; rank each arch with the sub-supernet of its own",
    )
    parser.add_argument(
        "--few-shot-split-at",
        type=int,
        metavar="STEPS",
        help="steps of the few-shot run's one-shot phase (default: half of --steps); each "
        "sub-supernet trains the rest, so every arch's weights see --steps batches. 0 trains "
        "the sub-supernets from scratch",
    )
    parser.add_argument(
        "--few-shot-branch",
        action="store_true",
        help="the sub-supernets branch the one-shot phase (its optimizer state, warmup and "
        "cosine continue from the split) instead of starting a schedule of their own",
    )
    parser.add_argument(
        "--few-shot-lr",
        type=float,
        metavar="LR",
        help="peak lr of the sub-supernets (default: --lr); they start a schedule of their own",
    )
    parser.add_argument(
        "--standalone-dir", help="where standalone results are kept (default: OUT/standalone)"
    )
    args = parser.parse_args()

    try:
        space = load_space(args)
        corpus = load_corpus(args.data, dtype=args.dtype)
        device = resolve_device(args.device)
    except NasError as exc:  # a bad space file, data path or device: one line, exit 2
        parser.error(str(exc))
    if args.mixed is None and 10**space.log10_size > MAX_ENUMERATED + 0.5:
        parser.error(
            f"--mixed all: the space has {10**space.log10_size:.0f} archs, more than "
            f"{MAX_ENUMERATED}; give a count of random archs instead"
        )
    if args.jobs < 1:
        parser.error("--jobs must be 1 or more")
    if args.extend_lrs < 0:
        parser.error(f"--extend-lrs must be 0 or more, got {args.extend_lrs}")
    if args.reference_seed is not None and not args.full_budget:
        parser.error("--reference-seed retrains the whole-budget runs; drop --no-full-budget")
    if args.reference_seed == args.seed:
        parser.error(f"--reference-seed must differ from --seed ({args.seed})")
    split_at = args.steps // 2 if args.few_shot_split_at is None else args.few_shot_split_at
    if args.few_shot is not None:
        try:
            check_split(space, args.few_shot, split_at, args.steps)
        except NasError as exc:
            parser.error(f"--few-shot / --few-shot-split-at: {exc}")
        if not args.full_budget:
            parser.error("--few-shot is compared with the whole-budget runs; drop --no-full-budget")
        if args.few_shot_branch and args.few_shot_lr is not None:
            parser.error("--few-shot-branch keeps the one-shot schedule; drop --few-shot-lr")
        if args.few_shot_lr is not None and not args.few_shot_lr > 0:
            parser.error(f"--few-shot-lr must be > 0, got {args.few_shot_lr}")
    archs = bench_archs(space, args.mixed)
    unknown = [n for n in args.family if n not in archs]
    if unknown:
        parser.error(f"--family: unknown bench arch(s) {unknown}; choose from {list(archs)}")
    config = TrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        seq_len=args.seq_len,
        random_archs=args.random_archs,
        homogeneous_share=args.homogeneous_share,
        fair=args.fair,
        sandwich_random_mixers=args.sandwich_random_mixers,
        ffn_per_mixer=args.ffn_per_mixer,
        distill_weight=args.distill_weight,
        early_exit_weight=args.early_exit_weight,
        lr=args.lr,
        eval_every=max(1, args.steps // 4),
        checkpoint_every=max(1, args.steps // 8),
        seed=args.seed,
        family=tuple(archs[n].to_json() for n in args.family),
    )
    out = Path(args.out)
    tokens = config.steps * config.batch_size * config.seq_len
    val_batches = eval_batches(corpus.val, config.batch_size, config.seq_len, args.eval_batches)
    standalone_dir = Path(args.standalone_dir) if args.standalone_dir else out / "standalone"
    # What a standalone record's loss also depends on besides its arch and training config:
    # a record is reused only where all of it matches (CUDA runs in bf16, the CPU in fp32).
    context = {"space": space.fingerprint, "data": corpus.key, "eval_batches": args.eval_batches}
    if device.type != "cpu":
        context["device"] = f"{device.type} bf16"
    lrs = args.standalone_lrs
    runner = StandaloneRunner(args.jobs, space, args.data, args.dtype, val_batches, context, device)
    # (name, steps, lr) -> the record of that standalone run, as a future. The whole-budget
    # runs do not depend on the supernet: with --jobs they train while it does.
    jobs = {
        (name, config.steps, lr): runner.submit(
            name, arch, replace(config, lr=lr), config.steps, standalone_dir
        )
        for name, arch in archs.items()
        for lr in (lrs if args.full_budget else [])
    }
    print(
        f"supernet: {config.steps} steps x {config.batch_size} x {config.seq_len} = "
        f"{tokens:,} tokens per arch on {device}; {out / 'supernet'}",
        flush=True,
    )
    started = time.perf_counter()
    train(space, corpus, config, out / "supernet", resume=True, progress=True, device=device)
    supernet_minutes = (time.perf_counter() - started) / 60

    usage = read_checkpoint(out / "supernet").state["usage"]
    net = load_supernet(out / "supernet").to(device)
    # Standalone budgets: the tokens each arch's own weights saw inside the supernet (the
    # issue's comparison), and, for reference, the supernet's whole budget (above).
    matched = {
        name: max(1, round(exposure_steps(arch, usage, config.steps, config.ffn_per_mixer)))
        for name, arch in archs.items()
    }
    for name, arch in archs.items():
        for lr in lrs:
            if (name, matched[name], lr) not in jobs:
                jobs[name, matched[name], lr] = runner.submit(
                    name, arch, replace(config, lr=lr), matched[name], standalone_dir
                )
    inherited = evaluate(net, archs, val_batches, device)
    ablation = mixer_ablation(net, space, archs, val_batches, inherited, device)
    short = replace(config, lr=args.finetune_lr)
    finetuned = short_training_losses(
        net.extract, archs, corpus, short, args.finetune_steps, val_batches, device
    )
    del net
    few_shot, few_shot_ablation, few_shot_passes = {}, {}, {}
    if args.few_shot is not None:
        branched = "-branched" if args.few_shot_branch and split_at else ""
        runs = train_few_shot(
            space,
            corpus,
            config,
            args.few_shot,
            split_at,
            out / "few_shot" / f"split{split_at}{branched}",
            device=device,
            resume=True,
            branch=args.few_shot_branch,
            lr=args.few_shot_lr,
            phase=_phase,
            on_event=lambda msg: print(msg, flush=True),
        )
        few_shot_passes = {
            "one_shot": logged_passes(runs.one_shot) if runs.one_shot else 0,
            "sub_supernets": _sum_or_none([logged_passes(r) for r in runs.subs.values()]),
        }
        for run in runs.subs.values():
            sub = load_supernet(run).to(device)
            members = {n: a for n, a in archs.items() if runs.sub_for(a) == run}
            few_shot.update(evaluate(sub, members, val_batches, device))
            few_shot_ablation.update(
                mixer_ablation(sub, space, members, val_batches, few_shot, device)
            )
    # The control: the same short training from the standalone runs' initialisation.
    scratch = short_training_losses(
        nas.Supernet(space, seed=config.seed).extract,
        archs,
        corpus,
        short,
        args.finetune_steps,
        val_batches,
        device,
    )

    # (name, steps) -> (lr, record) of the best standalone run within the lr grid: a model
    # trained alone would be tuned for itself (linear attention wants a lower lr than conv).
    best = _best_standalone(jobs, runner, archs, config, args, standalone_dir)
    results = {key: record["val_loss"] for key, (_, record) in best.items()}
    # The same whole-budget runs with another seed (kept in their own folder): how far two
    # trainings of the same archs agree, the most any ranking can be expected to agree.
    again = {
        name: runner.submit(
            name,
            arch,
            replace(config, lr=best[name, config.steps][0], seed=args.reference_seed),
            config.steps,
            standalone_dir / f"seed{args.reference_seed}",
        )
        for name, arch in archs.items()
        if args.reference_seed is not None
    }
    reference = {name: job.result()["val_loss"] for name, job in again.items()}
    runner.close()

    print()
    print(
        f"validation loss, nats/token ({args.eval_batches} fixed batches of "
        f"{config.batch_size} x {config.seq_len}); supernet: {config.steps} steps, "
        f"{tokens:,} tokens, trained in {supernet_minutes:.1f} min this run"
    )
    header = (
        f"{'arch':<17} {'params':>7} {'tokens seen':>11} {'inherited':>9} {'standalone':>10} "
        f"{'best lr':>7} {'gap':>7}"
        + (f" {'standalone@all':>14} {'gap':>7}" if args.full_budget else "")
        + (f" {'few-shot':>8} {'gap@all':>7}" if few_shot else "")
    )
    print(header)
    print("-" * len(header))
    rows = []
    for name, arch in archs.items():
        inh, alone = inherited[name], results[name, matched[name]]
        params = space.param_count(arch)
        label = name + ("*" if name in args.family else "")
        line = (
            f"{label:<17} {params / 1e6:>6.2f}M "
            f"{matched[name] * config.batch_size * config.seq_len:>11,} {inh:>9.3f} "
            f"{alone:>10.3f} {best[name, matched[name]][0]:>7g} {(inh - alone) / alone:>+7.1%}"
        )
        full = results.get((name, config.steps))
        if args.full_budget:
            line += f" {full:>14.3f} {(inh - full) / full:>+7.1%}"
        if few_shot:
            line += f" {few_shot[name]:>8.3f} {(few_shot[name] - full) / full:>+7.1%}"
        rows.append((inh, alone, full, params))
        print(line)
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
            n: {"arch": a.to_dict(), "tokens_seen": matched[n] * config.batch_size * config.seq_len}
            for n, a in archs.items()
        },
        "inherited": inherited,
        "standalone_same_tokens": {n: results[n, matched[n]] for n in archs},
        "standalone_lrs": lrs,
        "standalone_best_lr": {n: best[n, matched[n]][0] for n in archs},
        "standalone_lrs_tried": {n: sorted(_runs_of(jobs, n, matched[n])) for n in archs},
        "kendall_tau": tau,
        "kendall_tau_detail": taus,
        "max_abs_gap": worst,
        "family": list(args.family),
    }
    if args.full_budget:
        taus_full = report_tau(f"standalone@all ({tokens:,} tokens each)", rows, 2, mixed)
        report_gaps(f"standalone@all ({tokens:,} tokens each)", rows, 2)
        summary["standalone_all_tokens"] = {n: results[n, config.steps] for n in archs}
        summary["kendall_tau_all_tokens"] = taus_full["all"][0]
        summary["kendall_tau_all_tokens_detail"] = taus_full
    if reference:
        summary["reference_seed"] = report_reference(
            rows, reference, args.reference_seed, config.seed, tokens, mixed
        )
    for key, label, runs in (
        ("finetuned", "fine-tuned {} steps", finetuned),
        ("scratch", "trained {} steps from scratch", scratch),
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
            if reference:  # the second seed's ranking: is the agreement robust to it?
                again = versus([losses[n] for n in archs], list(reference.values()), rows)
                detail["reference_seed"] = report_tau(
                    f"standalone@all, seed {args.reference_seed}", again, 1, mixed, what=what
                )
            summary.setdefault(key, {})[steps] = {"loss": losses, "kendall_tau": detail}
    if few_shot:
        summary["few_shot"] = report_few_shot(
            archs, rows, few_shot, reference, args, split_at, tokens, mixed, few_shot_passes
        )
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
    for name, changes in ablation.items():
        alone = best[name, matched[name]][1].get("ablation")
        print(f"  {name:<17} inherited   {_cells(changes)}")
        print(f"  {'':<17} standalone  {_cells(alone) if alone else '(not recorded)'}")
        if name in few_shot_ablation:
            print(f"  {'':<17} few-shot    {_cells(few_shot_ablation[name])}")
    summary["mixer_ablation"] = ablation
    if few_shot:
        summary["few_shot"]["mixer_ablation"] = few_shot_ablation
    summary["mixer_ablation_standalone"] = {
        n: best[n, matched[n]][1].get("ablation") for n in archs
    }
    atomic_write_json(out / "results.json", summary)
    plot = out / "weight_sharing.png"
    save_plot(plot, summary, set(args.family), tau)
    print(f"plot: {plot}")


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
    total = _sum_or_none(list(passes.values()))
    if total is not None:
        detail["share_of_training_alone"] = total / alone_steps
        line += (
            f"; in all {total:,}, {total / alone_steps:.2f} of training all {len(archs)} "
            f"alone ({len(archs)} x {args.steps:,} steps)"
        )
    print(line)
    return detail


def _sum_or_none(counts: list[int | None]) -> int | None:
    return None if None in counts else sum(counts)


def _phase(config: TrainConfig, steps: int) -> TrainConfig:
    """`config` for a few-shot phase of `steps` steps, validated and checkpointed as the
    bench's own runs."""
    return replace(
        config, steps=steps, eval_every=max(1, steps // 4), checkpoint_every=max(1, steps // 8)
    )


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


def short_training_losses(
    start: Callable[[Arch], nas.StaticModel],
    archs: dict[str, Arch],
    corpus,
    config: TrainConfig,
    steps: tuple[int, ...],
    batches: list,
    device: torch.device,
) -> dict[int, dict[str, float]]:
    """{n: {name: validation loss after n steps of training `start(arch)` alone}}.

    Each arch is trained at the constant lr `config.lr`, without weight decay, on a batch
    stream of its own (not the supernet's), and validated at each n of `steps`. From the
    inherited weights, that is what a search could afford per candidate, to rank mixer
    combinations the supernet never trained together; from the standalone initialisation,
    it is the control that says whether the supernet's weights add anything.
    """
    results: dict[int, dict[str, float]] = {n: {} for n in steps}
    if not steps:  # --finetune-steps not given
        return results
    for name, arch in archs.items():
        model = start(arch).to(device).train()
        optimizer = make_optimizer(model, replace(config, weight_decay=0.0))
        sampler = BatchSampler(
            corpus.train,
            config.batch_size,
            config.seq_len,
            np.random.default_rng([config.seed, 3]),
        )
        for step in range(1, steps[-1] + 1):
            train_step(model, optimizer, sampler, config.grad_clip, device)
            if step in results:
                results[step][name] = static_loss(model, batches, device)
                model.train()
    return results


def tau_interval(
    a: list[float], b: list[float], resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """5th and 95th percentiles of Kendall tau over bootstrap resamples of the archs.

    With ten archs one swapped pair moves tau by 0.04, so a single tau says little alone;
    resampling the archs shows how far it could move with another choice of them.
    """
    rng = np.random.default_rng(seed)
    a, b = np.asarray(a), np.asarray(b)
    taus = []
    for _ in range(resamples):
        pick = rng.integers(0, len(a), len(a))
        value = kendalltau(a[pick], b[pick]).statistic
        if np.isfinite(value):  # a resample of one repeated arch has no ranking
            taus.append(value)
    low, high = np.percentile(taus, [5, 95])
    return float(low), float(high)


def save_plot(path: Path, summary: dict, family: set[str], tau: float) -> None:
    """Inherited vs standalone loss (with the 3% band), and the two mixer ablations."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summary["inherited"])
    inh = np.array([summary["inherited"][n] for n in names])
    alone = np.array([summary["standalone_same_tokens"][n] for n in names])
    fig, (ax, *heat) = plt.subplots(
        1, 3, figsize=(16, 5.5), gridspec_kw={"width_ratios": [1.4, 1, 1]}
    )
    few = summary.get("few_shot")
    few_xy = (
        np.array([[summary["standalone_all_tokens"][n], few["loss"][n]] for n in names])
        if few
        else np.empty((0, 2))
    )
    values = np.concatenate([inh, alone, few_xy.ravel()])
    lo, hi = values.min() - 0.05, values.max() + 0.05
    grid = np.linspace(lo, hi, 2)
    ax.fill_between(grid, grid * 0.97, grid * 1.03, color="tab:green", alpha=0.15, label="±3%")
    ax.plot(grid, grid, color="tab:green", lw=1)
    for name, x, y in zip(names, alone, inh, strict=True):
        ax.scatter(x, y, color="tab:red" if name in family else "tab:blue", zorder=3)
        ax.annotate(
            name + ("*" if name in family else ""),
            (x, y),
            fontsize=8,
            xytext=(4, 2),
            textcoords="offset points",
        )
    if few:
        ax.scatter(
            *few_xy.T,
            color="tab:orange",
            marker="^",
            zorder=3,
            label=f"few-shot (layers {few['layers']}) vs standalone@all "
            f"(τ {few['kendall_tau_all_tokens']['all'][0]:.2f})",
        )
    ax.set(
        xlabel="standalone, same tokens (nats/token)",
        ylabel="inherited (nats/token)",
        title=f"weight sharing vs standalone (Kendall τ {tau:.2f}; * family)",
    )
    ax.legend(loc="upper left")
    for axis, key, title in zip(
        heat,
        ("mixer_ablation", "mixer_ablation_standalone"),
        ("inherited weights", "standalone models"),
        strict=True,
    ):
        depth = max(len(v or []) for v in summary[key].values())
        table = np.full((len(names), depth), np.nan)
        for i, name in enumerate(names):
            for j, change in enumerate(summary[key].get(name) or []):
                table[i, j] = np.nan if change is None else 100 * change
        image = axis.imshow(table, cmap="viridis", vmin=0, vmax=60, aspect="auto")
        axis.set_xticks(range(depth), [f"layer {j}" for j in range(depth)])
        axis.set_yticks(range(len(names)), names if axis is heat[0] else [], fontsize=8)
        axis.set_title(f"loss rise (%) without the mixer\n{title}", fontsize=9)
        for (i, j), value in np.ndenumerate(table):
            if not np.isnan(value):
                axis.text(
                    j,
                    i,
                    f"{value:.0f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if value < 30 else "black",
                )
    fig.colorbar(image, ax=heat, shrink=0.8)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def _cells(changes: list[float | None]) -> str:
    return "  ".join(f"L{i}:{'-' if c is None else f'{c:+.1%}'}" for i, c in enumerate(changes))


def mixer_ablation(
    net: nas.Supernet,
    space: nas.SearchSpace,
    archs: dict[str, Arch],
    batches: list,
    inherited: dict[str, float],
    device: torch.device,
) -> dict[str, list[float | None]]:
    """Per arch and layer: the relative change of the inherited loss when that layer's
    mixer is made a skip (None for a skip layer). A layer whose mixer the rest of the
    network does not use changes it by ~0. In a space without skip the supernet has no
    such arch: the mixer is taken out of the extracted model instead, its FFN kept."""
    if "skip" not in space.mixers:
        return {
            name: mixer_removal(net.extract(arch), inherited[name], batches, device)
            for name, arch in archs.items()
        }
    variants = {}
    for name, arch in archs.items():
        for i, layer in enumerate(arch.layers):
            if layer.mixer != "skip":
                variants[name, i] = space.validate(skipped(arch, i))
    losses = evaluate(net, {f"{n}/{i}": a for (n, i), a in variants.items()}, batches, device)
    return {
        name: [
            (losses[f"{name}/{i}"] - inherited[name]) / inherited[name]
            if (name, i) in variants
            else None
            for i in range(arch.depth)
        ]
        for name, arch in archs.items()
    }


if __name__ == "__main__":
    main()
