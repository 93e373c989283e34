"""Functional token mixers and the FFN, each taking its weights as arguments.

Every mixer maps tokens (B, T, C) to (B, T, C) and has a `causal` flag; every module has
an analytic multiply-accumulate count (`*_flops`) that matches what fvcore counts with the
handles of `nas.search.flops`. This layer imports only torch.
"""

from __future__ import annotations

from .attention import (
    attention_projection_flops,
    num_heads,
    output_projection,
    qkv_projection,
    sdpa_flops,
    softmax_attention,
    softmax_attention_flops,
)
from .conv import depthwise_conv_flops, depthwise_conv_mixer
from .ffn import ffn, ffn_flops
from .glu import glu_flops, glu_mixer, token_shift
from .linear_attention import (
    feature_map,
    linear_attention,
    linear_attention_core,
    linear_attention_core_flops,
    linear_attention_flops,
)
from .pooling import pool_flops, pool_mixer
from .sliding_window import (
    sliding_window_attention,
    sliding_window_core,
    sliding_window_core_flops,
    sliding_window_flops,
)
from .ssm import (
    selective_scan,
    selective_scan_core_flops,
    selective_scan_flops,
    selective_scan_mixer,
)

__all__ = [
    "attention_projection_flops",
    "depthwise_conv_flops",
    "depthwise_conv_mixer",
    "feature_map",
    "ffn",
    "ffn_flops",
    "glu_flops",
    "glu_mixer",
    "linear_attention",
    "linear_attention_core",
    "linear_attention_core_flops",
    "linear_attention_flops",
    "num_heads",
    "output_projection",
    "pool_flops",
    "pool_mixer",
    "qkv_projection",
    "sdpa_flops",
    "selective_scan",
    "selective_scan_core_flops",
    "selective_scan_flops",
    "selective_scan_mixer",
    "sliding_window_attention",
    "sliding_window_core",
    "sliding_window_core_flops",
    "sliding_window_flops",
    "softmax_attention",
    "softmax_attention_flops",
    "token_shift",
]
