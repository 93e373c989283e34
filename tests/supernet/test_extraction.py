"""Extraction is exact: the extracted model equals the supernet on the same arch."""

from __future__ import annotations

import pytest
import torch

import nas
from nas import Arch, LayerArch, SearchSpace, Supernet
from nas.search_space import MIXERS
from nas.supernet import MIXER_SPECS


def _param_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_registry_matches_search_space_mixers():
    assert set(MIXER_SPECS) == set(MIXERS)


def test_user_contract_on_default_space(tmp_path):
    space = SearchSpace.default()
    arch = space.sample(seed=0)
    assert nas.Arch.from_json(arch.to_json()) == arch
    net = Supernet(space, seed=0)
    x = torch.randint(0, space.vocab_size, (2, 64))
    sub = net.extract(arch)
    torch.testing.assert_close(sub(x), net(x, arch))
    nas.save(sub, tmp_path / "model")
    again = nas.load(tmp_path / "model")
    torch.testing.assert_close(again(x), sub(x))


def test_extraction_exact_over_200_random_archs_and_extremes(tiny_space_both):
    space = tiny_space_both
    net = Supernet(space, seed=1).eval()
    gen = torch.Generator().manual_seed(0)
    archs = [space.smallest(), space.largest(), *space.sample_many(200, seed=7)]
    # Positive-definite checks on real (non-initial) weights: perturb every parameter so that
    # zero biases and unit norms cannot hide a slicing mistake.
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    for arch in archs:
        tokens = torch.randint(
            0, space.vocab_size, (2, int(torch.randint(1, 33, (1,), generator=gen))), generator=gen
        )
        sub = net.extract(arch)
        with torch.no_grad():
            torch.testing.assert_close(sub(tokens), net(tokens, arch))
        assert _param_count(sub) == space.param_count(arch), arch


def test_ffn_per_mixer_extracts_exactly_and_keeps_each_mixers_ffn_apart(tiny_space):
    net = Supernet(tiny_space, seed=1, ffn_per_mixer=True).eval()
    shared = Supernet(tiny_space, seed=1)
    ffn_size = sum(p.numel() for p in shared.blocks[0].ffn.parameters())
    extra = (len(tiny_space.mixers) - 1) * tiny_space.max_depth * ffn_size
    assert _param_count(net) - _param_count(shared) > extra  # FFN norms come on top
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    tokens = torch.randint(0, tiny_space.vocab_size, (2, 12), generator=gen)
    for arch in [tiny_space.largest(), *tiny_space.sample_many(60, seed=3)]:
        sub = net.extract(arch)
        with torch.no_grad():
            torch.testing.assert_close(sub(tokens), net(tokens, arch))
        assert _param_count(sub) == tiny_space.param_count(arch)
    # A conv layer's loss reaches the FFN that follows conv in that slot, and no other.
    arch = Arch(32, (LayerArch("conv", ffn=64),))
    net.train()
    net(tokens, arch).sum().backward()
    grads = {name: p.grad is not None for name, p in net.blocks[0].ffns.named_parameters()}
    assert {n.split(".")[0] for n, has in grads.items() if has} == {"conv"}


def test_extracted_model_shares_no_storage_and_is_plain_torch(tiny_space):
    net = Supernet(tiny_space, seed=0)
    arch = tiny_space.largest()
    sub = net.extract(arch)
    super_ptrs = {p.untyped_storage().data_ptr() for p in net.parameters()}
    assert not super_ptrs & {p.untyped_storage().data_ptr() for p in sub.parameters()}
    with torch.no_grad():
        for p in sub.parameters():
            p.zero_()
    assert all(p.abs().sum() > 0 for p in net.parameters() if p.numel() > 1 and p.std() > 0)
    assert not any(isinstance(m, Supernet) for m in sub.modules())


def test_widths_nest_by_prefix(tiny_space):
    net = Supernet(tiny_space, seed=0)
    layers = (LayerArch("attention", heads=2, ffn=64), LayerArch("ssm", heads=2, ffn=64))
    big = net.extract(Arch(32, layers)).state_dict()
    small_layers = (LayerArch("attention", heads=1, ffn=32), LayerArch("ssm", heads=1, ffn=32))
    small = net.extract(Arch(16, small_layers)).state_dict()
    # q, k and v nest separately inside the packed projection
    qkv_big = big["blocks.0.mixer.w_qkv"].view(3, 16, 32)
    torch.testing.assert_close(small["blocks.0.mixer.w_qkv"].view(3, 8, 16), qkv_big[:, :8, :16])
    torch.testing.assert_close(small["blocks.1.ffn.w1"], big["blocks.1.ffn.w1"][:32, :16])
    torch.testing.assert_close(small["blocks.1.mixer.w_out"], big["blocks.1.mixer.w_out"][:16, :8])
    torch.testing.assert_close(small["embedding.tok"], big["embedding.tok"][:, :16])


def test_exits_read_from_one_pass_equal_cut_archs(tiny_space):
    net = Supernet(tiny_space, seed=0)
    arch = tiny_space.sample_many(20, seed=3)
    arch = next(a for a in arch if a.depth == 3)
    tokens = torch.randint(0, 256, (2, 16))
    outs = net(tokens, arch, exits=[1, 2, 3])
    for e, logits in outs.items():
        torch.testing.assert_close(logits, net(tokens, Arch(arch.d_model, arch.layers[:e])))
    with pytest.raises(ValueError, match="exit 3"):
        net(tokens, Arch(arch.d_model, arch.layers[:2]), exits=[3])


def test_supernet_rejects_foreign_arch_and_long_input(tiny_space):
    net = Supernet(tiny_space, seed=0)
    with pytest.raises(nas.ArchError, match="d_model: 64"):
        net(torch.zeros(1, 4, dtype=torch.long), Arch(64, (LayerArch("pool"),)))
    with pytest.raises(ValueError, match="max_seq_len"):
        net(torch.zeros(1, 33, dtype=torch.long), tiny_space.smallest())


def test_gradients_reach_only_the_sliced_prefix(tiny_space):
    net = Supernet(tiny_space, seed=0)
    arch = Arch(16, (LayerArch("glu", heads=1, ffn=32),))
    loss = net(torch.randint(0, 256, (2, 8)), arch).logsumexp(-1).mean()
    loss.backward()
    grad = net.blocks[0].ffn.w1.grad
    assert grad[:32, :16].abs().sum() > 0
    assert grad[32:].abs().sum() == 0 and grad[:, 16:].abs().sum() == 0
    assert net.blocks[0].mixers["attention"].w_qkv.grad is None


def test_same_seed_same_weights(tiny_space):
    a, b = Supernet(tiny_space, seed=5), Supernet(tiny_space, seed=5)
    c = Supernet(tiny_space, seed=6)
    for (name, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb), name
    pairs = zip(a.parameters(), c.parameters(), strict=True)
    assert not all(torch.equal(pa, pc) for pa, pc in pairs)


@pytest.mark.parametrize("mixer", list(MIXERS))
def test_torch_export_succeeds_for_every_mixer(tiny_space_both, mixer):
    space = tiny_space_both
    info = MIXERS[mixer]
    layer = LayerArch(mixer, 2 if info.uses_heads else None, 4 if info.uses_window else None, 32)
    arch = Arch(32, (layer, layer))
    sub = Supernet(space, seed=0).extract(arch).eval()
    tokens = torch.randint(0, 256, (1, 24))
    exported = torch.export.export(sub, (tokens,))
    torch.testing.assert_close(exported.module()(tokens), sub(tokens))
