"""Numerical guards shared by the kernels."""

from __future__ import annotations

import torch
from torch import Tensor

# Floor for exp's argument. exp(-80) ~ 2e-35 is zero for every purpose of these kernels,
# while float32 exp of arguments below about -87 underflows into a CPU slow path that is
# about 100x slower, and real inputs (a decay dt * A summed over a chunk, a large negative
# query) reach it easily.
MIN_EXP_ARG = -80.0


def floored_exp(u: Tensor, ceiling: float | None = None) -> Tensor:
    """exp(clamp(u, MIN_EXP_ARG, ceiling)), elementwise."""
    return torch.exp(u.clamp(min=MIN_EXP_ARG, max=ceiling))


__all__ = ["MIN_EXP_ARG", "floored_exp"]
