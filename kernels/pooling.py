"""PoolFormer token mixer: average pooling along time minus the identity.

    y_t = mean(x_s for s in window(t)) - x_t

The mean covers only real tokens (padding excluded, i.e. count_include_pad=False), so the
first tokens of a causal window, or both ends of a centred one, average fewer tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _pool_padding(pool_size: int, causal: bool) -> tuple[int, int]:
    """Tokens (left, right) of the window around t: causal [t-k+1, t]; centred, extra left."""
    if causal:
        return pool_size - 1, 0
    left = pool_size // 2
    return left, pool_size - 1 - left


def pool_mixer(x: Tensor, pool_size: int, causal: bool) -> Tensor:
    """Average-pool minus identity along T.

    Args:
        x: tokens, (B, T, C).
        pool_size: window length k in tokens, >= 1. Causal: x[max(0, t-k+1) .. t].
            Bidirectional: x[t - k//2 .. t + (k-1) - k//2], clipped to the sequence.
        causal: selects the window above.

    Returns:
        (B, T, C).

    Raises:
        ValueError: if pool_size < 1.
    """
    if pool_size < 1:
        raise ValueError(f"pool_size must be >= 1, got {pool_size}")
    _, seq_len, channels = x.shape
    left, right = _pool_padding(pool_size, causal)
    xt = F.pad(x.transpose(1, 2), (left, right))  # (B, C, T + k - 1), zero padded
    # Window sums as a depthwise convolution with a ones filter: several times faster
    # on CPU than avg_pool1d, and fvcore counts it (k MACs per output = the k adds).
    ones = torch.ones(channels, 1, pool_size, dtype=x.dtype, device=x.device)  # (C, 1, k)
    sums = F.conv1d(xt, ones, groups=channels)  # (B, C, T)
    # Zero padding adds nothing to the sums; dividing by the count of real tokens in
    # each window instead of k gives count_include_pad=False for any padding.
    t = torch.arange(seq_len, device=x.device)  # (T,)
    count = (t + right).clamp(max=seq_len - 1) - (t - left).clamp(min=0) + 1  # (T,)
    mean = sums / count.to(x.dtype)  # (B, C, T)
    return mean.transpose(1, 2) - x  # (B, T, C)


def pool_flops(batch: int, seq_len: int, d_model: int, pool_size: int) -> int:
    """Adds of `pool_mixer`: k per output element (one add = one FLOP, as for MACs)."""
    return batch * seq_len * d_model * pool_size


__all__ = ["pool_flops", "pool_mixer"]
