"""Depthwise convolution along time as a token mixer (one filter per channel)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def depthwise_conv_mixer(x: Tensor, weight: Tensor, bias: Tensor | None, causal: bool) -> Tensor:
    """Depthwise 1-D convolution over T, output length T.

    Args:
        x: tokens, (B, T, C).
        weight: one filter per channel, (C, K); tap K-1 multiplies the newest token in
            causal mode (cross-correlation, as F.conv1d).
        bias: (C,) or None.
        causal: pad K-1 zeros on the left, so y_t sees x_{t-K+1..t}; otherwise pad
            (K-1)//2 on the left and the rest on the right.

    Returns:
        (B, T, C).

    Raises:
        ValueError: if weight is not (C, K) with C = x.shape[-1].
    """
    channels = x.shape[-1]
    if weight.dim() != 2 or weight.shape[0] != channels:
        raise ValueError(f"weight must be (C={channels}, K), got {tuple(weight.shape)}")
    taps = weight.shape[1]
    left = taps - 1 if causal else (taps - 1) // 2
    xt = F.pad(x.transpose(1, 2), (left, taps - 1 - left))  # (B, C, T + K - 1)
    y = F.conv1d(xt, weight.unsqueeze(1), bias, groups=channels)  # (B, C, T)
    return y.transpose(1, 2)  # (B, T, C)


def depthwise_conv_flops(batch: int, seq_len: int, d_model: int, kernel_size: int) -> int:
    """Multiply-accumulates of `depthwise_conv_mixer`: B * T * C * K."""
    return batch * seq_len * d_model * kernel_size


__all__ = ["depthwise_conv_flops", "depthwise_conv_mixer"]
