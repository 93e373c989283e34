"""`Supernet`: one set of max-size weights from which every arch of a space is run or extracted."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from nas.search_space import Arch, SearchSpace

from .config import NetConstants
from .mixers import mixer_spec
from .network import EMBED_PARAMS, EXIT_PARAMS, FFN_PARAMS, NORM_PARAMS, embed, read_exit, run_block
from .params import Dims, ElasticParams, ParamSpec
from .static import StaticBlock, StaticModel

Tensor = torch.Tensor


@dataclass(frozen=True)
class PartUse:
    """One elastic part an arch uses, where it lives on each side, and at what size."""

    key: str  # module path of the ElasticParams in a Supernet, e.g. "blocks.0.mixers.glu"
    target: str  # module path of the FixedParams in the extracted model, e.g. "blocks.0.mixer"
    specs: tuple[ParamSpec, ...]  # the part's weights at symbolic sizes
    dims: Dims  # the arch's concrete size of every symbolic dim for this part


def arch_parts(arch: Arch, consts: NetConstants, ffn_per_mixer: bool = False) -> list[PartUse]:
    """Every elastic part `arch` uses, in the order `Supernet.extract` copies them.

    The same layout as `Supernet` (module names) and `StaticModel` (targets), so a part's
    prefix at `dims` is exactly the weights the extracted model holds at `target`. It
    needs no supernet: a family on disk is read by it. Raises `ArchError` for an unknown
    mixer.
    """
    base = consts.dims(arch.d_model)
    parts = [PartUse("embedding", "embedding", EMBED_PARAMS, base)]
    for i, layer in enumerate(arch.layers):
        dims = consts.dims(arch.d_model, layer.heads, layer.ffn)
        specs = mixer_spec(layer.mixer).params
        if layer.mixer != "skip":
            parts.append(PartUse(f"blocks.{i}.norm_mix", f"blocks.{i}.norm_mix", NORM_PARAMS, dims))
        if specs:
            parts.append(
                PartUse(f"blocks.{i}.mixers.{layer.mixer}", f"blocks.{i}.mixer", specs, dims)
            )
        if layer.ffn:
            norm, ffn = (
                (f"norm_ffns.{layer.mixer}", f"ffns.{layer.mixer}")
                if ffn_per_mixer
                else ("norm_ffn", "ffn")
            )
            parts.append(PartUse(f"blocks.{i}.{norm}", f"blocks.{i}.norm_ffn", NORM_PARAMS, dims))
            parts.append(PartUse(f"blocks.{i}.{ffn}", f"blocks.{i}.ffn", FFN_PARAMS, dims))
    parts.append(PartUse(f"exits.{arch.depth}", "exit_head", EXIT_PARAMS, base))
    return parts


class SuperBlock(nn.Module):
    """One layer slot: the max-size weights of every mixer the space allows, and the FFN.

    With `ffn_per_mixer`, each mixer has its own FFN (and FFN norm) in this slot, so an
    FFN only ever trains after its own mixer instead of serving all of them.
    """

    def __init__(
        self,
        space: SearchSpace,
        consts: NetConstants,
        gen: torch.Generator,
        ffn_per_mixer: bool = False,
    ):
        super().__init__()
        top = consts.dims(space.d_model[-1], space.heads[-1], space.ffn[-1])
        self.norm_mix = (
            ElasticParams(NORM_PARAMS, top, gen) if set(space.mixers) - {"skip"} else None
        )
        self.mixers = nn.ModuleDict(
            {
                name: ElasticParams(mixer_spec(name).params, top, gen)
                for name in space.mixers
                if mixer_spec(name).params
            }
        )
        has_ffn = space.ffn[-1] > 0
        self.ffn_per_mixer = ffn_per_mixer
        if ffn_per_mixer and has_ffn:
            self.norm_ffns = nn.ModuleDict(
                {name: ElasticParams(NORM_PARAMS, top, gen) for name in space.mixers}
            )
            self.ffns = nn.ModuleDict(
                {name: ElasticParams(FFN_PARAMS, top, gen) for name in space.mixers}
            )
        else:
            self.norm_ffn = ElasticParams(NORM_PARAMS, top, gen) if has_ffn else None
            self.ffn = ElasticParams(FFN_PARAMS, top, gen) if has_ffn else None

    def _ffn_params(self, layer) -> tuple[ElasticParams | None, ElasticParams | None]:
        """The (FFN norm, FFN) that follow `layer`'s mixer in this slot; None without an FFN."""
        if not layer.ffn:
            return None, None
        if self.ffn_per_mixer:
            return self.norm_ffns[layer.mixer], self.ffns[layer.mixer]
        return self.norm_ffn, self.ffn

    def weights(self, layer, dims: dict[str, int]):
        """(norm_mix, mixer, norm_ffn, ffn) weight dicts sliced to `dims`; None where absent."""
        uses_mixer = layer.mixer != "skip"
        mixer = self.mixers[layer.mixer].tensors(dims) if layer.mixer in self.mixers else {}
        norm_ffn, ffn = self._ffn_params(layer)
        return (
            self.norm_mix.tensors(dims) if uses_mixer else None,
            mixer,
            norm_ffn.tensors(dims) if norm_ffn is not None else None,
            ffn.tensors(dims) if ffn is not None else None,
        )

    def extract(self, layer, dims: dict[str, int]) -> StaticBlock:
        uses_mixer = layer.mixer != "skip"
        norm_ffn, ffn = self._ffn_params(layer)
        return StaticBlock(
            layer=layer,
            norm_mix=self.norm_mix.extract(dims) if uses_mixer else None,
            mixer=self.mixers[layer.mixer].extract(dims) if layer.mixer in self.mixers else None,
            norm_ffn=norm_ffn.extract(dims) if norm_ffn is not None else None,
            ffn=ffn.extract(dims) if ffn is not None else None,
        )


class Supernet(nn.Module):
    """Weight-sharing supernet over `space`.

    `net(tokens, arch)` runs the subnetwork `arch` on (B, T) int64 tokens (T <= the
    space's max_seq_len) and returns (B, T, vocab) logits read at the arch's exit. Every
    width is a prefix of the max-size weight. `net.extract(arch)` returns a standalone
    model whose outputs equal these. `ffn_per_mixer` gives every (layer slot, mixer) its
    own FFN instead of one FFN per slot shared by all mixers (see `SuperBlock`).
    """

    def __init__(self, space: SearchSpace, seed: int = 0, ffn_per_mixer: bool = False):
        super().__init__()
        self.space = space
        self.ffn_per_mixer = ffn_per_mixer
        self.consts = NetConstants.from_space(space)
        gen = torch.Generator().manual_seed(seed)
        top = self.consts.dims(space.d_model[-1], space.heads[-1], space.ffn[-1])
        # The embedding and exit heads are chunked by model width (see ElasticParams).
        by_width = ("d", space.d_model)
        self.embedding = ElasticParams(EMBED_PARAMS, top, gen, chunks=by_width)
        self.blocks = nn.ModuleList(
            [SuperBlock(space, self.consts, gen, ffn_per_mixer) for _ in range(space.max_depth)]
        )
        self.exits = nn.ModuleDict(
            {str(e): ElasticParams(EXIT_PARAMS, top, gen, chunks=by_width) for e in space.exits}
        )

    def forward(
        self, tokens: Tensor, arch: Arch, exits: Sequence[int] | None = None
    ) -> Tensor | dict[int, Tensor]:
        """Run `arch` on (B, T) tokens.

        Returns (B, T, vocab) logits at the arch's exit. With `exits`, returns a dict
        {exit: logits} read at each listed exit (each <= arch.depth and an exit of the
        space) from one pass: the logits at exit e equal those of the arch cut to e layers.
        Raises `ArchError` if `arch` is not in the space.
        """
        self.space.validate(arch)
        wanted = [arch.depth] if exits is None else sorted(set(exits))
        for e in wanted:
            if str(e) not in self.exits or e > arch.depth:
                raise ValueError(f"exit {e} is not an exit of the space within depth {arch.depth}")
        _check_tokens(tokens, self.consts)
        x = embed(tokens, self.embedding.tensors(self.consts.dims(arch.d_model)))  # (B, T, d)
        out: dict[int, Tensor] = {}
        for i, layer in enumerate(arch.layers[: wanted[-1]]):
            dims = self.consts.dims(arch.d_model, layer.heads, layer.ffn)
            x = run_block(x, layer.mixer, layer, *self.blocks[i].weights(layer, dims), self.consts)
            if i + 1 in wanted:
                head = self.exits[str(i + 1)].tensors(self.consts.dims(arch.d_model))
                out[i + 1] = read_exit(x, head)  # (B, T, V)
        return out[arch.depth] if exits is None else out

    def extract(self, arch: Arch) -> StaticModel:
        """A standalone model of exactly `arch`'s size with copied weights (no shared storage)."""
        self.space.validate(arch)
        base = self.consts.dims(arch.d_model)
        blocks = [
            self.blocks[i].extract(layer, self.consts.dims(arch.d_model, layer.heads, layer.ffn))
            for i, layer in enumerate(arch.layers)
        ]
        return StaticModel(
            arch=arch,
            consts=self.consts,
            embedding=self.embedding.extract(base),
            blocks=blocks,
            exit_head=self.exits[str(arch.depth)].extract(base),
        ).train(self.training)


def _check_tokens(tokens: Tensor, consts: NetConstants) -> None:
    if tokens.dim() != 2 or tokens.dtype not in (torch.int64, torch.int32):
        raise ValueError(
            f"tokens must be a (B, T) integer tensor, got {tuple(tokens.shape)} {tokens.dtype}"
        )
    if tokens.shape[1] > consts.max_seq_len:
        raise ValueError(
            f"sequence length {tokens.shape[1]} exceeds the space's max_seq_len "
            f"{consts.max_seq_len}"
        )
