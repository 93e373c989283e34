"""Registry of token mixers: the weights each one owns and the kernel call that runs it.

Each entry names its parameters with symbolic dims (see params.py) and one `run`
function that calls the single kernel implementation in nas.kernels. The supernet calls
`run` with prefix slices of its max-size weights; an extracted model calls the same
`run` with its own fixed-size weights, which is why the two agree exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from nas.core.errors import ArchError
from nas.kernels import (
    depthwise_conv_flops,
    depthwise_conv_mixer,
    glu_flops,
    glu_mixer,
    linear_attention,
    linear_attention_flops,
    pool_flops,
    pool_mixer,
    selective_scan_flops,
    selective_scan_mixer,
    sliding_window_attention,
    sliding_window_flops,
    softmax_attention,
    softmax_attention_flops,
)
from nas.search_space import LayerArch

from .config import NetConstants
from .params import ParamSpec

Tensor = torch.Tensor
RunFn = Callable[[Tensor, dict[str, Tensor], LayerArch, NetConstants], Tensor]
# (batch, seq_len, d_model, layer, constants) -> multiply-adds of one call, as fvcore counts
FlopsFn = Callable[[int, int, int, LayerArch, NetConstants], int]


@dataclass(frozen=True)
class MixerSpec:
    params: tuple[ParamSpec, ...]  # weights at symbolic sizes; empty for weightless mixers
    run: RunFn  # (x (B, T, d), weights, layer, config) -> (B, T, d)
    flops: FlopsFn  # analytic multiply-add count of `run`


_QKV_PARAMS = (
    ParamSpec("w_qkv", ("E", "d"), pack=3),
    ParamSpec("b_qkv", ("E",), init="zeros", pack=3),
    ParamSpec("w_out", ("d", "E")),
    ParamSpec("b_out", ("d",), init="zeros"),
)


def _run_attention(x, p, layer, cfg):
    return softmax_attention(
        x, p["w_qkv"], p["b_qkv"], p["w_out"], p["b_out"], cfg.head_dim, cfg.causal
    )


def _run_sliding_window(x, p, layer, cfg):
    return sliding_window_attention(
        x, p["w_qkv"], p["b_qkv"], p["w_out"], p["b_out"], cfg.head_dim, layer.window, cfg.causal
    )


def _run_linear_attention(x, p, layer, cfg):
    return linear_attention(
        x, p["w_qkv"], p["b_qkv"], p["w_out"], p["b_out"], cfg.head_dim, cfg.causal, cfg.chunk_size
    )


def _run_pool(x, p, layer, cfg):
    return pool_mixer(x, cfg.pool_size, cfg.causal)


def _run_conv(x, p, layer, cfg):
    return depthwise_conv_mixer(x, p["weight"], p["bias"], cfg.causal)


def _run_glu(x, p, layer, cfg):
    return glu_mixer(x, p["w_in"], p["b_in"], p["w_out"], p["b_out"], cfg.causal)


def _run_ssm(x, p, layer, cfg):
    return selective_scan_mixer(
        x,
        p["w_xz"],
        p["w_bc"],
        p["w_dt"],
        p["dt_bias"],
        p["a_log"],
        p["d_skip"],
        p["w_out"],
        cfg.head_dim,
        cfg.causal,
        cfg.chunk_size,
    )


def _run_skip(x, p, layer, cfg):
    return x  # never called: a skip layer adds no mixer branch (see network.run_block)


MIXER_SPECS: dict[str, MixerSpec] = {
    "attention": MixerSpec(
        _QKV_PARAMS,
        _run_attention,
        lambda b, t, d, layer, c: softmax_attention_flops(b, t, d, layer.heads, c.head_dim),
    ),
    "sliding_window": MixerSpec(
        _QKV_PARAMS,
        _run_sliding_window,
        lambda b, t, d, layer, c: sliding_window_flops(
            b, t, d, layer.heads, c.head_dim, layer.window, c.causal
        ),
    ),
    "linear_attention": MixerSpec(
        _QKV_PARAMS,
        _run_linear_attention,
        lambda b, t, d, layer, c: linear_attention_flops(
            b, t, d, layer.heads, c.head_dim, c.causal, c.chunk_size
        ),
    ),
    "pool": MixerSpec((), _run_pool, lambda b, t, d, layer, c: pool_flops(b, t, d, c.pool_size)),
    "conv": MixerSpec(
        (ParamSpec("weight", ("d", "K")), ParamSpec("bias", ("d",), init="zeros")),
        _run_conv,
        lambda b, t, d, layer, c: depthwise_conv_flops(b, t, d, c.conv_kernel),
    ),
    "glu": MixerSpec(
        (
            ParamSpec("w_in", ("E", "d"), pack=2),
            ParamSpec("b_in", ("E",), init="zeros", pack=2),
            ParamSpec("w_out", ("d", "E")),
            ParamSpec("b_out", ("d",), init="zeros"),
        ),
        _run_glu,
        lambda b, t, d, layer, c: glu_flops(b, t, d, layer.heads * c.head_dim),
    ),
    "ssm": MixerSpec(
        (
            ParamSpec("w_xz", ("E", "d"), pack=2),
            ParamSpec("w_bc", ("N", "d"), pack=2),
            ParamSpec("w_dt", ("H", "d")),
            ParamSpec("dt_bias", ("H",), init="dt_bias"),
            ParamSpec("a_log", ("H",), init="a_log"),
            ParamSpec("d_skip", ("H",), init="ones"),
            ParamSpec("w_out", ("d", "E")),
        ),
        _run_ssm,
        lambda b, t, d, layer, c: selective_scan_flops(
            b, t, d, layer.heads, c.head_dim, c.ssm_state, c.causal, c.chunk_size
        ),
    ),
    "skip": MixerSpec((), _run_skip, lambda b, t, d, layer, c: 0),
}


def mixer_spec(name: str) -> MixerSpec:
    """The registry entry for `name`; an unknown name lists the valid ones."""
    try:
        return MIXER_SPECS[name]
    except KeyError:
        raise ArchError(f"unknown mixer '{name}'; valid mixers are {list(MIXER_SPECS)}") from None
