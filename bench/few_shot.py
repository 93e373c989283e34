"""Few-shot supernets (Zhao et al. 2021) for bench_weight_sharing.py --few-shot LAYERS.

One-shot weight sharing makes every arch's weights also serve every other mixer
combination. A few-shot supernet splits the space on some layers' mixers: after a
one-shot phase, one sub-supernet per combination of their mixers continues from the
one-shot weights (`nas train`'s trainer with `pinned_mixers`), training only the archs
with those mixers there; an arch is then read from the sub-supernet of its own.

With --steps S and --few-shot-split-at S1, the one-shot phase runs S1 steps and each
sub-supernet S - S1 more, so every arch's weights see as many batches as in the S-step
one-shot run (the whole budget of standalone@all); the split costs (k - 1) (S - S1)
extra supernet steps for k combinations. S1 = 0 trains the sub-supernets from scratch.

With `branch`, the one-shot phase is the first S1 steps of an S-step run, and each
sub-supernet branches it (`TrainConfig.branch_from`): optimizer state, warmup and cosine
continue from step S1, as in one run per arch. Without it, the one-shot phase is an
S1-step run of its own schedule, and each sub-supernet starts a new one from its weights
(`init_from`): two warmups and two cosine decays.
"""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path

import torch

import nas
from nas.supernet.corpus import Corpus
from nas.supernet.training import TrainConfig, train, usage_key


def train_few_shot(
    space: nas.SearchSpace,
    corpus: Corpus,
    config: TrainConfig,
    layers: tuple[int, ...],
    split_at: int,
    out: Path,
    device: torch.device,
    branch: bool = False,
    lr: float | None = None,
) -> dict[tuple[str, ...], Path]:
    """Train (or resume) the one-shot phase and one sub-supernet per combination of the
    mixers of `layers` under `out`/splitS1 (`out`/splitS1-branched with `branch`; a split
    at another step trains other runs); return {its mixers, one per layer of `layers`:
    the sub-supernet's run folder}. `lr` is the sub-supernets' peak lr (default: the
    one-shot phase's); not with `branch`, which keeps the source's schedule."""
    if branch and lr is not None:
        raise ValueError("a branch keeps its source's lr")
    branch = branch and split_at > 0
    out = out / f"split{split_at}{'-branched' if branch else ''}"
    start = ""
    if split_at > 0:
        one_shot = out / "one_shot"
        print(f"few-shot: one-shot phase, {split_at} steps; {one_shot}", flush=True)
        phase = _phase(config, config.steps if branch else split_at)
        train(space, corpus, phase, one_shot, resume=True, device=device, stop_after=split_at)
        start = str(one_shot)
    runs = {}
    for mixers in itertools.product(space.mixers, repeat=len(layers)):
        chosen = list(zip(layers, mixers, strict=True))
        pins = tuple(usage_key(i, m) for i, m in chosen)
        name = "-".join(f"layer{i}_{m}" for i, m in chosen)
        run = runs[mixers] = out / (name if lr is None else f"{name}-lr{lr:g}")
        if branch:
            sub = replace(_phase(config, config.steps), pinned_mixers=pins, branch_from=start)
        else:
            sub = replace(
                _phase(config, config.steps - split_at),
                pinned_mixers=pins,
                init_from=start,
                lr=config.lr if lr is None else lr,
            )
        print(
            f"few-shot: sub-supernet {' '.join(pins)}, {config.steps - split_at} steps"
            + (f" from the one-shot phase; {run}" if start else f"; {run}"),
            flush=True,
        )
        train(space, corpus, sub, run, resume=True, device=device)
    return runs


def _phase(config: TrainConfig, steps: int) -> TrainConfig:
    """`config` for a run of `steps` steps, validated and checkpointed as the bench's own."""
    return replace(
        config, steps=steps, eval_every=max(1, steps // 4), checkpoint_every=max(1, steps // 8)
    )
