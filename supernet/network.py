"""The forward pass, written once for the supernet and for every extracted model.

Both callers hand in weight dicts (prefix slices from the supernet, or an extracted
model's own parameters); the arithmetic below is identical, so extraction is exact by
construction.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from nas.kernels import ffn

from .config import NetConstants
from .mixers import mixer_spec
from .params import ParamSpec

Tensor = torch.Tensor
Weights = dict[str, Tensor]

EMBED_PARAMS = (ParamSpec("tok", ("V", "d")), ParamSpec("pos", ("T", "d")))
NORM_PARAMS = (ParamSpec("weight", ("d",), init="ones"), ParamSpec("bias", ("d",), init="zeros"))
FFN_PARAMS = (
    ParamSpec("w1", ("F", "d")),
    ParamSpec("b1", ("F",), init="zeros"),
    ParamSpec("w2", ("d", "F")),
    ParamSpec("b2", ("d",), init="zeros"),
)
EXIT_PARAMS = (
    ParamSpec("norm_weight", ("d",), init="ones"),
    ParamSpec("norm_bias", ("d",), init="zeros"),
    ParamSpec("w_out", ("V", "d")),
    ParamSpec("b_out", ("V",), init="zeros"),
)

LN_EPS = 1e-5


def embed(tokens: Tensor, p: Weights) -> Tensor:
    """(B, T) int tokens -> (B, T, d) token plus learned position embeddings."""
    seq_len = tokens.shape[1]
    return F.embedding(tokens, p["tok"]) + p["pos"][:seq_len]  # (B, T, d)


def layer_norm(x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    return F.layer_norm(x, (x.shape[-1],), weight, bias, LN_EPS)


def run_block(
    x: Tensor,
    mixer: str,
    layer,
    norm_mix: Weights | None,
    mix: Weights,
    norm_ffn: Weights | None,
    ffn_w: Weights | None,
    cfg: NetConstants,
) -> Tensor:
    """One pre-norm residual layer: x + mixer(LN(x)), then x + FFN(LN(x)).

    A skip mixer adds no branch; an FFN width of 0 adds no FFN branch. x: (B, T, d).
    """
    if mixer != "skip":
        h = layer_norm(x, norm_mix["weight"], norm_mix["bias"])
        x = x + mixer_spec(mixer).run(h, mix, layer, cfg)  # (B, T, d)
    if ffn_w is not None:
        h = layer_norm(x, norm_ffn["weight"], norm_ffn["bias"])
        x = x + ffn(h, ffn_w["w1"], ffn_w["b1"], ffn_w["w2"], ffn_w["b2"])  # (B, T, d)
    return x


def read_exit(x: Tensor, p: Weights) -> Tensor:
    """(B, T, d) hidden states -> (B, T, V) logits through one exit head."""
    h = layer_norm(x, p["norm_weight"], p["norm_bias"])
    return F.linear(h, p["w_out"], p["b_out"])
