"""Position-wise feed-forward block: linear, exact GELU, linear."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def ffn(x: Tensor, w1: Tensor, b1: Tensor | None, w2: Tensor, b2: Tensor | None) -> Tensor:
    """Two-layer MLP applied to every token.

    Args:
        x: tokens, (B, T, C).
        w1: (hidden, C); b1: (hidden,) or None.
        w2: (C, hidden); b2: (C,) or None.

    Returns:
        (B, T, C).
    """
    h = F.gelu(F.linear(x, w1, b1))  # (B, T, hidden); exact erf GELU
    return F.linear(h, w2, b2)  # (B, T, C)


def ffn_flops(batch: int, seq_len: int, d_model: int, hidden: int) -> int:
    """Multiply-accumulates of `ffn`: 2 * B * T * C * hidden."""
    return 2 * batch * seq_len * d_model * hidden


__all__ = ["ffn", "ffn_flops"]
