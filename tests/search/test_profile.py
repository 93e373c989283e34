"""Profiles: built from real measurements, stored as JSON in the cache, keyed by device.

Also the accuracy metrics, checked against numbers computed by hand.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import nas.search.profile as profile_mod
from conftest import make_tiny_space
from nas.search import measured_code
from nas.search.accuracy import (
    FEATURES,
    FLOPS,
    NOISE,
    OURS,
    AccuracyReport,
    build_report,
    error_metrics,
    kendall_tau,
    target_checks,
)
from nas.search.fingerprint import Workload, environment
from nas.search.kernel_table import entry_call, kernel_plan, layer_of, timed_part
from nas.search.measure import MeasureConfig, Measurer, random_model
from nas.search.measured_code import code_digest, files_digest, measured_files
from nas.search.profile import (
    Profile,
    ProfileConfig,
    ProfileError,
    cache_dir,
    check_device,
    check_profile,
    get_profile,
    load_profile,
    profile_path,
    total_steps,
)
from nas.search_space import Arch

QUICK = MeasureConfig(runs=3, warmup_iters=1, warmup_s=0.0, max_attempts=1, max_waits=0)
TINY_CONFIG = ProfileConfig(n_train=6, n_holdout=4, measure=QUICK, kernel_measure=QUICK)
TINY_WORKLOAD = {"seq_len": 8, "threads": 1}


@pytest.fixture(scope="module")
def space():
    return make_tiny_space(d_model=(16,), exits=(1, 2))


@pytest.fixture(scope="module")
def built(space, tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    steps = []
    profile, path, was_built = get_profile(
        space, Workload(**TINY_WORKLOAD), config=TINY_CONFIG, step=steps.append, root=root
    )
    return profile, path, was_built, steps, root


# ------------------------------------------------------------------ metrics
def test_error_metrics_against_hand_computed_numbers():
    measured = [10.0, 20.0, 40.0, 50.0]
    predicted = [10.4, 18.0, 44.0, 47.0]  # errors: 4%, 10%, 10%, 6%
    m = error_metrics(predicted, measured)
    assert m.n == 4
    assert m.mape == pytest.approx(7.5)
    assert m.within_5 == pytest.approx(0.25)
    assert m.within_10 == pytest.approx(1.0)
    assert m.max_ape == pytest.approx(10.0)
    assert m.kendall_tau == pytest.approx(1.0)


def test_kendall_tau_by_hand_and_against_scipy():
    # x order 1 2 3 4; y order 1 3 2 4: one discordant pair of six -> (5 - 1) / 6.
    assert kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)
    assert kendall_tau([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(kendall_tau([1, 1, 1], [1, 2, 3]))
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 6, 40).astype(float)  # with ties
    y = x + rng.integers(0, 4, 40)
    assert kendall_tau(x, y) == pytest.approx(stats.kendalltau(x, y).statistic)


def test_report_rows_noise_floor_and_targets():
    archs = make_tiny_space().sample_many(4, seed=0)
    measured = np.array([10.0, 20.0, 40.0, 50.0])
    rerun = np.array([10.1, 20.2, 39.6, 50.5])  # 1% each
    report = build_report(
        archs,
        measured,
        rerun,
        {OURS: measured * 1.02, FLOPS: measured * 1.3, FEATURES: measured * 0.9},
    )
    assert report.rows[NOISE].mape == pytest.approx(1.0)
    assert report.rows[OURS].mape == pytest.approx(2.0)
    checks = {name: ok for name, _, _, ok in target_checks(report)}
    assert all(checks.values()), checks  # 2% <= 4%, 100% within 10%, tau 1, 2 <= 30 / 3
    # Profiles are written with sorted keys; the table keeps its row order through that.
    again = AccuracyReport.from_dict(json.loads(json.dumps(report.to_dict(), sort_keys=True)))
    assert again.rows == report.rows and list(again.rows) == list(report.rows)
    assert "noise floor" in report.table() and "MISSED" not in report.table()


# ------------------------------------------------------------------ building and the cache
def test_built_profile_has_table_correction_and_report(built, space):
    profile, _, was_built, steps, _ = built
    assert was_built
    assert len(steps) == total_steps(space, TINY_CONFIG)  # one progress step per measurement
    table = profile.predictor.table
    assert np.all(table.embed_ms > 0) and np.all(table.exit_ms > 0)
    assert np.all(
        table.mixer_ms[:, :-1][:, [m[0] != "skip" for m in profile.predictor.encoder.mixers]] > 0
    )
    assert profile.predictor.correction is not None
    assert len(profile.train["archs"]) == TINY_CONFIG.n_train + 2  # plus the two extremes
    report = profile.accuracy
    assert report.n == TINY_CONFIG.n_holdout
    assert {OURS, FLOPS, FEATURES, NOISE} <= set(report.rows)
    # Held out means held out: no report arch was fitted on.
    train_ids = {Arch.from_json(j).id for j in profile.train["archs"]}
    assert train_ids and not set(report.arch_ids) & train_ids
    assert profile.env["threads"] == 1 and profile.env["seq_len"] == 8


def test_profile_round_trips_through_the_cache_as_json(built, space):
    profile, path, _, _, root = built
    assert path.parent == root and path.suffix == ".json"
    json.loads(path.read_text())  # plain JSON, nothing to unpickle
    again, again_path, was_built = get_profile(
        space, Workload(**TINY_WORKLOAD), config=TINY_CONFIG, root=root
    )
    assert not was_built and again_path == path
    archs = space.sample_many(30, seed=11)
    np.testing.assert_array_equal(again.predict(archs), profile.predict(archs))
    assert again.accuracy.rows == profile.accuracy.rows


def test_profile_key_changes_with_workload_and_config(space):
    env = environment(Workload(**TINY_WORKLOAD))
    path = profile_path(space, env, TINY_CONFIG)
    assert path != profile_path(space, environment(Workload(seq_len=16, threads=1)), TINY_CONFIG)
    assert path != profile_path(
        space, environment(Workload(seq_len=8, batch=2, threads=1)), TINY_CONFIG
    )
    assert path != profile_path(space, env, ProfileConfig())
    assert path != profile_path(make_tiny_space(d_model=(32,), exits=(1, 2)), env, TINY_CONFIG)


def test_cache_dir_follows_nas_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("NAS_CACHE_DIR", str(tmp_path))
    assert cache_dir() == tmp_path / "profiles"
    monkeypatch.delenv("NAS_CACHE_DIR")
    assert cache_dir().parts[-3:] == (".cache", "nas", "profiles")


def test_check_measures_unseen_archs_and_is_kept(built, space):
    profile, *_ = built
    seen = profile.seen_ids
    report = check_profile(profile, space, 3)
    assert report.n == 3 and not set(report.arch_ids) & seen
    assert profile.checks[-1]["arch_ids"] == report.arch_ids
    again = Profile.from_dict(json.loads(json.dumps(profile.to_dict())))
    assert again.checks == profile.checks


def test_a_profile_from_another_device_is_refused(built):
    profile, *_ = built
    data = json.loads(json.dumps(profile.to_dict()))
    data["env"]["torch"] = "0.0.1"
    with pytest.raises(ProfileError, match="another device"):
        check_device(Profile.from_dict(data))


def test_damaged_or_foreign_files_are_profile_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ProfileError, match="unreadable"):
        load_profile(bad)
    bad.write_text(json.dumps({"format": "something/else"}))
    with pytest.raises(ProfileError, match="not a nas.profile/1"):
        load_profile(bad)
    bad.write_text(json.dumps({"format": "nas.profile/1"}))
    with pytest.raises(ProfileError, match="damaged"):
        load_profile(bad)
    with pytest.raises(ProfileError, match="no such profile"):
        load_profile(tmp_path / "missing.json")


# ------------------------------------------------------------------ one definition of a block
def _hooked(model, capture_in=None, replace_in=None, capture_out=None):
    """Hooks on `model`'s first and last blocks, inside its real forward pass: record what
    enters the first block, or replace it, and record what leaves the last block."""

    def pre(module, args):
        if capture_in is not None:
            capture_in.append(args[0])
        if replace_in is not None:
            return (replace_in, *args[1:])
        return None

    def post(module, args, out):
        if capture_out is not None:
            capture_out.append(out)

    return [
        model.blocks[0].register_forward_pre_hook(pre),
        model.blocks[-1].register_forward_hook(post),
    ]


@pytest.mark.parametrize("instances", [1, 2])
def test_every_kernel_table_entry_computes_what_the_deployed_forward_computes(space, instances):
    """Each entry's timed call gives, bit for bit, what that part of `StaticModel.forward`
    gives inside a whole forward pass (seen through hooks, not through the table's code):
    the table cannot time other wiring than the deployed model runs."""
    measurer = Measurer(Workload(**TINY_WORKLOAD), QUICK)
    tokens = measurer.tokens_for(space.vocab_size)  # (B, T)
    seed = 5
    plan = kernel_plan(space)
    assert {kind for kind, _, _ in plan} == {"embed", "mixer", "ffn", "exit"}
    with torch.no_grad():
        for kind, d, choice in plan:
            layer = layer_of(kind, choice)
            got = entry_call(kind, layer, space, d, measurer, instances, seed)()
            x = measurer.hidden(d, seed)  # (B, T, d): the input the table feeds blocks
            if kind in ("mixer", "ffn"):
                model = random_model(space, Arch(d, (layer,) * instances), seed)
                out: list[torch.Tensor] = []
                handles = _hooked(model, replace_in=x, capture_out=out)
                model(tokens)
                for h in handles:
                    h.remove()
                assert len(got) == 1 and torch.equal(got[0], out[0]), (kind, d, choice)
                continue
            assert len(got) == instances
            for j in range(instances):
                model = random_model(space, Arch(d, (layer,)), seed + j)
                entering: list[torch.Tensor] = []
                if kind == "embed":
                    handles = _hooked(model, capture_in=entering)
                    model(tokens)
                    want = entering[0]  # what the forward hands its first block
                else:  # exit: the forward's logits for hidden states x at its last block
                    handles = _hooked(model, replace_in=x)
                    want = model(tokens)
                for h in handles:
                    h.remove()
                assert torch.equal(got[j], want), (kind, d, j)


def test_the_forward_is_its_timed_parts_in_turn(space):
    """`StaticModel.forward` is embed_tokens -> run_blocks -> read_out and nothing else,
    the parts `timed_part` hands the kernel table."""
    tokens = torch.randint(0, space.vocab_size, (2, 8), generator=torch.Generator().manual_seed(0))
    for arch in space.sample_many(6, seed=2) + [space.largest(), space.smallest()]:
        model = random_model(space, arch, seed=1)
        parts = [timed_part(kind, model) for kind in ("embed", "mixer", "exit")]
        with torch.no_grad():
            assert torch.equal(model(tokens), parts[2](parts[1](parts[0](tokens)))), arch.id
    with pytest.raises(ValueError, match="unknown kernel-table entry kind"):
        timed_part("norm", model)


# ------------------------------------------------------------------ code digest in the key
def test_code_digest_covers_the_kernels_and_the_block_wiring(tmp_path):
    files = measured_files()
    names = {(p.parent.name, p.name) for p in files}
    assert {("kernels", "attention.py"), ("kernels", "ssm.py")} <= names
    assert {("supernet", n) for n in ("network.py", "static.py", "mixers.py")} <= names
    assert code_digest() == files_digest(files)
    # A copy of the kernels digests as the kernels do; one changed byte changes the digest.
    kernels = [p for p in files if p.parent.name == "kernels"]
    copies = tmp_path / "kernels"
    copies.mkdir()
    for p in kernels:
        (copies / p.name).write_bytes(p.read_bytes())
    copied = [copies / p.name for p in kernels]
    assert files_digest(copied) == files_digest(kernels)
    target = copies / "attention.py"
    target.write_bytes(target.read_bytes().replace(b"softmax", b"softmaX", 1))
    assert files_digest(copied) != files_digest(kernels)


def test_a_profile_of_other_code_is_rebuilt_not_reused(built, space, tmp_path, monkeypatch):
    profile, path, *_ = built
    assert profile.code_digest == code_digest()  # the build records what it measured
    env = environment(Workload(**TINY_WORKLOAD))
    root = tmp_path / "cache"
    root.mkdir()
    (root / path.name).write_bytes(path.read_bytes())  # the cached profile, in a fresh cache
    rebuilt = []

    def fake_build(space_, workload, config=None, step=None):
        rebuilt.append(workload)
        return Profile.from_dict(json.loads(path.read_text()))

    monkeypatch.setattr(profile_mod, "build_profile", fake_build)
    same, same_path, was_built = get_profile(
        space, Workload(**TINY_WORKLOAD), config=TINY_CONFIG, root=root
    )
    assert not was_built and not rebuilt and same_path == root / path.name
    # The kernels change: the key changes with them and the cached profile is not reused.
    monkeypatch.setattr(measured_code, "code_digest", lambda: "0123456789abcdef")
    assert profile_path(space, env, TINY_CONFIG, root) != root / path.name
    _, new_path, was_built = get_profile(
        space, Workload(**TINY_WORKLOAD), config=TINY_CONFIG, root=root
    )
    assert was_built and len(rebuilt) == 1 and new_path != root / path.name


def test_a_new_correction_fit_gives_a_new_key(space, monkeypatch):
    """The correction is fitted at build time and stored: a profile fitted the old way
    must not be reused once the fit changes (predictor.FIT_VERSION)."""
    from nas.search import profile_config

    env = environment(Workload(**TINY_WORKLOAD))
    before = profile_path(space, env, TINY_CONFIG)
    monkeypatch.setattr(profile_config, "FIT_VERSION", profile_config.FIT_VERSION + 1)
    assert profile_path(space, env, TINY_CONFIG) != before


def test_a_profile_given_explicitly_for_other_code_is_refused(built, monkeypatch):
    profile, *_ = built
    check_device(profile)  # this code, this device: accepted
    for digest in ("0123456789abcdef", ""):  # other code, or a profile that never said
        data = json.loads(json.dumps(profile.to_dict()))
        data["code_digest"] = digest
        with pytest.raises(ProfileError, match="other kernel or model code") as err:
            check_device(Profile.from_dict(data))
        assert "\n" not in str(err.value) and "nas profile" in str(err.value)
