"""bench_weight_sharing.py's measurements: the supernet, the standalone runs, and the losses.

`measure` trains (or resumes) the supernet of a `Setup`, reads every bench arch's
inherited validation loss and mixer ablation from it, fine-tunes and trains each briefly
(--finetune-steps), reads the few-shot sub-supernets (--few-shot), and collects the best
standalone run of each arch and budget within the lr grid (and the second seed's runs);
it prints only the trainers' progress. `Measured` holds what the report prints.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from standalone_runs import (
    StandaloneRunner,
    lr_past_edge,
    mixer_removal,
    skipped,
    static_loss,
    train_step,
)
from train_accounting import exposure_steps, logged_passes
from weight_sharing_args import Setup

import nas
from nas import Arch
from nas.supernet.batches import BatchSampler, eval_batches
from nas.supernet.checkpoint import load_supernet, read_checkpoint
from nas.supernet.few_shot import train_few_shot
from nas.supernet.training import TrainConfig, evaluate, make_optimizer, train


@dataclass
class Measured:
    """Every loss the bench measured, keyed by bench arch name (as `Setup.archs`)."""

    out: Path  # the bench's output folder (--out)
    tokens: int  # training tokens of the supernet run: steps x batch x seq_len
    supernet_minutes: float  # wall time of the supernet training in this run (~0 if done)
    matched: dict[str, int]  # steps each arch's own weights trained inside the supernet
    inherited: dict[str, float]  # validation loss with the supernet's weights, nats/token
    ablation: dict[str, list[float | None]]  # per layer: loss change with the mixer skipped
    finetuned: dict[int, dict[str, float]]  # steps -> loss after fine-tuning that long
    scratch: dict[int, dict[str, float]]  # steps -> loss after as many steps from scratch
    few_shot: dict[str, float]  # loss read from the arch's own sub-supernet (--few-shot)
    few_shot_ablation: dict[str, list[float | None]]  # the mixer ablation there
    few_shot_passes: dict[str, int | None]  # arch passes of the one-shot phase and the subs
    jobs: dict[tuple[str, int, float], Future]  # (name, steps, lr) -> its record, a future
    best: dict[tuple[str, int], tuple[float, dict]]  # (name, steps) -> (best lr, record)
    results: dict[tuple[str, int], float]  # (name, steps) -> best standalone loss
    reference: dict[str, float]  # whole-budget standalone loss, --reference-seed


def measure(setup: Setup) -> Measured:
    """Train and evaluate everything `setup` asks for (see the module docstring)."""
    args, space, corpus, device = setup.args, setup.space, setup.corpus, setup.device
    archs, config = setup.archs, setup.config
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
    few_shot, few_shot_ablation, few_shot_passes = few_shot_losses(setup, out, val_batches)
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

    return Measured(
        out=out,
        tokens=tokens,
        supernet_minutes=supernet_minutes,
        matched=matched,
        inherited=inherited,
        ablation=ablation,
        finetuned=finetuned,
        scratch=scratch,
        few_shot=few_shot,
        few_shot_ablation=few_shot_ablation,
        few_shot_passes=few_shot_passes,
        jobs=jobs,
        best=best,
        results=results,
        reference=reference,
    )


def few_shot_losses(
    setup: Setup, out: Path, val_batches: list
) -> tuple[dict[str, float], dict[str, list[float | None]], dict[str, int | None]]:
    """With --few-shot: train (or resume) the few-shot split under OUT/few_shot and return
    each arch's validation loss read from its own sub-supernet, its mixer ablation there,
    and the arch passes of the one-shot phase and of the sub-supernets; empty without."""
    args, space, corpus, device = setup.args, setup.space, setup.corpus, setup.device
    archs, config, split_at = setup.archs, setup.config, setup.split_at
    few_shot, few_shot_ablation, few_shot_passes = {}, {}, {}
    if args.few_shot is None:
        return few_shot, few_shot_ablation, few_shot_passes
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
        "sub_supernets": sum_or_none([logged_passes(r) for r in runs.subs.values()]),
    }
    for run in runs.subs.values():
        sub = load_supernet(run).to(device)
        members = {n: a for n, a in archs.items() if runs.sub_for(a) == run}
        few_shot.update(evaluate(sub, members, val_batches, device))
        few_shot_ablation.update(mixer_ablation(sub, space, members, val_batches, few_shot, device))
    return few_shot, few_shot_ablation, few_shot_passes


def runs_of(jobs: dict, name: str, steps: int) -> dict[float, Future]:
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
            runs = runs_of(jobs, name, steps)
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


def sum_or_none(counts: list[int | None]) -> int | None:
    return None if None in counts else sum(counts)


def _phase(config: TrainConfig, steps: int) -> TrainConfig:
    """`config` for a few-shot phase of `steps` steps, validated and checkpointed as the
    bench's own runs."""
    return replace(
        config, steps=steps, eval_every=max(1, steps // 4), checkpoint_every=max(1, steps // 8)
    )


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
