"""How an arch of a space is spelled as Optuna parameters, and read back.

Every trial samples the same fixed set of parameters (so that multivariate samplers see
one search space): the model width, the depth, and for every layer slot up to the
deepest exit its mixer, heads, window and FFN width. A layer slot past the arch's depth,
or a choice its mixer does not use (heads of a pooling layer), is sampled but ignored.

Widths, heads, windows and depths are ordinal: a larger choice is a larger model, so they
are integer indices into the space's ascending choices (TPE then models them on a line,
where neighbours are alike). Mixers are categorical.
"""

from __future__ import annotations

from typing import Any

from optuna.distributions import BaseDistribution, CategoricalDistribution, IntDistribution

from nas.search_space import MIXERS, Arch, LayerArch, SearchSpace


def distributions(space: SearchSpace) -> dict[str, BaseDistribution]:
    """The fixed Optuna search space of `space`: parameter name -> distribution."""
    dists: dict[str, BaseDistribution] = {
        "d_model": _index(space.d_model),
        "depth": _index(space.exits),
    }
    for i in range(space.max_depth):
        dists[f"mixer_{i}"] = CategoricalDistribution(list(space.mixers))
        dists[f"heads_{i}"] = _index(space.heads)
        if space.windows:
            dists[f"window_{i}"] = _index(space.windows)
        dists[f"ffn_{i}"] = _index(space.ffn)
    return dists


def _index(choices: tuple[int, ...]) -> IntDistribution:
    return IntDistribution(0, len(choices) - 1)


def decode(space: SearchSpace, params: dict[str, Any]) -> Arch:
    """The arch that Optuna parameters `params` spell (parameters it does not use ignored)."""
    depth = space.exits[params["depth"]]
    layers = []
    for i in range(depth):
        mixer = params[f"mixer_{i}"]
        spec = MIXERS[mixer]
        layers.append(
            LayerArch(
                mixer=mixer,
                heads=space.heads[params[f"heads_{i}"]] if spec.uses_heads else None,
                window=space.windows[params[f"window_{i}"]] if spec.uses_window else None,
                ffn=space.ffn[params[f"ffn_{i}"]],
            )
        )
    return space.validate(Arch(space.d_model[params["d_model"]], tuple(layers)))


def encode(space: SearchSpace, arch: Arch) -> dict[str, Any]:
    """Optuna parameters that `decode` reads back as `arch`.

    Slots past the arch's depth and choices its mixers do not use repeat the arch's last
    used value (any value would do; these are stable so an enqueued arch has one spelling).
    """
    space.validate(arch)
    params: dict[str, Any] = {
        "d_model": space.d_model.index(arch.d_model),
        "depth": space.exits.index(arch.depth),
    }
    last = arch.layers[-1]
    heads = next((ly.heads for ly in reversed(arch.layers) if ly.heads is not None), None)
    window = next((ly.window for ly in reversed(arch.layers) if ly.window is not None), None)
    for i in range(space.max_depth):
        layer = arch.layers[i] if i < arch.depth else last
        params[f"mixer_{i}"] = layer.mixer
        params[f"heads_{i}"] = space.heads.index(layer.heads or heads or space.heads[0])
        if space.windows:
            params[f"window_{i}"] = space.windows.index(layer.window or window or space.windows[0])
        params[f"ffn_{i}"] = space.ffn.index(layer.ffn)
    return params
