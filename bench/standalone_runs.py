"""Standalone training for bench_weight_sharing.py: an arch trained alone from scratch, its
record kept as JSON and reused, in this process or in a pool of worker processes.

An arch starts from the prefix of a freshly seeded default supernet and trains on the
same batch stream as the supernet run of that seed, with the supernet's optimizer and a
cosine schedule over its own steps. On CUDA it trains and validates under bf16 autocast,
as `nas train` does; its records are then kept apart from the CPU's (fp32) ones.
"""

from __future__ import annotations

import json
import os
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import replace
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch

import nas
from nas import Arch, LayerArch
from nas.core.atomic import atomic_write_json
from nas.supernet.batches import BatchSampler
from nas.supernet.corpus import load_corpus
from nas.supernet.device import autocast
from nas.supernet.sandwich import cross_entropy
from nas.supernet.static import StaticBlock
from nas.supernet.training import TrainConfig, lr_at, make_optimizer

STANDALONE_FIELDS = (
    "steps",
    "batch_size",
    "seq_len",
    "lr",
    "min_lr_ratio",
    "warmup_steps",
    "weight_decay",
    "beta1",
    "beta2",
    "grad_clip",
    "seed",
)


def _standalone_key(config: dict) -> dict:
    # Standalone training ignores the supernet-only settings (k, distillation, exits,
    # evaluation cadence), so results are reused across supernet variants.
    return {k: config.get(k) for k in STANDALONE_FIELDS}


def train_standalone(
    space: nas.SearchSpace,
    arch: Arch,
    corpus,
    config: TrainConfig,
    val_batches: list,
    device: torch.device,
) -> dict:
    """Train `arch` alone on the supernet run's batch stream; return its validation loss."""
    model = nas.Supernet(space, seed=config.seed).extract(arch).to(device).train()
    optimizer = make_optimizer(model, config)
    # Same seed stream as the trainer's batch sampler: the very same batches, in order.
    sampler = BatchSampler(
        corpus.train, config.batch_size, config.seq_len, np.random.default_rng([config.seed, 2])
    )
    start = time.perf_counter()
    for step in range(config.steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, config)
        train_step(model, optimizer, sampler, config.grad_clip, device)
    seconds = time.perf_counter() - start
    loss = static_loss(model, val_batches, device)
    ablation = mixer_removal(model, loss, val_batches, device)
    return {"val_loss": loss, "seconds": seconds, "steps": config.steps, "ablation": ablation}


def train_step(
    model: nas.StaticModel,
    optimizer: torch.optim.Optimizer,
    sampler: BatchSampler,
    clip: float,
    device: torch.device,
) -> None:
    """One next-token training step of a static model on the sampler's next batch."""
    inputs, targets = (t.to(device) for t in sampler.next())  # (B, T)
    optimizer.zero_grad(set_to_none=True)
    with autocast(device):
        loss = cross_entropy(model(inputs), targets)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    optimizer.step()


@torch.no_grad()
def static_loss(model: nas.StaticModel, batches: list, device: torch.device) -> float:
    """Mean next-token loss of `model` over `batches` (nats/token)."""
    model.eval()
    total = 0.0
    for x, y in batches:
        with autocast(device):
            total += cross_entropy(model(x.to(device)), y.to(device)).item() * y.numel()
    return total / sum(y.numel() for _, y in batches)


def mixer_removal(
    model: nas.StaticModel, loss: float, batches: list, device: torch.device
) -> list[float | None]:
    """Per layer, the relative change of `model`'s loss (`loss` as it is) when that
    layer's mixer is made a skip, its FFN kept; None for a skip layer."""
    return [
        None
        if block.layer.mixer == "skip"
        else static_loss(_without_mixer(model, i), batches, device) / loss - 1
        for i, block in enumerate(model.blocks)
    ]


def _without_mixer(model: nas.StaticModel, i: int) -> nas.StaticModel:
    """`model` with layer i's mixer made a skip (its FFN kept); shares the weights."""
    arch = skipped(model.arch, i)
    blocks = list(model.blocks)
    block = blocks[i]
    blocks[i] = StaticBlock(arch.layers[i], None, None, block.norm_ffn, block.ffn)
    return nas.StaticModel(arch, model.consts, model.embedding, blocks, model.exit_head)


def skipped(arch: Arch, i: int) -> Arch:
    """`arch` with layer i's mixer made a skip, its FFN kept."""
    layers = list(arch.layers)
    layers[i] = LayerArch("skip", ffn=layers[i].ffn)
    return Arch(arch.d_model, tuple(layers))


def standalone(
    space: nas.SearchSpace,
    arch: Arch,
    name: str,
    corpus,
    config: TrainConfig,
    steps: int,
    val_batches: list,
    folder: Path,
    context: dict,
    device: torch.device,
) -> dict:
    """The record of `arch` trained alone for `steps` steps (kept in `folder`, reused where
    its arch, training config and `context` match): "val_loss", and "ablation" (per
    layer, how much the loss rises when that layer's mixer is made a skip)."""
    # A short run keeps the supernet's schedule shape: warmup at most a quarter of it.
    run = replace(config, steps=steps, warmup_steps=min(config.warmup_steps, max(1, steps // 4)))
    record = folder / f"{name}-{steps}-lr{config.lr:g}.json"
    if record.is_file():
        saved = json.loads(record.read_text())
        if (
            _standalone_key(saved.get("config", {})) == _standalone_key(run.to_dict())
            and saved.get("arch") == arch.to_dict()
            and saved.get("context") == context
        ):
            return saved
    print(
        f"standalone: {name} ({space.param_count(arch) / 1e6:.2f}M params), {steps} steps, "
        f"lr {config.lr:g}",
        flush=True,
    )
    result = train_standalone(space, arch, corpus, run, val_batches, device)
    result.update(config=run.to_dict(), arch=arch.to_dict(), context=context)
    atomic_write_json(record, result)
    return result


def lr_past_edge(losses: dict[float, float], grid: list[float], extend: int) -> float | None:
    """The next peak lr to try for one arch, given the validation loss at each lr tried.

    A best lr at the edge of the tried ones says nothing about the lrs beyond it, so the
    baseline would not be tuned for itself: try half the lowest lr where that one did
    best, or double the highest where that one did, at most `extend` such steps past
    either edge of `grid`. None once the best lr has a tried lr on each side (or the
    limit is reached), and for a single lr, which is no grid to tune on.
    """
    if len(losses) < 2 or extend < 1:
        return None
    tried = sorted(losses)
    best = min(tried, key=losses.__getitem__)
    # A relative margin: halving and doubling floats need not land on grid[0] / 2**extend.
    if best == tried[0] and best / 2 >= grid[0] / 2**extend * (1 - 1e-9):
        return best / 2
    if best == tried[-1] and best * 2 <= grid[-1] * 2**extend * (1 + 1e-9):
        return best * 2
    return None


# What every standalone job of a run shares; set once per process by `_setup`.
_SHARED: dict = {}


def _exit_with_parent(parent: int) -> None:
    """End this worker process as soon as the bench that started it (pid `parent`) is gone.

    A pool's workers outlive a bench killed by a signal; left behind, they would go on
    training unseen and take the CPU from whatever runs next. The pid comes from the bench
    itself: a worker whose bench died while it started up is already an orphan here.
    """

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _setup(space, data, dtype, val_batches, context, device, threads, parent=None) -> None:
    if parent is not None:  # a worker process of the pool
        _exit_with_parent(parent)
        torch.set_num_threads(threads)
    corpus = load_corpus(data, dtype=dtype)  # memory-mapped: each worker maps its own
    _SHARED.update(space=space, corpus=corpus, val=val_batches, context=context, device=device)


def _job(name: str, arch: Arch, config: TrainConfig, steps: int, folder: Path) -> dict:
    s = _SHARED
    return standalone(
        s["space"],
        arch,
        name,
        s["corpus"],
        config,
        steps,
        s["val"],
        folder,
        s["context"],
        s["device"],
    )


class StandaloneRunner:
    """Trains archs alone: in this process one after another (`jobs` 1), or in `jobs`
    worker processes at once, each with its share of the CPU threads (on one GPU, the
    workers share it: small models leave most of it idle)."""

    def __init__(
        self,
        jobs: int,
        space: nas.SearchSpace,
        data: str | None,
        dtype: str | None,
        val_batches: list,
        context: dict,
        device: torch.device,
    ):
        setup = (space, data, dtype, val_batches, context, device)
        self.pool = None
        if jobs > 1:
            threads = max(1, torch.get_num_threads() // jobs)
            self.pool = ProcessPoolExecutor(
                jobs,
                mp_context=get_context("spawn"),
                initializer=_setup,
                initargs=(*setup, threads, os.getpid()),
            )
        else:
            _setup(*setup, 0)

    def submit(
        self, name: str, arch: Arch, config: TrainConfig, steps: int, folder: Path
    ) -> Future:
        """The record of `standalone` for these settings, as a future."""
        if self.pool is not None:
            return self.pool.submit(_job, name, arch, config, steps, folder)
        done: Future = Future()
        done.set_result(_job(name, arch, config, steps, folder))
        return done

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()
