"""Elastic families: one artifact, shared weights stored once, every member exact."""

from __future__ import annotations

import json

import pytest
import torch

import nas
from nas import Arch, BudgetError, CheckpointError, NasError, Supernet
from nas.supernet import family as family_module
from nas.supernet.family import FAMILY_FILE, FAMILY_WEIGHTS, is_family, load_family, save_family


def _arch(d_model: int, *layers: dict) -> Arch:
    return Arch.from_dict({"d_model": d_model, "layers": list(layers)})


# Mixed mixers, widths, depths and exits; "wide" and "deep" share block 0's attention
# at different widths, "tiny" shares nothing but the embedding beyond its exit.
MEMBERS = {
    "wide": _arch(
        32,
        {"mixer": "attention", "heads": 2, "ffn": 0},
        {"mixer": "conv", "ffn": 64},
    ),
    "tiny": _arch(16, {"mixer": "attention", "heads": 1, "ffn": 32}),
    "deep": _arch(
        16,
        {"mixer": "attention", "heads": 1, "ffn": 64},
        {"mixer": "ssm", "heads": 2, "ffn": 32},
        {"mixer": "sliding_window", "heads": 1, "window": 4, "ffn": 0},
    ),
    "odd": _arch(
        32,
        {"mixer": "glu", "heads": 1, "ffn": 32},
        {"mixer": "skip", "ffn": 32},
        {"mixer": "pool", "ffn": 0},
    ),
}


def _net(space, ffn_per_mixer: bool = False) -> Supernet:
    net = Supernet(space, seed=0, ffn_per_mixer=ffn_per_mixer).eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # no zero biases or unit norms for a slicing mistake to hide in
        for p in net.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    return net


def _one_line(exc: pytest.ExceptionInfo) -> str:
    assert "\n" not in str(exc.value)
    return str(exc.value)


@pytest.mark.parametrize("ffn_per_mixer", [False, True], ids=["shared_ffn", "ffn_per_mixer"])
def test_every_member_equals_its_extraction(tiny_space, tmp_path, ffn_per_mixer):
    net = _net(tiny_space, ffn_per_mixer)
    members = {**MEMBERS, "sampled": tiny_space.sample_many(3, seed=5)[-1]}
    sizes = save_family(net, members, tmp_path / "fam")
    family = load_family(tmp_path / "fam")
    assert family.names == list(members)  # the caller's order, not sorted
    tokens = torch.randint(0, tiny_space.vocab_size, (2, 11), generator=torch.Generator())
    for name, arch in members.items():
        model, alone = family.model(name), net.extract(arch).eval()
        assert type(model) is nas.StaticModel and family.arch(name) == arch
        assert model.state_dict().keys() == alone.state_dict().keys()
        for key, tensor in alone.state_dict().items():
            assert torch.equal(model.state_dict()[key], tensor), (name, key)
        with torch.no_grad():
            out = model(tokens)
            assert torch.equal(out, alone(tokens)), name
            assert torch.equal(out, net(tokens, arch)), name
        assert family.info(name)["params"] == sizes.params[name]
        assert sizes.params[name] == sum(p.numel() for p in alone.parameters())
    assert sizes.sum_params == sum(sizes.params.values())
    assert sizes.union_params < sizes.sum_params
    assert sizes.union_bytes == (tmp_path / "fam" / FAMILY_WEIGHTS).stat().st_size
    assert sizes.sum_bytes == sum(
        t.numel() * t.element_size()
        for arch in members.values()
        for t in net.extract(arch).state_dict().values()
    )


def _ln(d):  # a LayerNorm's weight and bias
    return 2 * d


def test_union_params_is_the_widest_prefix_of_each_part(tiny_space, tmp_path):
    # Counted by hand from the archs: V=256, T=32, head_dim=8, conv K=4, ssm N=4.
    V, T = 256, 32
    members = {"wide": MEMBERS["wide"], "tiny": MEMBERS["tiny"]}
    embedding = V * 32 + T * 32  # widest d over both members
    exits = (_ln(16) + V * 16 + V) + (_ln(32) + V * 32 + V)  # exit 1 at d=16, exit 2 at d=32
    attention = 3 * 16 * 32 + 3 * 16 + 32 * 16 + 32  # block 0: E = 2 heads * 8, d = 32
    block0 = _ln(32) + attention + _ln(16) + (32 * 16 + 32 + 16 * 32 + 16)  # ffn: tiny's only
    block1 = _ln(32) + (32 * 4 + 32) + _ln(32) + (64 * 32 + 64 + 32 * 64 + 32)  # wide's conv
    sizes = save_family(_net(tiny_space), members, tmp_path / "fam")
    assert sizes.union_params == embedding + exits + block0 + block1
    assert sizes.union_params < sizes.sum_params

    one = save_family(_net(tiny_space), {"deep": MEMBERS["deep"]}, tmp_path / "one")
    assert one.union_params == one.sum_params == one.params["deep"]


def test_a_member_reads_only_its_own_slices(tiny_space, tmp_path, monkeypatch):
    save_family(_net(tiny_space), MEMBERS, tmp_path / "fam")
    read: list[tuple[str, tuple[int, ...]]] = []
    real_open = family_module.safe_open

    class SpySlice:
        def __init__(self, name, inner):
            self.name, self.inner = name, inner

        def get_shape(self):
            return self.inner.get_shape()

        def __getitem__(self, index):
            piece = self.inner[index]
            read.append((self.name, tuple(piece.shape)))
            return piece

    class SpyFile:
        def __init__(self, *args, **kwargs):
            self.inner = real_open(*args, **kwargs)

        def __enter__(self):
            self.handle = self.inner.__enter__()
            return self

        def __exit__(self, *exc):
            return self.inner.__exit__(*exc)

        def keys(self):
            return self.handle.keys()

        def get_slice(self, name):
            return SpySlice(name, self.handle.get_slice(name))

        def get_tensor(self, name):
            raise AssertionError(f"whole tensor {name} read")

    monkeypatch.setattr(family_module, "safe_open", SpyFile)
    family = load_family(tmp_path / "fam")
    assert read == []  # opening a family materialises no member
    family.model("tiny")
    names = {name for name, _ in read}
    # tiny is one attention layer at d=16 read at exit 1: nothing of blocks 1-2 or other exits
    assert names == {
        "embedding.tok",
        "embedding.pos",
        "blocks.0.norm_mix.weight",
        "blocks.0.norm_mix.bias",
        "blocks.0.mixers.attention.w_qkv",
        "blocks.0.mixers.attention.b_qkv",
        "blocks.0.mixers.attention.w_out",
        "blocks.0.mixers.attention.b_out",
        "blocks.0.norm_ffn.weight",
        "blocks.0.norm_ffn.bias",
        "blocks.0.ffn.w1",
        "blocks.0.ffn.b1",
        "blocks.0.ffn.w2",
        "blocks.0.ffn.b2",
        "exits.1.norm_weight",
        "exits.1.norm_bias",
        "exits.1.w_out",
        "exits.1.b_out",
    }
    shapes = dict(read)  # and only tiny's prefix of the shared ones (stored at d=32)
    assert shapes["embedding.tok"] == (256, 16)
    assert shapes["blocks.0.mixers.attention.w_qkv"] == (3, 8, 16)


def _timed_family(space, tmp_path):
    info = {
        "wide": {"val_loss": 2.0, "predicted_ms": 5.0, "measured_ms": None},
        "tiny": {"val_loss": 3.0, "predicted_ms": 1.0},
        "deep": {"val_loss": 2.5, "predicted_ms": 9.0, "measured_ms": 2.0},  # measured wins
    }
    members = {name: MEMBERS[name] for name in info}
    net = _net(space)
    save_family(net, members, tmp_path / "fam", info=info)
    return net, members


def test_nas_load_picks_by_budget_or_name(tiny_space, tmp_path, request):
    net, members = _timed_family(tiny_space, tmp_path)
    request.getfixturevalue("no_unpickling")  # from here on, any unpickling raises
    folder = tmp_path / "fam"
    assert is_family(folder)
    family = load_family(folder)
    assert family.info("deep")["val_loss"] == 2.5
    assert family.info("wide")["arch"] == members["wide"].to_dict()
    tokens = torch.randint(0, tiny_space.vocab_size, (1, 9))
    for budget, expected in [("1ms", "tiny"), (1.5, "tiny"), ("2.5ms", "deep"), ("10ms", "wide")]:
        model = nas.load(folder, budget=budget)
        assert isinstance(model, torch.nn.Module) and model.arch == members[expected]
        with torch.no_grad():
            assert torch.equal(model(tokens), net.extract(members[expected])(tokens))
    assert family.pick(0.0015e3) == "tiny"
    assert nas.load(folder, member="deep").arch == members["deep"]
    assert nas.load(folder, budget="1ms", member="wide").arch == members["wide"]


def test_budget_no_member_fits_names_the_fastest(tiny_space, tmp_path):
    _timed_family(tiny_space, tmp_path)
    with pytest.raises(BudgetError) as exc:
        nas.load(tmp_path / "fam", budget="0.5ms")
    message = _one_line(exc)
    assert "0.5 ms" in message and "'tiny' at 1 ms" in message


def test_family_misuse_gives_one_line_errors(tiny_space, tmp_path):
    _timed_family(tiny_space, tmp_path)
    folder = tmp_path / "fam"
    with pytest.raises(CheckpointError) as exc:
        nas.load(folder, member="huge")
    assert "'huge'" in _one_line(exc) and "wide, tiny, deep" in str(exc.value)
    with pytest.raises(CheckpointError) as exc:
        nas.load(folder)
    assert "budget=" in _one_line(exc) and "member=" in str(exc.value)
    with pytest.raises(BudgetError):
        nas.load(folder, budget="fast")
    # A family without losses cannot be ranked by a budget, but a member is still loadable.
    save_family(_net(tiny_space), MEMBERS, tmp_path / "bare")
    with pytest.raises(NasError, match="latency") as exc:
        nas.load(tmp_path / "bare", budget="5ms")
    _one_line(exc)
    assert nas.load(tmp_path / "bare", member="odd").arch == MEMBERS["odd"]
    # A single model refuses budget= and member=.
    nas.save(_net(tiny_space).extract(MEMBERS["tiny"]), tmp_path / "single")
    with pytest.raises(CheckpointError, match="not a family") as exc:
        nas.load(tmp_path / "single", budget="5ms")
    _one_line(exc)
    with pytest.raises(CheckpointError, match="not found"):
        nas.load(tmp_path / "nothing")


def test_save_family_refuses_bad_calls(tiny_space, tmp_path):
    net = _net(tiny_space)
    params = net.extract(MEMBERS["tiny"]).state_dict()
    count = sum(t.numel() for t in params.values())
    with pytest.raises(ValueError, match="at least one member"):
        save_family(net, {}, tmp_path / "a")
    with pytest.raises(ValueError, match="unknown members"):
        save_family(net, {"tiny": MEMBERS["tiny"]}, tmp_path / "a", {"other": {}})
    with pytest.raises(ValueError, match="params"):
        save_family(net, {"tiny": MEMBERS["tiny"]}, tmp_path / "a", {"tiny": {"params": 1}})
    with pytest.raises(ValueError, match="JSON"):
        save_family(net, {"tiny": MEMBERS["tiny"]}, tmp_path / "a", {"tiny": {"x": object()}})
    assert not (tmp_path / "a").exists()  # nothing written by a refused call
    save_family(net, {"tiny": MEMBERS["tiny"]}, tmp_path / "a", {"tiny": {"params": count}})
    assert load_family(tmp_path / "a").info("tiny")["params"] == count


def test_bad_family_folders_are_refused(tiny_space, tmp_path):
    save_family(_net(tiny_space), MEMBERS, tmp_path / "fam")
    weights, manifest = tmp_path / "fam" / FAMILY_WEIGHTS, tmp_path / "fam" / FAMILY_FILE
    good_weights, good_manifest = weights.read_bytes(), manifest.read_text()

    tampered = bytearray(good_weights)
    tampered[-100] ^= 0x01
    weights.write_bytes(bytes(tampered))
    with pytest.raises(CheckpointError, match="do not match the digest") as exc:
        load_family(tmp_path / "fam")
    _one_line(exc)
    weights.write_bytes(good_weights[:-10])
    with pytest.raises(CheckpointError, match="truncated or tampered"):
        nas.load(tmp_path / "fam", member="tiny")
    weights.write_bytes(good_weights)

    manifest.write_text(good_manifest[:-30])
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_family(tmp_path / "fam")
    data = json.loads(good_manifest)
    data["members"]["odd"]["arch"]["layers"][2]["mixer"] = "mamba9"
    manifest.write_text(json.dumps(data))
    with pytest.raises(CheckpointError) as exc:
        load_family(tmp_path / "fam")
    assert "'mamba9'" in _one_line(exc) and "attention" in str(exc.value)
    data = json.loads(good_manifest)
    data["parts"]["blocks.1.mixers.conv"]["dims"]["d"] = 16  # narrower than "wide" needs
    manifest.write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="blocks.1.mixers.conv") as exc:
        load_family(tmp_path / "fam")
    _one_line(exc)
    manifest.write_text(good_manifest)
    assert load_family(tmp_path / "fam").names == list(MEMBERS)
