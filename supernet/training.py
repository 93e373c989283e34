"""Supernet training: the loop around the sandwich step, and the run folder it writes.

Each step draws one batch and runs `sandwich.sandwich_step` on it (the largest arch, the
smallest, and `random_archs` sampled archs, with in-place distillation and a loss at
every exit), clips the gradients, and steps AdamW with a warmup + cosine learning rate.
With `sandwich=False` a step runs `sandwich.family_step` instead: the family archs
alone, on the targets (a fine-tune of a search's candidates from a trained supernet).
At intervals it measures the validation loss of fixed reference archs, appends metrics
to a JSONL file, and writes a checkpoint.

Randomness comes only from two seeded numpy generators (archs, batch positions) and the
supernet's seeded initialisation, and their states are checkpointed, so on the CPU a
resumed run reproduces the uninterrupted one exactly.

The parts live in their own modules, re-exported here: the settings (`train_config`),
the schedule and optimizer (`schedule`), which archs a step runs (`arch_sampling`),
validation (`evaluation`), the run folder's files (`run_dir`) and the checks of what a
run may continue (`resume`).
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from nas.core.atomic import atomic_write_json
from nas.core.errors import DataError, NasError, NonFiniteLossError
from nas.search_space import SearchSpace

from .arch_sampling import fair_students, parts_used, sample_student, sandwich_archs, usage_key
from .batches import check_length
from .corpus import Corpus
from .device import resolve_device
from .evaluation import REFERENCE_SEED, evaluate, reference_archs
from .resume import checkpoint_to_resume, resolved_sources
from .run_dir import (
    MANIFEST_FILE,
    METRICS_FILE,
    RUN_FORMAT,
    MetricsLog,
    read_manifest,
    run_manifest,
)
from .run_state import Run, new_run, start_run
from .sandwich import family_step, sandwich_step
from .schedule import lr_at, make_optimizer
from .train_config import TrainConfig

# What other modules import from here; the names live in the modules above.
__all__ = [
    "MANIFEST_FILE",
    "METRICS_FILE",
    "REFERENCE_SEED",
    "RUN_FORMAT",
    "MetricsLog",
    "NonFiniteLossError",
    "TrainConfig",
    "TrainResult",
    "evaluate",
    "fair_students",
    "lr_at",
    "make_optimizer",
    "read_manifest",
    "reference_archs",
    "sample_student",
    "train",
    "usage_key",
]


@dataclass
class TrainResult:
    """What a finished (or resumed-and-finished) run reports."""

    run_dir: Path  # the run folder
    checkpoint: Path  # its last checkpoint file
    step: int  # steps done
    tokens: int  # training tokens seen by every sandwich arch (step * B * T)
    val_loss: dict[str, float] = field(default_factory=dict)  # nats/token per reference arch
    seconds: float = 0.0  # wall time of this process's part of the run


def train(
    space: SearchSpace,
    corpus: Corpus,
    config: TrainConfig,
    run_dir: str | Path,
    *,
    resume: bool = False,
    device: str | torch.device = "auto",
    progress: bool = True,
    stop_after: int | None = None,
    on_event: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train a supernet over `space` on `corpus`, writing everything to `run_dir`.

    `run_dir` receives manifest.json, metrics.jsonl and checkpoint.safetensors. With
    `resume`, the run continues from its checkpoint with the checkpoint's config (a
    different `config` raises), else from step 0. `stop_after` ends this call after that
    many steps in total (for tests that interrupt a run); `on_event` receives one-line
    status messages (e.g. where the checkpoint is).

    Raises `CheckpointError` for an unusable checkpoint or one for another space,
    `DataError` when the corpus is too small or its tokens exceed the vocabulary,
    `DeviceError` for an unavailable device, `NonFiniteLossError` when a step's loss is
    NaN or infinite (the run diverged: lower `config.lr`).
    """
    run_dir = Path(run_dir)
    config = resolved_sources(config)
    device = device if isinstance(device, torch.device) else resolve_device(device)
    say = on_event or (lambda msg: None)
    _check_corpus(space, corpus, config)
    family = config.family_archs(space)  # checked before anything is written
    pins = config.pins(space)
    ckpt = checkpoint_to_resume(run_dir, space, corpus, config, resume)
    run = new_run(space, corpus, config, run_dir, device, family, pins)
    start_run(run, ckpt, say)
    manifest = run_manifest(space, corpus, config, device, run.refs, run.step, status="running")
    atomic_write_json(run_dir / MANIFEST_FILE, manifest)
    say(f"checkpoint: {run.ckpt_file}")
    last = config.steps if stop_after is None else min(config.steps, stop_after)
    started = time.perf_counter()
    val = _train_until(run, last, progress)
    return _finish(run, manifest, val, started)


def _train_until(run: Run, last: int, progress: bool) -> dict[str, float]:
    """Train `run` up to step `last`, logging, validating and checkpointing as configured;
    returns the last validation of this call ({} if none ran)."""
    config = run.config
    val: dict[str, float] = {}
    with _progress_bar(config.steps, run.step, progress) as bar:
        while run.step < last:
            t0 = time.perf_counter()
            lr, losses, grad_norm = _train_step(run)
            seconds = time.perf_counter() - t0
            _check_finite(losses, run.step, config.lr)
            run.metrics.append(
                {
                    "kind": "train",
                    "step": run.step,
                    "tokens": run.step * run.tokens_per_step,
                    "lr": lr,
                    **_train_losses(losses),
                    "passes": losses["passes"],  # forward+backward passes, repeats merged
                    "grad_norm": grad_norm,
                    "tokens_per_s": run.tokens_per_step / seconds,
                }
            )
            if run.step % config.eval_every == 0 or run.step == config.steps:
                val = evaluate(run.net, run.refs, run.val_batches, run.device)
                run.metrics.append({"kind": "eval", "step": run.step, "val_loss": val})
            if run.step % config.checkpoint_every == 0 or run.step == last:
                run.save_checkpoint()
            bar.update(1)
            bar.set_postfix_str(_postfix(run.tokens_per_step / seconds, losses, val), refresh=False)
    return val


def _train_step(run: Run) -> tuple[float, dict[str, float], float]:
    """One optimizer step of `run`: (its lr, the step's losses, the gradient norm before
    clipping). The archs are drawn before the batch, as every run has drawn them."""
    config, device = run.config, run.device
    lr = lr_at(run.step, config)
    for group in run.optimizer.param_groups:
        group["lr"] = lr
    if config.sandwich:
        largest, students = sandwich_archs(
            run.space, config, run.family, run.pins, run.streams.archs
        )
        run.usage.update(parts_used([largest, *students]))
    else:
        run.usage.update(parts_used(run.family))
    inputs, targets = run.streams.batches.next()
    inputs, targets = inputs.to(device), targets.to(device)  # (B, T)
    run.optimizer.zero_grad(set_to_none=True)
    if config.sandwich:
        losses = sandwich_step(
            run.net,
            inputs,
            targets,
            largest,
            students,
            config.distill_weight,
            config.early_exit_weight,
            device,
        )
    else:
        losses = family_step(run.net, inputs, targets, run.family, config.early_exit_weight, device)
    grad_norm = torch.nn.utils.clip_grad_norm_(run.params, config.grad_clip)
    run.optimizer.step()
    run.step += 1
    return lr, losses, float(grad_norm)


def _finish(
    run: Run, manifest: dict[str, Any], val: dict[str, float], started: float
) -> TrainResult:
    """Record in the manifest how the run ended (complete or stopped) and report it."""
    config = run.config
    if run.step == config.steps and not val:
        # Resumed exactly at the end: report the last validation the run recorded.
        evals = [r for r in run.metrics.read() if r.get("kind") == "eval"]
        val = (
            evals[-1]["val_loss"]
            if evals
            else evaluate(run.net, run.refs, run.val_batches, run.device)
        )
    if run.step == config.steps:
        manifest.update(status="complete", step=run.step, final_val_loss=val, usage=dict(run.usage))
    else:
        manifest.update(status="stopped", step=run.step)
    atomic_write_json(run.run_dir / MANIFEST_FILE, manifest)
    return TrainResult(
        run_dir=run.run_dir,
        checkpoint=run.ckpt_file,
        step=run.step,
        tokens=run.step * run.tokens_per_step,
        val_loss=val,
        seconds=time.perf_counter() - started,
    )


def _train_losses(losses: dict[str, float]) -> dict[str, Any]:
    """A step's losses as its metrics record names them: loss_largest and loss_smallest of
    a sandwich step, loss_family (one per family arch, in order) of a family-only step."""
    if "largest" in losses:
        return {"loss_largest": losses["largest"], "loss_smallest": losses["smallest"]}
    family = sorted((k for k in losses if k.startswith("family")), key=lambda k: int(k[6:]))
    return {"loss_family": [losses[k] for k in family]}


def _postfix(tokens_per_s: float, losses: dict[str, float], val: dict[str, float]) -> str:
    """The progress bar's summary of a step: throughput, train losses, last validation."""
    if "largest" in losses:
        text = f"L={losses['largest']:.3f} S={losses['smallest']:.3f}"
        text += f" val(L)={val['largest']:.3f}" if val else ""
    else:  # a family-only step: its first arch
        text = f"F0={losses['family0']:.3f}" + (f" val(F0)={val['family0']:.3f}" if val else "")
    return f"tok/s={tokens_per_s:,.0f} {text}"


def _check_corpus(space: SearchSpace, corpus: Corpus, config: TrainConfig) -> None:
    if corpus.vocab_size > space.vocab_size:
        raise DataError(
            f"{corpus.info.get('source')}: token ids reach {corpus.vocab_size - 1}, beyond the "
            f"space's vocab_size {space.vocab_size}"
        )
    if config.seq_len > space.max_seq_len:
        raise NasError(
            f"seq_len {config.seq_len} exceeds the space's max_seq_len {space.max_seq_len}"
        )
    check_length(corpus.train, config.seq_len, "train")
    check_length(corpus.val, config.seq_len, "validation")


def _check_finite(losses: dict[str, float], step: int, lr: float) -> None:
    """Raise `NonFiniteLossError` (one line: the step, the losses, the fix) when a loss of
    step `step` is NaN or infinite; `lr` is the run's peak learning rate."""
    bad = {k: v for k, v in losses.items() if not math.isfinite(v)}
    if bad:
        raise NonFiniteLossError(
            f"training diverged: non-finite loss at step {step} ({bad}); lower the peak "
            f"learning rate (--lr, now {lr:g}) and train again into a new --out"
        )


@contextlib.contextmanager
def _progress_bar(total: int, initial: int, enabled: bool) -> Iterator[Any]:
    from tqdm import tqdm

    bar = tqdm(
        total=total,
        initial=initial,
        unit="step",
        desc="train",
        disable=not enabled,
        file=sys.stderr,
        dynamic_ncols=True,
    )
    try:
        yield bar
    finally:
        bar.close()
