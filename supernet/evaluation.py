"""Validation during training: the fixed reference archs, and their loss on fixed batches.

The reference archs depend only on the space (and a few-shot run's pins), never on the
run's seed, so the validation losses of any two runs over a space compare arch for arch.
"""

from __future__ import annotations

import numpy as np
import torch

from nas.search_space import Arch, SearchSpace

from .arch_sampling import pinned_extremes, with_pins
from .device import autocast
from .sandwich import cross_entropy
from .supernet import Supernet

Tensor = torch.Tensor

REFERENCE_SEED = 20240601  # reference archs are the same for every run over a space


@torch.no_grad()
def evaluate(
    net: Supernet,
    archs: dict[str, Arch],
    batches: list[tuple[Tensor, Tensor]],
    device: torch.device,
) -> dict[str, float]:
    """Mean validation cross-entropy (nats/token) of each named arch over fixed batches."""
    was_training = net.training
    net.eval()
    out = {}
    try:
        for name, arch in archs.items():
            total, count = 0.0, 0
            for inputs, targets in batches:
                inputs, targets = inputs.to(device), targets.to(device)
                with autocast(device):
                    logits = net(inputs, arch)  # (B, T, V)
                total += cross_entropy(logits, targets).item() * targets.numel()
                count += targets.numel()
            out[name] = total / count
    finally:
        net.train(was_training)
    return out


def reference_archs(
    space: SearchSpace, n: int, pins: dict[int, str] | None = None
) -> dict[str, Arch]:
    """The fixed archs validated during training: largest, smallest, and `n` sampled ones.

    With `pins`, each has the pinned mixers: a sub-supernet of a few-shot split is only
    trained, and so only validated, on archs with them."""
    pins = pins or {}
    largest, smallest = pinned_extremes(space, pins)
    refs = {"largest": largest, "smallest": smallest}
    rng = np.random.default_rng([REFERENCE_SEED, 1])
    for i, arch in enumerate(space.sample_many(n, seed=REFERENCE_SEED)):
        refs[f"ref{i}"] = with_pins(space, arch, pins, rng)
    return refs
