"""The archs bench_weight_sharing.py compares: the extremes, one middle arch per mixer, and
random archs whose mixers vary by layer (or every arch of a small space)."""

from __future__ import annotations

import itertools

import nas
from nas import Arch, LayerArch
from nas.search_space import MIXERS

# (mixer, d_model index, heads index, ffn index, exit index): varied sizes, so that the
# ranking spans a range and is not only decided by the mixer.
MIDDLE = [
    ("ssm", 2, 2, 3, 1),
    ("linear_attention", 2, 2, 2, 1),
    ("conv", 1, 0, 3, 2),
    ("glu", 1, 1, 2, 1),
    ("pool", 0, 0, 2, 1),
    ("sliding_window", 3, 3, 3, 0),
]
# Random archs of the space, mixers varying by layer: the kind a search returns.
MIXED_ARCHS, MIXED_SEED = 2, 7


# `--mixed all` enumerates a small space; beyond this many archs, sample instead.
MAX_ENUMERATED = 64


def every_arch(space: nas.SearchSpace) -> list[Arch]:
    """Every arch of `space`, in a fixed order (widths, then depths, then layer choices)."""
    options = space.layer_options()
    return [
        Arch(d_model, layers)
        for d_model in space.d_model
        for depth in space.exits
        for layers in itertools.product(options, repeat=depth)
    ]


def bench_archs(space: nas.SearchSpace, mixed: int | None = MIXED_ARCHS) -> dict[str, Arch]:
    """The smallest, the largest, one middle arch per mixer of `MIDDLE` in the space, and
    `mixed` random archs ("mixed0", ...; one seeded stream, so a larger `mixed` keeps the
    first ones). `mixed=None` takes every other arch of the space instead (as "mixed0",
    ...), so that a small space is compared whole; each arch appears once."""
    archs = {"smallest": space.smallest(), "largest": space.largest()}

    def pick(values: tuple[int, ...], i: int) -> int:
        return values[min(i, len(values) - 1)]

    for mixer, d_i, h_i, f_i, e_i in MIDDLE:
        if mixer not in space.mixers:
            continue
        spec = MIXERS[mixer]
        layer = LayerArch(
            mixer,
            pick(space.heads, h_i) if spec.uses_heads else None,
            pick(space.windows, 1) if spec.uses_window else None,
            pick(space.ffn, f_i),
        )
        depth = pick(space.exits, e_i)
        arch = space.validate(Arch(pick(space.d_model, d_i), (layer,) * depth))
        if arch not in archs.values():  # in a tiny space a middle arch can be an extreme one
            archs[mixer] = arch
    if mixed is None:
        named = set(archs.values())
        rest = [a for a in every_arch(space) if a not in named]
    else:
        rest = space.sample_many(mixed, seed=MIXED_SEED)
    for i, arch in enumerate(rest):
        archs[f"mixed{i}"] = arch
    return archs
