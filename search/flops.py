"""FLOP counting with fvcore, extended to every op our kernels emit.

Convention (fvcore's): one multiply-add is one FLOP. Matmul-like work is counted (linear,
matmul, bmm, einsum, convolution, both matmuls inside SDPA, the adds of pooling);
elementwise work, reductions and prefix sums are not. Each kernel in `nas.kernels` has an
analytic `*_flops` function that agrees with `count_flops` on that kernel alone.

fvcore traces the model with `torch.jit.trace`, so the count is for the shapes of the
example input, and the kernels avoid Python control flow on tensor values.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

with warnings.catch_warnings():
    # fvcore scripts a loss function at import time, which recent torch flags as deprecated.
    warnings.simplefilter("ignore", DeprecationWarning)
    from fvcore.nn import FlopCountAnalysis
    from fvcore.nn.jit_handles import get_shape

from nas.kernels import ffn_flops
from nas.search_space import Arch, SearchSpace
from nas.supernet import NetConstants, StaticModel, mixer_spec
from nas.supernet.static import FORMAT

__all__ = [
    "FLOP_HANDLES",
    "analytic_flops",
    "arch_flops",
    "count_flops",
    "count_flops_fn",
    "flop_analysis",
]


def _sdpa_flop_jit(inputs: list[Any], outputs: list[Any]) -> int:
    """aten::scaled_dot_product_attention: batch * Lq * Lk * (d + dv).

    q (..., Lq, d), k (..., Lk, d), v (..., Lk, dv); the batch dims broadcast. Masks and
    causality do not change the count (the dense product is what the convention counts).
    """
    q, k, v = (get_shape(u) for u in inputs[:3])
    batch = torch.broadcast_shapes(tuple(q[:-2]), tuple(k[:-2]), tuple(v[:-2]))
    return math.prod(batch) * q[-2] * k[-2] * (q[-1] + v[-1])


def _matmul_flop_jit(inputs: list[Any], outputs: list[Any]) -> int:
    """aten::matmul with numpy broadcasting: prod(batch) * n * k * m.

    fvcore's own handle takes the batch dims from the first operand only, which
    undercounts (B, 1, n, k) @ (B, H, k, m); this one broadcasts both.
    """
    a, b = (list(get_shape(u)) for u in inputs[:2])
    if len(a) == 1:
        a = [1, *a]
    if len(b) == 1:
        b = [*b, 1]
    batch = torch.broadcast_shapes(tuple(a[:-2]), tuple(b[:-2]))
    return math.prod(batch) * a[-2] * a[-1] * b[-1]


def _avg_pool_flop_jit(inputs: list[Any], outputs: list[Any]) -> int:
    """aten::avg_pool1d/2d/3d: one add per window element per output element."""
    kernel = inputs[1].toIValue()
    if kernel is None:  # traced as prim::ListConstruct of int constants
        kernel = [v.toIValue() for v in inputs[1].node().inputs()]
    out = get_shape(outputs[0])
    return math.prod(out) * math.prod(kernel)


# Handles added to (or replacing) fvcore's defaults.
FLOP_HANDLES: dict[str, Callable[[list[Any], list[Any]], int]] = {
    "aten::scaled_dot_product_attention": _sdpa_flop_jit,
    "aten::matmul": _matmul_flop_jit,
    "aten::avg_pool1d": _avg_pool_flop_jit,
    "aten::avg_pool2d": _avg_pool_flop_jit,
    "aten::avg_pool3d": _avg_pool_flop_jit,
}


def flop_analysis(model: nn.Module, inputs: tuple[Any, ...]) -> FlopCountAnalysis:
    """A fvcore analysis of `model(*inputs)` with our handles and without op warnings.

    Use it for per-module or per-operator breakdowns (`.by_module()`, `.by_operator()`).
    Elementwise ops have no handle on purpose; `.unsupported_ops()` lists them.
    """
    analysis = FlopCountAnalysis(model, inputs)
    for name, handle in FLOP_HANDLES.items():
        analysis.set_op_handle(name, handle)
    return analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)


def count_flops(model: nn.Module, tokens: Tensor) -> int:
    """Multiply-accumulates of one forward pass of `model(tokens)`.

    Args:
        model: any module whose forward takes one tensor.
        tokens: an example input; the count is for its shape.

    Returns:
        FLOPs (one multiply-add = one FLOP), as an int.
    """
    return int(flop_analysis(model, (tokens,)).total())


class _FunctionModule(nn.Module):
    """Wraps `fn(x, *args, **kwargs)` as a module; tensor arguments become parameters."""

    def __init__(self, fn: Callable[..., Tensor], args: tuple[Any, ...], kwargs: dict[str, Any]):
        super().__init__()
        self.fn = fn
        self.weights = nn.ParameterList()
        # Each argument is ("w", index into weights) for a tensor, or ("c", the constant).
        self.arg_spec = [self._register(a) for a in args]
        self.kwarg_spec = {key: self._register(a) for key, a in kwargs.items()}

    def _register(self, value: Any) -> tuple[str, Any]:
        if isinstance(value, Tensor):
            self.weights.append(nn.Parameter(value.detach(), requires_grad=False))
            return ("w", len(self.weights) - 1)
        return ("c", value)

    def _resolve(self, spec: tuple[str, Any]) -> Any:
        kind, value = spec
        return self.weights[value] if kind == "w" else value

    def forward(self, x: Tensor) -> Tensor:
        args = [self._resolve(s) for s in self.arg_spec]
        kwargs = {key: self._resolve(s) for key, s in self.kwarg_spec.items()}
        return self.fn(x, *args, **kwargs)


def count_flops_fn(fn: Callable[..., Tensor], x: Tensor, *args: Any, **kwargs: Any) -> int:
    """Multiply-accumulates of `fn(x, *args, **kwargs)` for a lone functional kernel.

    Tensor arguments (weights) are held as parameters of a small wrapper module, the
    others (None, ints, bools) are passed through unchanged.

    Example:
        count_flops_fn(softmax_attention, x, w_qkv, None, w_out, None, 16, True)
    """
    return count_flops(_FunctionModule(fn, args, kwargs), x)


# fvcore counts aten::layer_norm with affine weights as 5 FLOPs per input element.
_LAYER_NORM_FLOPS_PER_ELEMENT = 5


def analytic_flops(space: SearchSpace, arch: Arch, batch: int, seq_len: int) -> int:
    """Closed-form multiply-adds of the extracted model of `arch` on (batch, seq_len) tokens.

    The sum of the kernels' `*_flops` formulas, the LayerNorms (counted as fvcore counts
    them) and the exit head's unembedding. Embedding look-ups count zero. No model is
    built, so it is cheap enough for features and reports.
    """
    consts = NetConstants.from_space(space)
    tokens = batch * seq_len
    d = arch.d_model
    norm = _LAYER_NORM_FLOPS_PER_ELEMENT * tokens * d
    total = norm + tokens * d * space.vocab_size  # exit LayerNorm + unembedding
    for layer in arch.layers:
        if layer.mixer != "skip":
            total += norm + mixer_spec(layer.mixer).flops(batch, seq_len, d, layer, consts)
        if layer.ffn:
            total += norm + ffn_flops(batch, seq_len, d, layer.ffn)
    return total


def arch_flops(space: SearchSpace, arch: Arch, batch: int = 1, seq_len: int | None = None) -> int:
    """fvcore's count for the extracted model of `arch` (built with placeholder weights).

    `seq_len` defaults to the space's max_seq_len. Weights do not change a FLOP count, so
    no supernet is needed.
    """
    space.validate(arch)
    seq_len = space.max_seq_len if seq_len is None else seq_len
    config = {
        "format": FORMAT,
        "constants": NetConstants.from_space(space).to_dict(),
        "arch": arch.to_dict(),
    }
    model = StaticModel.from_config(config).eval()
    tokens = torch.zeros(batch, seq_len, dtype=torch.long)
    with torch.no_grad():
        return count_flops(model, tokens)
