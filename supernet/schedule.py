"""The optimizer of a training run and its learning-rate schedule.

AdamW with decay on weight matrices only, and a linear warmup followed by a cosine decay
to `lr * min_lr_ratio` at the last step. Both read only the run's `TrainConfig`, so a
resumed or branched run follows the same schedule step for step.
"""

from __future__ import annotations

import math

import torch

from .train_config import TrainConfig


def lr_at(step: int, config: TrainConfig) -> float:
    """Learning rate for optimizer step `step` (0-based): linear warmup, then cosine decay."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    span = max(1, config.steps - config.warmup_steps - 1)
    progress = min(1.0, (step - config.warmup_steps) / span)
    floor = config.lr * config.min_lr_ratio
    return floor + (config.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_optimizer(net: torch.nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW with decay on weight matrices only (not norms, biases, per-head scalars).

    The fused implementation updates each tensor in one pass: a supernet step updates
    max-size tensors (zero gradient outside the sampled prefix), so the optimizer's
    memory traffic is much of what a subnet's step costs beyond its static model's.
    """
    decay, no_decay = [], []
    for name, param in net.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        is_bias = leaf.startswith("b_") or leaf in ("bias", "b1", "b2")
        (decay if param.dim() >= 2 and not is_bias else no_decay).append(param)
    return torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": config.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=config.lr,
        betas=(config.beta1, config.beta2),
        fused=all(p.device.type in ("cpu", "cuda") for p in net.parameters()),
    )
