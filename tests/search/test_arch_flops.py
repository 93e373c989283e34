"""Whole extracted models: fvcore's count equals the closed-form count, for every mixer."""

from __future__ import annotations

import pytest

from conftest import make_tiny_space
from nas import Arch, LayerArch
from nas.search.flops import analytic_flops, arch_flops, count_flops
from nas.search_space import MIXERS
from nas.supernet import Supernet


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidirectional"])
@pytest.mark.parametrize("mixer", list(MIXERS))
def test_every_mixer_is_counted_and_matches_the_formula(mixer, causal):
    space = make_tiny_space(causal=causal)
    info = MIXERS[mixer]
    layer = LayerArch(mixer, 2 if info.uses_heads else None, 4 if info.uses_window else None, 0)
    with_mixer = Arch(32, (layer,))
    without = Arch(32, (LayerArch("skip"),))
    for seq_len in (7, 32):
        counted = arch_flops(space, with_mixer, batch=2, seq_len=seq_len)
        expected = analytic_flops(space, with_mixer, 2, seq_len)
        assert abs(counted - expected) <= 0.01 * expected
        mixer_part = counted - arch_flops(space, without, batch=2, seq_len=seq_len)
        if mixer != "skip":
            assert mixer_part > 0, f"{mixer} counted as zero FLOPs"


def test_random_archs_match_within_one_percent(tiny_space):
    net = Supernet(tiny_space, seed=0)
    import torch

    for arch in tiny_space.sample_many(12, seed=5):
        tokens = torch.zeros(1, 32, dtype=torch.long)
        counted = count_flops(net.extract(arch).eval(), tokens)
        expected = analytic_flops(tiny_space, arch, 1, 32)
        assert abs(counted - expected) <= 0.01 * expected, arch
