"""`StaticModel`: an extracted subnetwork with fixed-size weights of its own.

It is plain torch: parameters in modules, a forward that calls the same network.py and
kernels as the supernet. It is rebuilt from its JSON config alone (see storage.py).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from nas.search_space import Arch, LayerArch

from .config import NetConstants
from .mixers import mixer_spec
from .network import EMBED_PARAMS, EXIT_PARAMS, FFN_PARAMS, NORM_PARAMS, embed, read_exit, run_block
from .params import FixedParams, ParamSpec

Tensor = torch.Tensor

FORMAT = "nas.static/1"


class StaticBlock(nn.Module):
    def __init__(
        self,
        layer: LayerArch,
        norm_mix: FixedParams | None,
        mixer: FixedParams | None,
        norm_ffn: FixedParams | None,
        ffn: FixedParams | None,
    ):
        super().__init__()
        self.layer = layer
        self.norm_mix, self.mixer, self.norm_ffn, self.ffn = norm_mix, mixer, norm_ffn, ffn

    def forward(self, x: Tensor, consts: NetConstants) -> Tensor:
        return run_block(
            x,
            self.layer.mixer,
            self.layer,
            self.norm_mix.tensors() if self.norm_mix is not None else None,
            self.mixer.tensors() if self.mixer is not None else {},
            self.norm_ffn.tensors() if self.norm_ffn is not None else None,
            self.ffn.tensors() if self.ffn is not None else None,
            consts,
        )


class StaticModel(nn.Module):
    """A deployable subnetwork: (B, T) int64 tokens -> (B, T, vocab) logits."""

    def __init__(
        self,
        arch: Arch,
        consts: NetConstants,
        embedding: FixedParams,
        blocks: list[StaticBlock],
        exit_head: FixedParams,
    ):
        super().__init__()
        self.arch = arch
        self.consts = consts
        self.embedding = embedding
        self.blocks = nn.ModuleList(blocks)
        self.exit_head = exit_head

    # The forward pass is these three parts in turn, and nothing else: the latency kernel
    # table times each part through these same methods (search/kernel_table.py), so what
    # it measures is what the deployed model runs.
    def forward(self, tokens: Tensor) -> Tensor:
        return self.read_out(self.run_blocks(self.embed_tokens(tokens)))  # (B, T, V)

    def embed_tokens(self, tokens: Tensor) -> Tensor:
        """(B, T) int64 tokens -> (B, T, d) hidden states entering the first block."""
        return embed(tokens, self.embedding.tensors())

    def run_blocks(self, x: Tensor) -> Tensor:
        """(B, T, d) -> (B, T, d) through every block, in order."""
        for block in self.blocks:
            x = block(x, self.consts)
        return x

    def read_out(self, x: Tensor) -> Tensor:
        """(B, T, d) hidden states after the last block -> (B, T, V) logits (the exit head)."""
        return read_exit(x, self.exit_head.tensors())

    def config(self) -> dict[str, Any]:
        """The JSON config from which `from_config` rebuilds this model's structure."""
        return {"format": FORMAT, "constants": self.consts.to_dict(), "arch": self.arch.to_dict()}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> StaticModel:
        """An uninitialised (zero) model of the structure `config` describes."""
        arch = Arch.from_dict(config["arch"], source="config arch")
        consts = NetConstants.from_dict(config["constants"], source="config")
        base = consts.dims(arch.d_model)
        blocks = []
        for layer in arch.layers:
            dims = consts.dims(arch.d_model, layer.heads, layer.ffn)
            mixer_params = mixer_spec(layer.mixer).params
            uses_mixer = layer.mixer != "skip"
            blocks.append(
                StaticBlock(
                    layer,
                    _fixed(NORM_PARAMS, dims) if uses_mixer else None,
                    _fixed(mixer_params, dims) if mixer_params else None,
                    _fixed(NORM_PARAMS, dims) if layer.ffn else None,
                    _fixed(FFN_PARAMS, dims) if layer.ffn else None,
                )
            )
        return cls(arch, consts, _fixed(EMBED_PARAMS, base), blocks, _fixed(EXIT_PARAMS, base))


def _fixed(specs: tuple[ParamSpec, ...], dims: dict[str, int]) -> FixedParams:
    return FixedParams({s.name: s.shape(dims) for s in specs})
