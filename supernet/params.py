"""Elastic parameter groups: max-size weights that nest by prefix, and their fixed-size copies.

A weight is declared once, with symbolic dimensions ("d" model width, "E" inner width,
"H" heads, "F" FFN units, ...). The supernet stores it at the space's maximum and hands
out prefix slices for a sub-size; extraction copies the same slices into fresh
parameters. Packed weights (e.g. q, k and v) are stored with a leading pack axis so that
each part nests by prefix on its own, then flattened to the layout the kernel expects.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

Dims = dict[str, int]  # symbolic dimension name -> size


@dataclass(frozen=True)
class ParamSpec:
    name: str  # parameter name, as the kernel call site reads it
    dims: tuple[str, ...]  # symbolic dims, e.g. ("E", "d")
    init: str = "normal"  # normal | zeros | ones | a_log | dt_bias
    pack: int = 1  # number of same-shape parts stacked along the first dim (q, k, v -> 3)

    def shape(self, dims: Dims) -> tuple[int, ...]:
        """Shape as the kernel sees it: packed parts flattened into the first dim."""
        sizes = [dims[k] for k in self.dims]
        sizes[0] *= self.pack
        return tuple(sizes)


def _init_(tensor: torch.Tensor, kind: str, gen: torch.Generator) -> None:
    # Initialisation depends only on the index along each axis, never on the size it is
    # sliced to, so a sub-network starts from exactly the prefix of the largest one.
    with torch.no_grad():
        if kind == "normal":
            tensor.normal_(0.0, 0.02, generator=gen)
        elif kind == "zeros":
            tensor.zero_()
        elif kind == "ones":
            tensor.fill_(1.0)
        elif kind == "a_log":  # Mamba: A = -exp(a_log), A spread over [1, 16]
            tensor.uniform_(math.log(1.0), math.log(16.0), generator=gen)
        elif kind == "dt_bias":  # Mamba: softplus(dt_bias) spread log-uniformly in [1e-3, 1e-1]
            dt = torch.exp(
                torch.empty_like(tensor).uniform_(math.log(1e-3), math.log(1e-1), generator=gen)
            )
            tensor.copy_(dt + torch.log(-torch.expm1(-dt)))
        else:
            raise ValueError(f"unknown init '{kind}'")


class ElasticParams(nn.Module):
    """Max-size parameters of one part (a mixer, an FFN, a norm) that slice by prefix.

    With `chunks` = (axis name, ascending sizes), every unpacked weight with that axis is
    stored as one parameter per step between consecutive sizes (named `<name>_<start>`)
    and joined up to the size asked for. The values are the same as unchunked ones, but
    a sub-size's gradient then covers only the chunks it used, so its optimizer step and
    gradient clipping skip the rest. That matters for parts whose other axes are fixed
    (the embedding and exit heads: vocabulary x d): for the smallest archs, full-size
    gradients there made up most of a training step's cost beyond its static model's.
    """

    def __init__(
        self,
        specs: tuple[ParamSpec, ...],
        max_dims: Dims,
        gen: torch.Generator,
        chunks: tuple[str, tuple[int, ...]] | None = None,
    ):
        super().__init__()
        self.specs = specs
        self.chunk_axis, self.chunk_sizes = chunks if chunks else (None, ())
        self.chunk_starts = (0, *self.chunk_sizes[:-1])  # where each chunk begins
        self._chunked: dict[str, int] = {}  # spec name -> position of the chunk axis
        for spec in specs:
            sizes = tuple(max_dims[k] for k in spec.dims)
            shape = (spec.pack, *sizes) if spec.pack > 1 else sizes
            full = torch.empty(shape)
            _init_(full, spec.init, gen)
            if spec.pack == 1 and self.chunk_axis in spec.dims:
                axis = spec.dims.index(self.chunk_axis)
                self._chunked[spec.name] = axis
                for start, part in zip(self.chunk_starts, self._split(full, axis), strict=True):
                    self.register_parameter(f"{spec.name}_{start}", nn.Parameter(part.clone()))
            else:
                self.register_parameter(spec.name, nn.Parameter(full))

    def _split(self, full: torch.Tensor, axis: int) -> list[torch.Tensor]:
        lengths = [b - a for a, b in zip(self.chunk_starts, self.chunk_sizes, strict=True)]
        return list(torch.split(full, lengths, dim=axis))

    def _joined(self, name: str, size: int) -> torch.Tensor:
        """The chunks of weight `name` that make up its first `size` entries, joined."""
        if size not in self.chunk_sizes:
            raise ValueError(f"{self.chunk_axis}={size} is not one of {list(self.chunk_sizes)}")
        n = self.chunk_sizes.index(size) + 1
        parts = [getattr(self, f"{name}_{start}") for start in self.chunk_starts[:n]]
        return parts[0] if n == 1 else torch.cat(parts, dim=self._chunked[name])

    def tensors(self, dims: Dims) -> dict[str, torch.Tensor]:
        """Prefix views (copies only where packed parts or chunks are joined) at size `dims`."""
        out = {}
        for spec in self.specs:
            prefix = tuple(slice(0, dims[k]) for k in spec.dims)
            if spec.name in self._chunked:
                out[spec.name] = self._joined(spec.name, dims[self.chunk_axis])[prefix]
                continue
            full = getattr(self, spec.name)
            if spec.pack > 1:
                part = full[(slice(None), *prefix)]  # (pack, *sizes)
                out[spec.name] = part.reshape(spec.shape(dims))
            else:
                out[spec.name] = full[prefix]
        return out

    def extract(self, dims: Dims) -> FixedParams:
        """Fresh fixed-size parameters holding copies of the prefix (no shared storage)."""
        fixed = FixedParams({s.name: s.shape(dims) for s in self.specs})
        with torch.no_grad():
            for name, tensor in self.tensors(dims).items():
                getattr(fixed, name).copy_(tensor)
        return fixed


class FixedParams(nn.Module):
    """Fixed-size parameters of one part of an extracted model."""

    def __init__(self, shapes: dict[str, tuple[int, ...]]):
        super().__init__()
        for name, shape in shapes.items():
            self.register_parameter(name, nn.Parameter(torch.zeros(shape)))

    def tensors(self) -> dict[str, torch.Tensor]:
        return dict(self.named_parameters(recurse=False))
