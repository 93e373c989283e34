from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest

from conftest import make_tiny_space
from nas import Arch, ArchError, LayerArch, SearchSpace, SpaceError
from nas.search_space import MIXERS


def brute_force_archs(space: SearchSpace) -> list[Arch]:
    options = space.layer_options()
    archs = []
    for d in space.d_model:
        for depth in space.exits:
            for layers in itertools.product(options, repeat=depth):
                archs.append(Arch(d, tuple(layers)))
    return archs


def test_default_space_loads_and_has_every_mixer():
    space = SearchSpace.default()
    assert set(space.mixers) == set(MIXERS)
    assert space.name == "default"
    assert space.log10_size > 6


def test_log10_size_matches_enumeration():
    space = make_tiny_space(mixers=("attention", "pool", "skip"), exits=(1, 2), ffn=(0, 32))
    archs = brute_force_archs(space)
    assert len(set(archs)) == len(archs)
    assert space.log10_size == pytest.approx(math.log10(len(archs)), abs=1e-9)
    assert all(space.contains(a) for a in archs)


def test_layer_options_count_analytic():
    space = make_tiny_space()
    headed = sum(MIXERS[m].uses_heads for m in space.mixers)
    # sliding_window multiplies its head choices by the window choices
    expected = (
        (headed - 1) * len(space.heads)
        + len(space.heads) * len(space.windows)
        + (len(space.mixers) - headed)
    ) * len(space.ffn)
    assert len(space.layer_options()) == expected


def test_arch_json_round_trip_id_and_hash():
    space = SearchSpace.default()
    for seed in range(50):
        arch = space.sample(seed=seed)
        again = Arch.from_json(arch.to_json())
        assert again == arch and hash(again) == hash(arch) and again.id == arch.id
        assert json.loads(arch.to_json()) == arch.to_dict()
    a, b = space.sample(seed=1), space.sample(seed=2)
    assert (a == b) == (a.id == b.id)
    # Canonical: key order and whitespace in the input do not change the id.
    messy = json.dumps({"layers": [{"ffn": 0, "mixer": "pool"}] * 2, "d_model": 128}, indent=3)
    assert (
        Arch.from_json(messy).to_json()
        == '{"d_model":128,"layers":[{"ffn":0,"mixer":"pool"},{"ffn":0,"mixer":"pool"}]}'
    )


def test_sampling_is_seeded_and_valid():
    space = SearchSpace.default()
    assert space.sample(seed=3) == space.sample(seed=3)
    archs = space.sample_many(300, seed=0)
    assert archs == space.sample_many(300, seed=0)
    assert len(set(archs)) > 290
    for arch in archs:
        space.validate(arch)
    assert {layer.mixer for a in archs for layer in a.layers} == set(space.mixers)
    assert {a.depth for a in archs} == set(space.exits)


def test_sampling_with_one_mixer_keeps_every_other_choice_free():
    space = SearchSpace.default()
    rng = np.random.default_rng(0)
    for mixer in space.mixers:
        archs = [space.sample(rng=rng, mixer=mixer) for _ in range(40)]
        for arch in archs:
            space.validate(arch)
            assert {layer.mixer for layer in arch.layers} == {mixer}
        assert len({a.d_model for a in archs}) > 1 and len({a.depth for a in archs}) > 1
    with pytest.raises(ArchError, match="not one of"):
        make_tiny_space(mixers=("attention", "skip")).sample(seed=0, mixer="conv")


def test_sampling_with_given_layer_mixers_draws_only_the_rest():
    space = make_tiny_space()
    mixers = ("ssm", "attention", "skip")
    archs = [space.sample(seed=s, layer_mixers=mixers) for s in range(30)]
    assert all(tuple(la.mixer for la in a.layers) == mixers for a in archs)
    assert [space.validate(a) for a in archs] == archs
    assert len({a.d_model for a in archs}) > 1  # widths are still drawn
    with pytest.raises(ArchError, match="'conv' is not one of"):
        make_tiny_space(mixers=("attention", "skip")).sample(seed=0, layer_mixers=["conv"])
    with pytest.raises(ArchError, match="not an exit"):
        space.sample(seed=0, layer_mixers=["ssm"] * 4)


def test_extremes():
    space = SearchSpace.default()
    big, small = space.largest(), space.smallest()
    assert big.d_model == max(space.d_model) and big.depth == space.max_depth
    assert all(
        ly.mixer == "attention" and ly.heads == space.heads[-1] and ly.ffn == space.ffn[-1]
        for ly in big.layers
    )
    assert small.d_model == min(space.d_model) and small.depth == min(space.exits)
    assert all(ly.mixer == "skip" and ly.ffn == 0 for ly in small.layers)
    counts = [space.param_count(a) for a in space.sample_many(100, seed=1)]
    assert space.param_count(small) <= min(counts) and space.param_count(big) >= max(counts)


def test_extremes_with_given_mixers_keep_the_extreme_widths():
    space = SearchSpace.default()
    mixers = (["conv", "attention", "skip", "ssm"] * space.max_depth)[: space.max_depth]
    big = space.validate(space.largest(mixers))
    assert [ly.mixer for ly in big.layers] == mixers
    plain = space.largest()
    assert big.d_model == plain.d_model and big.depth == plain.depth
    assert all(ly.ffn == plain.layers[0].ffn for ly in big.layers)
    assert big.layers[1].heads == plain.layers[0].heads and big.layers[0].heads is None
    small = space.validate(space.smallest(["ssm"] * space.smallest().depth))
    assert small.d_model == space.smallest().d_model and small.layers[0].ffn == 0
    with pytest.raises(ArchError, match="need"):
        space.largest(["conv"])  # too few layers
    with pytest.raises(ArchError, match="each one of"):
        make_tiny_space(mixers=("attention", "skip")).largest(["conv"] * 3)


def test_validate_names_field_and_allowed_values():
    space = SearchSpace.default()
    bad = Arch(100, (LayerArch("attention", heads=3, ffn=100),) * 3)
    with pytest.raises(ArchError) as err:
        space.validate(bad)
    msg = str(err.value)
    assert f"d_model: 100 is not one of {list(space.d_model)}" in msg
    assert f"layers[0].heads: 3 is not one of {list(space.heads)}" in msg
    assert "layers[0].ffn: 100" in msg
    assert "3 layers is not an exit" in msg
    with pytest.raises(ArchError, match=r"layers\[1\].mixer: 'flash'"):
        space.validate(Arch(128, (LayerArch("pool"), LayerArch("flash"))))
    with pytest.raises(ArchError, match="has no heads"):
        space.validate(Arch(128, (LayerArch("pool", heads=2),) * 2))
    with pytest.raises(ArchError, match=r"window: None is not one of"):
        space.validate(Arch(128, (LayerArch("sliding_window", heads=2),) * 2))


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("[1, 2", "not valid JSON"),
        ('{"d_model": 128}', "field 'layers'"),
        (
            '{"d_model": "wide", "layers": [{"mixer": "pool"}]}',
            "field 'd_model' must be an integer",
        ),
        ('{"d_model": 128, "layers": [{"mixer": 5}]}', "layers[0]: field 'mixer' must be a string"),
        (
            '{"d_model": 128, "layers": [{"mixer": "pool", "colour": 1}]}',
            "unknown field(s) ['colour']",
        ),
        ('{"d_model": 128, "layers": [], "x": 1}', "unknown field(s) ['x']"),
    ],
)
def test_arch_from_json_errors(text, fragment):
    with pytest.raises(ArchError) as err:
        Arch.from_json(text, source="a.json")
    assert fragment in str(err.value) and str(err.value).startswith("a.json")


def test_space_file_round_trip_yaml_and_json(tmp_path):
    space = make_tiny_space()
    import yaml

    (tmp_path / "s.yaml").write_text(yaml.safe_dump(space.to_dict()))
    (tmp_path / "s.json").write_text(json.dumps(space.to_dict()))
    assert SearchSpace.from_file(tmp_path / "s.yaml") == space
    assert SearchSpace.from_file(tmp_path / "s.json") == space
    assert SearchSpace.from_file(tmp_path / "s.json").fingerprint == space.fingerprint


def test_space_errors_list_every_problem_and_name_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(
        "d_model: [256, 128]\nheads: [0]\nffn: [0, 64]\nmixers: [attention, flash]\n"
        "exits: [2]\ncolour: red\n"
    )
    with pytest.raises(SpaceError) as err:
        SearchSpace.from_file(path)
    msg = str(err.value)
    assert msg.startswith(str(path))
    assert "unknown field 'colour'" in msg
    with pytest.raises(SpaceError) as err:
        SearchSpace.from_dict(
            {k: v for k, v in yaml_load(path).items() if k != "colour"}, source=str(path)
        )
    msg = str(err.value)
    assert "field 'd_model' must be strictly ascending" in msg
    assert "field 'heads' values must be >= 1" in msg
    assert "unknown ['flash']" in msg
    (tmp_path / "broken.yaml").write_text("d_model: [1, 2\n")
    with pytest.raises(SpaceError, match="broken.yaml: not valid YAML"):
        SearchSpace.from_file(tmp_path / "broken.yaml")
    with pytest.raises(SpaceError, match="space file not found"):
        SearchSpace.from_file(tmp_path / "missing.yaml")
    with pytest.raises(SpaceError, match="windows"):
        make_tiny_space(windows=())


def yaml_load(path):
    import yaml

    return yaml.safe_load(path.read_text())


def test_restricted_spaces_reproduce_hat_and_matformer():
    hat = make_tiny_space(mixers=("attention",), windows=())
    assert {ly.mixer for a in hat.sample_many(50, 0) for ly in a.layers} == {"attention"}
    matformer = make_tiny_space(
        mixers=("attention",), d_model=(32,), heads=(2,), exits=(3,), windows=()
    )
    archs = matformer.sample_many(50, 0)
    assert {a.d_model for a in archs} == {32} and {a.depth for a in archs} == {3}
    assert {ly.heads for a in archs for ly in a.layers} == {2}
    assert len({ly.ffn for a in archs for ly in a.layers}) == 3
    assert matformer.log10_size == pytest.approx(3 * math.log10(3))


def test_encode():
    space = make_tiny_space()
    arch = Arch(32, (LayerArch("sliding_window", 2, 8, 64), LayerArch("pool", ffn=32)))
    vec = space.encode(arch)
    assert vec.shape == (space.encoding_size,) and vec.dtype == np.float32
    assert vec[0] == 1.0 and vec[1] == pytest.approx(2 / 3)
    width = len(space.mixers) + 4
    layer0 = vec[2 : 2 + width]
    assert (
        layer0[space.mixers.index("sliding_window")] == 1 and layer0[: len(space.mixers)].sum() == 1
    )
    assert list(layer0[len(space.mixers) :]) == [1.0, 1.0, 1.0, 1.0]
    assert not vec[2 + 2 * width :].any()  # third slot is past the exit
    many = space.encode_many(space.sample_many(20, 1))
    assert many.shape == (20, space.encoding_size)
    # distinct archs give distinct encodings
    archs = list(set(space.sample_many(200, 2)))
    assert len({space.encode(a).tobytes() for a in archs}) == len(archs)
