"""Few-shot supernets (Zhao et al. 2021) for bench_weight_sharing.py --few-shot LAYER.

One-shot weight sharing makes every arch's weights also serve every other mixer
combination. A few-shot supernet splits the space on one layer's mixer: after a one-shot
phase, one sub-supernet per mixer of that layer continues from the one-shot weights
(`nas train`'s trainer with `pinned_mixers`), training only the archs with that mixer
there; an arch is then read from the sub-supernet of its own mixer.

With --steps S and --few-shot-split-at S1, the one-shot phase runs S1 steps and each
sub-supernet S - S1 more, so every arch's weights see as many batches as in the S-step
one-shot run (the whole budget of standalone@all); the split costs (k - 1) (S - S1)
extra supernet steps for k mixers. S1 = 0 trains the sub-supernets from scratch.
"""

from __future__ import annotations

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
    layer: int,
    split_at: int,
    out: Path,
    device: torch.device,
) -> dict[str, Path]:
    """Train (or resume) the one-shot phase and one sub-supernet per mixer of `layer`
    under `out`/splitS1 (a split at another step trains other runs); return {mixer:
    the sub-supernet's run folder}."""
    out = out / f"split{split_at}"
    start = ""
    if split_at > 0:
        one_shot = out / "one_shot"
        print(f"few-shot: one-shot phase, {split_at} steps; {one_shot}", flush=True)
        train(space, corpus, _phase(config, split_at), one_shot, resume=True, device=device)
        start = str(one_shot)
    runs = {}
    for mixer in space.mixers:
        pin = usage_key(layer, mixer)
        runs[mixer] = out / f"layer{layer}_{mixer}"
        sub = replace(
            _phase(config, config.steps - split_at), pinned_mixers=(pin,), init_from=start
        )
        print(
            f"few-shot: sub-supernet {pin}, {sub.steps} steps"
            + (f" from the one-shot phase; {runs[mixer]}" if start else f"; {runs[mixer]}"),
            flush=True,
        )
        train(space, corpus, sub, runs[mixer], resume=True, device=device)
    return runs


def _phase(config: TrainConfig, steps: int) -> TrainConfig:
    """`config` for a run of `steps` steps, validated and checkpointed as the bench's own."""
    return replace(
        config, steps=steps, eval_every=max(1, steps // 4), checkpoint_every=max(1, steps // 8)
    )
