"""Supernet training: sandwich rule, distillation, exits, schedule, determinism and exact resume."""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from conftest import make_tiny_space
from nas import Arch, ArchError, CheckpointError, DataError, DeviceError, LayerArch, Supernet
from nas.core.errors import NasError
from nas.supernet.batches import eval_batches
from nas.supernet.checkpoint import checkpoint_path, load_supernet, read_checkpoint
from nas.supernet.corpus import load_corpus
from nas.supernet.device import resolve_device
from nas.supernet.sandwich import (
    cross_entropy,
    distillation,
    exit_weights,
    exits_upto,
    sandwich_step,
)
from nas.supernet.training import (
    METRICS_FILE,
    MetricsLog,
    TrainConfig,
    evaluate,
    fair_students,
    lr_at,
    read_manifest,
    sample_student,
    train,
    usage_key,
)

TINY = {"batch_size": 2, "seq_len": 16, "eval_batches": 2, "reference_archs": 2, "warmup_steps": 2}


pytestmark = pytest.mark.usefixtures("one_thread")


def _losses(run_dir):
    records = MetricsLog(run_dir / METRICS_FILE).read()
    train_curve = [
        (r["step"], r["loss_largest"], r["loss_smallest"], r["grad_norm"], r["lr"])
        for r in records
        if r["kind"] == "train"
    ]
    evals = [(r["step"], r["val_loss"]) for r in records if r["kind"] == "eval"]
    return train_curve, evals


def test_resumed_run_equals_the_uninterrupted_run(tiny_space, corpus, tmp_path):
    config = TrainConfig(steps=8, checkpoint_every=3, eval_every=4, **TINY)
    whole = train(tiny_space, corpus, config, tmp_path / "whole", progress=False)

    part = tmp_path / "part"
    stopped = train(tiny_space, corpus, config, part, progress=False, stop_after=3)
    assert stopped.step == 3 and read_manifest(part)["status"] == "stopped"
    # What a kill after step 3's checkpoint leaves behind: records past it, a torn line.
    with open(part / METRICS_FILE, "a") as f:
        f.write(json.dumps({"kind": "train", "step": 4, "loss_largest": 0.0}) + "\n")
        f.write('{"kind": "train", "st')
    resumed = train(tiny_space, corpus, config, part, resume=True, progress=False)

    assert resumed.step == whole.step == 8
    assert _losses(part) == _losses(tmp_path / "whole")  # exactly equal, every step
    assert resumed.val_loss == whole.val_loss
    a, b = read_checkpoint(whole.checkpoint), read_checkpoint(resumed.checkpoint)
    assert all(torch.equal(a.model[k], b.model[k]) for k in a.model)
    assert a.state == b.state  # RNG streams and mixer usage counts too


def test_runs_are_deterministic_for_a_seed(tiny_space, corpus, tmp_path):
    config = TrainConfig(steps=4, eval_every=4, **TINY)
    train(tiny_space, corpus, config, tmp_path / "a", progress=False)
    train(tiny_space, corpus, config, tmp_path / "b", progress=False)
    other = TrainConfig(steps=4, eval_every=4, seed=1, **TINY)
    train(tiny_space, corpus, other, tmp_path / "c", progress=False)
    assert _losses(tmp_path / "a") == _losses(tmp_path / "b")
    assert _losses(tmp_path / "a")[0] != _losses(tmp_path / "c")[0]


def test_the_supernet_learns(tiny_space, corpus, tmp_path):
    config = TrainConfig(steps=40, eval_every=20, lr=3e-3, **TINY)
    result = train(tiny_space, corpus, config, tmp_path / "run", progress=False)
    first_eval = _losses(tmp_path / "run")[1][0][1]
    assert result.val_loss["largest"] < math.log(256) - 1.5  # well below uniform, 5.55
    assert result.val_loss["smallest"] < math.log(256) - 1.0
    assert result.val_loss["largest"] < first_eval["largest"]
    manifest = read_manifest(tmp_path / "run")
    assert manifest["status"] == "complete" and manifest["fingerprint"] == tiny_space.fingerprint
    assert set(manifest["reference_archs"]) == {"largest", "smallest", "ref0", "ref1"}


def test_sandwich_step_runs_largest_smallest_and_k_random_archs_at_every_exit(
    tiny_space, monkeypatch
):
    net = Supernet(tiny_space, seed=0)
    calls = []
    original = Supernet.forward

    def spy(self, tokens, arch, exits=None):
        calls.append((arch, exits))
        return original(self, tokens, arch, exits=exits)

    monkeypatch.setattr(Supernet, "forward", spy)
    students = [tiny_space.smallest(), *tiny_space.sample_many(2, seed=3)]
    x = torch.randint(0, 256, (2, 8))
    losses = sandwich_step(
        net, x, x, tiny_space.largest(), students, 0.5, 0.25, torch.device("cpu")
    )
    assert [arch for arch, _ in calls] == [tiny_space.largest(), *students]
    for arch, exits in calls:
        assert exits == [e for e in tiny_space.exits if e <= arch.depth]
    assert set(losses) == {"largest", "smallest", "passes"} and losses["passes"] == 4
    # Every arch's gradient lands in the shared weights, including each exit head used.
    for e in tiny_space.exits:
        assert net.exits[str(e)].w_out_0.grad is not None


def _every_pass_gradients(net, x, largest, students, distill_weight, early_exit_weight):
    """The sandwich's gradients the naive way: every drawn arch runs its own pass."""
    net.zero_grad(set_to_none=True)
    space = net.space
    outs = net(x, largest, exits=exits_upto(space, largest.depth))
    w = exit_weights(exits_upto(space, largest.depth), early_exit_weight)
    sum(w[e] * cross_entropy(outs[e], x) for e in w).backward()
    teacher = torch.log_softmax(outs[largest.depth].detach().flatten(0, 1), dim=-1)
    for arch in students:
        outs = net(x, arch, exits=exits_upto(space, arch.depth))
        w = exit_weights(exits_upto(space, arch.depth), early_exit_weight)
        loss = sum(
            w[e]
            * (
                distill_weight * distillation(outs[e], teacher)
                + (1 - distill_weight) * cross_entropy(outs[e], x)
            )
            for e in w
        )
        loss.backward()
    return {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("distill_weight", [0.0, 0.5])
def test_repeated_archs_run_once_with_the_gradients_of_every_pass(tiny_space, distill_weight):
    net = Supernet(tiny_space, seed=0)
    largest, (a, b) = tiny_space.largest(), tiny_space.sample_many(2, seed=5)
    # The smallest is the largest here, as in a sub-supernet whose layers are all pinned.
    students = [largest, a, b, a, a, largest]
    x = torch.randint(0, 256, (2, 8), generator=torch.Generator().manual_seed(1))
    expected = _every_pass_gradients(net, x, largest, students, distill_weight, 0.25)
    net.zero_grad(set_to_none=True)
    losses = sandwich_step(net, x, x, largest, students, distill_weight, 0.25, torch.device("cpu"))
    got = {n: p.grad for n, p in net.named_parameters() if p.grad is not None}
    assert got.keys() == expected.keys()
    for name, grad in expected.items():
        torch.testing.assert_close(got[name], grad, rtol=1e-5, atol=1e-6, msg=name)
    # Distilled, a student equal to the largest has another loss, so it runs on its own.
    assert losses["passes"] == (3 if distill_weight == 0 else 4)
    assert losses["smallest"] == pytest.approx(losses["largest"], rel=1e-6)


def test_a_fully_pinned_run_logs_one_pass_a_step(tiny_space, corpus, tmp_path):
    pins = tuple(f"{i}:conv" for i in range(tiny_space.max_depth))
    one = make_tiny_space(d_model=(32,), heads=(2,), ffn=(32,), exits=(3,))
    config = TrainConfig(steps=3, pinned_mixers=pins, distill_weight=0.0, **TINY)
    train(one, corpus, config, tmp_path / "run", progress=False)
    steps = [r for r in MetricsLog(tmp_path / "run" / METRICS_FILE).read() if r["kind"] == "train"]
    # Largest, smallest and the random students are all the one arch left: one pass.
    assert [r["passes"] for r in steps] == [1, 1, 1]
    # The bench's sum of these counts: tests/bench/test_train_accounting.py.


def test_usage_counts_which_mixer_weights_each_step_trained(tiny_space, corpus, tmp_path):
    config = TrainConfig(steps=6, **TINY)
    result = train(tiny_space, corpus, config, tmp_path / "run", progress=False)
    usage = read_checkpoint(result.checkpoint).state["usage"]
    largest, smallest = tiny_space.largest(), tiny_space.smallest()
    for i, layer in enumerate(largest.layers):
        assert usage[usage_key(i, layer.mixer)] == 6  # the largest runs at every step
    for i, layer in enumerate(smallest.layers):  # so does the smallest (skip owns no weights)
        assert layer.mixer == "skip" or usage[usage_key(i, layer.mixer)] == 6
    assert all(0 < n <= 6 for n in usage.values())
    # What the bench makes of these counts: tests/bench/test_train_accounting.py.


def test_distillation_is_zero_only_at_the_teacher():
    logits = torch.randn(2, 5, 256)
    teacher = torch.log_softmax(logits.flatten(0, 1), dim=-1)
    assert distillation(logits, teacher).abs() < 1e-5
    assert distillation(torch.randn(2, 5, 256), teacher) > 0.1


def test_exit_weights_favour_the_arch_own_exit():
    w = exit_weights([1, 2, 3], 0.5)
    assert w[3] == 2 * w[1] and math.isclose(sum(w.values()), 1.0)
    assert exit_weights([2], 0.5) == {2: 1.0}


def test_lr_warms_up_then_decays_by_cosine():
    config = TrainConfig(steps=100, warmup_steps=10, lr=1e-3, min_lr_ratio=0.1)
    lrs = [lr_at(s, config) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in itertools.pairwise(lrs[9:]))
    assert lrs[-1] == pytest.approx(1e-4)


def test_devices():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="CUDA is not available"):
            resolve_device("cuda")


def test_run_folder_guards(tiny_space, corpus, tmp_path):
    config = TrainConfig(steps=2, **TINY)
    train(tiny_space, corpus, config, tmp_path / "run", progress=False)
    with pytest.raises(CheckpointError, match="--resume"):
        train(tiny_space, corpus, config, tmp_path / "run", progress=False)
    longer = TrainConfig(steps=3, **TINY)
    with pytest.raises(CheckpointError, match="steps 2 \\(given 3\\)"):
        train(tiny_space, corpus, longer, tmp_path / "run", resume=True, progress=False)


def test_data_must_fit_the_space(tiny_space, tmp_path, monkeypatch):
    monkeypatch.setenv("NAS_CACHE_DIR", str(tmp_path / "cache"))
    np.save(tmp_path / "wide.npy", np.arange(3000, dtype=np.int32) % 1000)
    wide = load_corpus(tmp_path / "wide.npy", progress=False)
    with pytest.raises(DataError, match="beyond the space's vocab_size 256"):
        train(tiny_space, wide, TrainConfig(steps=1, **TINY), tmp_path / "a", progress=False)
    (tmp_path / "short.txt").write_text("x = 1\n" * 20)
    short = load_corpus(tmp_path / "short.txt", progress=False)
    with pytest.raises(DataError, match="fewer than one window"):
        train(tiny_space, short, TrainConfig(steps=1, **TINY), tmp_path / "b", progress=False)


def test_students_are_one_mixer_stacks_at_the_asked_share(tiny_space):
    def homogeneous(share: float, seed: int) -> float:
        rng = np.random.default_rng(seed)
        archs = [sample_student(tiny_space, rng, share) for _ in range(2000)]
        return np.mean([len({la.mixer for la in a.layers}) == 1 for a in archs])

    # Uniform draws give one-mixer stacks only by chance (depth >= 2 layers here):
    # chance = sum over depths of 1/|mixers|^(depth-1), averaged over the exits.
    n_mix = len(tiny_space.mixers)
    chance = np.mean([n_mix ** (1 - depth) for depth in tiny_space.exits])
    assert homogeneous(0.0, 1) == pytest.approx(chance, abs=0.03)
    assert homogeneous(0.5, 1) == pytest.approx(0.5 + 0.5 * chance, abs=0.04)
    # A share of 0 leaves the arch stream exactly as plain uniform sampling.
    rng_a, rng_b = np.random.default_rng(5), np.random.default_rng(5)
    assert [sample_student(tiny_space, rng_a, 0.0) for _ in range(20)] == [
        tiny_space.sample(rng=rng_b) for _ in range(20)
    ]


def test_fair_students_run_every_mixer_at_every_layer_once(tiny_space):
    rng = np.random.default_rng(3)
    for _ in range(5):
        archs = fair_students(tiny_space, rng)
        assert len(archs) == len(tiny_space.mixers)
        assert all(a.depth == tiny_space.max_depth for a in archs)
        for i in range(tiny_space.max_depth):  # each layer: a permutation of the mixers
            assert sorted(a.layers[i].mixer for a in archs) == sorted(tiny_space.mixers)
        assert [tiny_space.validate(a) for a in archs] == archs
    # The permutations are drawn: layer 0's assignment is not the same every step.
    firsts = {tuple(a.layers[0].mixer for a in fair_students(tiny_space, rng)) for _ in range(10)}
    assert len(firsts) > 1


def test_a_fair_run_trains_every_mixer_slot_at_every_step(tiny_space, corpus, tmp_path):
    result = train(tiny_space, corpus, TrainConfig(steps=3, fair=True, **TINY), tmp_path / "r")
    usage = read_checkpoint(result.checkpoint).state["usage"]
    slots = [usage_key(i, m) for i in range(tiny_space.max_depth) for m in tiny_space.mixers]
    assert usage == {key: 3 for key in slots}


def test_sandwich_random_mixers_train_the_extremes_with_drawn_mixers(tiny_space, corpus, tmp_path):
    """Without random students, only the sandwich trains: with fixed extremes, slot 0 sees
    just their two mixers; with drawn mixers, it sees most of the space's."""

    def slot0_mixers(config, folder):
        result = train(tiny_space, corpus, config, tmp_path / folder, progress=False)
        usage = read_checkpoint(result.checkpoint).state["usage"]
        return {key for key in usage if key.startswith("0:")}

    fixed = TrainConfig(steps=8, random_archs=0, **TINY)
    extremes = {tiny_space.largest().layers[0].mixer, tiny_space.smallest().layers[0].mixer}
    assert slot0_mixers(fixed, "fixed") == {usage_key(0, m) for m in extremes}
    drawn = replace(fixed, sandwich_random_mixers=True)
    assert len(slot0_mixers(drawn, "drawn")) >= len(tiny_space.mixers) // 2


@pytest.mark.parametrize(
    "options",
    [{}, {"fair": True}, {"sandwich_random_mixers": True}, {"homogeneous_share": 1.0}],
    ids=["default", "fair", "random-extremes", "homogeneous"],
)
def test_pinned_mixers_are_the_only_ones_a_pinned_slot_trains(
    tiny_space, corpus, tmp_path, options
):
    """A sub-supernet of a few-shot split: every arch of every sandwich runs conv at slot 1,
    so slot 1's other mixers never train, while the unpinned slots still see several."""
    config = TrainConfig(steps=6, pinned_mixers=("1:conv",), **TINY, **options)
    result = train(tiny_space, corpus, config, tmp_path / "r", progress=False)
    usage = read_checkpoint(result.checkpoint).state["usage"]
    assert {key for key in usage if key.startswith("1:")} == {usage_key(1, "conv")}
    assert len({key for key in usage if key.startswith("0:")}) >= 2
    # Each step's largest runs the deepest exit, so slot 1 trains at every step.
    assert usage[usage_key(1, "conv")] == 6
    # It validates only archs it trains: its reference archs have the pin too.
    refs = [Arch.from_dict(a) for a in read_manifest(tmp_path / "r")["reference_archs"].values()]
    assert all(a.layers[1].mixer == "conv" for a in refs if a.depth > 1)
    assert sum(a.depth > 1 for a in refs) >= 2


def test_sample_student_with_pins_keeps_the_other_mixers_and_the_unpinned_stream(tiny_space):
    rng = np.random.default_rng(4)
    for _ in range(200):
        arch = tiny_space.validate(sample_student(tiny_space, rng, 0.5, {0: "ssm"}))
        assert arch.layers[0].mixer == "ssm"
    fair = fair_students(tiny_space, rng, {2: "pool"})
    assert [a.layers[2].mixer for a in fair] == ["pool"] * len(tiny_space.mixers)
    assert sorted(a.layers[1].mixer for a in fair) == sorted(tiny_space.mixers)
    rng_a, rng_b = np.random.default_rng(5), np.random.default_rng(5)
    assert [sample_student(tiny_space, rng_a, 0.5, {}) for _ in range(20)] == [
        sample_student(tiny_space, rng_b, 0.5) for _ in range(20)
    ]


@pytest.mark.parametrize(
    "pins, match",
    [
        (("conv",), "is not SLOT:MIXER"),
        (("x:conv",), "is not SLOT:MIXER"),
        (("3:conv",), "need a layer slot below 3"),
        (("0:mamba",), "need a layer slot below 3"),
        (("0:conv", "0:pool"), "pinned once"),
    ],
)
def test_bad_pins_are_named(tiny_space, corpus, tmp_path, pins, match):
    with pytest.raises(NasError, match=match):
        train(tiny_space, corpus, TrainConfig(pinned_mixers=pins, **TINY), tmp_path / "r")
    assert not (tmp_path / "r").exists()


def test_pinned_config_round_trips(tiny_space):
    config = TrainConfig(pinned_mixers=["0:conv"])  # as JSON gives it back
    assert config.pinned_mixers == ("0:conv",)
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert config.pins(tiny_space) == {0: "conv"}


def _mixed_family(space):
    """Two sampled archs whose mixers vary by layer, as canonical JSON."""
    archs = [a for a in space.sample_many(50, seed=11) if len({la.mixer for la in a.layers}) > 1]
    return tuple(a.to_json() for a in archs[:2])


def test_family_archs_train_at_every_step_beside_an_unchanged_random_stream(
    tiny_space, corpus, tmp_path
):
    family = _mixed_family(tiny_space)
    plain = train(tiny_space, corpus, TrainConfig(steps=5, **TINY), tmp_path / "a", progress=False)
    config = TrainConfig(steps=5, family=family, **TINY)
    with_family = train(tiny_space, corpus, config, tmp_path / "b", progress=False)
    usage = read_checkpoint(with_family.checkpoint).state["usage"]
    for arch in config.family_archs(tiny_space):  # every layer's mixer trained at every step
        assert all(
            usage[usage_key(i, la.mixer)] == 5
            for i, la in enumerate(arch.layers)
            if la.mixer != "skip"
        )
    # The family adds students; the random ones are drawn exactly as without it.
    usage_plain = read_checkpoint(plain.checkpoint).state["usage"]
    assert all(usage[key] >= n for key, n in usage_plain.items())
    assert (
        read_checkpoint(with_family.checkpoint).state["arch_rng"]
        == (read_checkpoint(plain.checkpoint).state["arch_rng"])
    )


def test_a_family_member_learns_more_than_it_does_without_the_family(tiny_space, corpus, tmp_path):
    family = _mixed_family(tiny_space)[:1]
    member = Arch.from_json(family[0])
    losses = {}
    for name, fam in (("plain", ()), ("family", family)):
        config = TrainConfig(steps=30, eval_every=30, family=fam, **TINY)
        train(tiny_space, corpus, config, tmp_path / name, progress=False)
        net = load_supernet(tmp_path / name)
        batches = eval_batches(corpus.val, 2, 16, 8)
        losses[name] = evaluate(net, {"member": member}, batches, torch.device("cpu"))["member"]
    assert losses["family"] < losses["plain"] - 0.05, losses


def test_family_config_round_trips_and_names_a_bad_member(tiny_space):
    family = _mixed_family(tiny_space)
    config = TrainConfig(family=list(family))  # as JSON gives it back
    assert config.family == family
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    too_wide = Arch(4096, (LayerArch("conv", ffn=32),)).to_json()
    with pytest.raises(ArchError, match="family arch 1: "):
        TrainConfig(family=(family[0], too_wide)).family_archs(tiny_space)
    with pytest.raises(ArchError, match="family arch 0: not valid JSON"):
        TrainConfig(family=("{",)).family_archs(tiny_space)


def test_init_from_starts_at_another_runs_weights(tiny_space, corpus, tmp_path):
    source = train(
        tiny_space, corpus, TrainConfig(steps=30, **TINY), tmp_path / "a", progress=False
    )
    fresh = TrainConfig(steps=1, seed=1, **TINY)
    train(tiny_space, corpus, fresh, tmp_path / "fresh", progress=False)
    warm = TrainConfig(steps=1, seed=1, init_from=str(source.run_dir), **TINY)
    train(tiny_space, corpus, warm, tmp_path / "warm", progress=False)
    first_fresh, first_warm = _losses(tmp_path / "fresh")[0][0], _losses(tmp_path / "warm")[0][0]
    assert first_warm[1] < first_fresh[1] - 1.0  # the largest arch's loss at step 1
    # The batch stream continues the source's: step 1's batch is the source's step 31.
    cont = TrainConfig(steps=31, **TINY)
    train(tiny_space, corpus, cont, tmp_path / "cont", progress=False, stop_after=31)
    assert (
        read_checkpoint(tmp_path / "warm").state["batch_rng"]
        == (read_checkpoint(tmp_path / "cont").state["batch_rng"])
    )
    # A checkpoint of another space is refused before anything is written.
    other = make_tiny_space(d_model=(16, 48))
    bad = TrainConfig(steps=1, init_from=str(source.run_dir), **TINY)
    with pytest.raises(CheckpointError, match="another search space"):
        train(other, corpus, bad, tmp_path / "bad", progress=False)
    assert not (tmp_path / "bad").exists()


def test_a_run_resumes_from_its_source_moved_but_not_from_another_source(
    tiny_space, corpus, tmp_path
):
    train(tiny_space, corpus, TrainConfig(steps=2, **TINY), tmp_path / "a", progress=False)
    warm = TrainConfig(steps=3, init_from=str(tmp_path / "a"), **TINY)
    train(tiny_space, corpus, warm, tmp_path / "warm", progress=False, stop_after=1)
    # The source moves: the run is told its new place, and resumes where it stopped.
    (tmp_path / "a").rename(tmp_path / "moved")
    moved = replace(warm, init_from=str(tmp_path / "moved"))
    train(tiny_space, corpus, moved, tmp_path / "warm", resume=True, progress=False, stop_after=2)
    state = read_checkpoint(tmp_path / "warm").state
    assert state["step"] == 2
    assert state["config"]["init_from"] == str(checkpoint_path((tmp_path / "moved").resolve()))
    # Another run where the source was (other weights) is not its source: refused.
    other = TrainConfig(steps=2, seed=1, **TINY)
    train(tiny_space, corpus, other, tmp_path / "a", progress=False)
    with pytest.raises(CheckpointError, match="a resumed run keeps its settings; this run has"):
        train(tiny_space, corpus, warm, tmp_path / "warm", resume=True, progress=False)
    with pytest.raises(CheckpointError, match="keeps its settings"):  # nor are other settings
        train(tiny_space, corpus, replace(moved, lr=1e-3), tmp_path / "warm", resume=True)
    train(tiny_space, corpus, moved, tmp_path / "warm", resume=True, progress=False)
    assert read_checkpoint(tmp_path / "warm").state["step"] == 3


def test_a_branch_continues_its_source_as_one_run(tiny_space, corpus, tmp_path):
    """Branched at step 3 of 8 with nothing changed, a run is the uninterrupted run; with a
    pin, it continues the source's schedule (no second warmup) and trains only the pin."""
    config = TrainConfig(steps=8, checkpoint_every=3, eval_every=4, **TINY)
    train(tiny_space, corpus, config, tmp_path / "whole", progress=False)
    train(tiny_space, corpus, config, tmp_path / "src", progress=False, stop_after=3)

    same = replace(config, branch_from=str(tmp_path / "src"))
    train(tiny_space, corpus, same, tmp_path / "same", progress=False)
    whole_curve, whole_evals = _losses(tmp_path / "whole")
    assert _losses(tmp_path / "same") == (whole_curve[3:], whole_evals)
    a, b = read_checkpoint(tmp_path / "whole"), read_checkpoint(tmp_path / "same")
    assert all(torch.equal(a.model[k], b.model[k]) for k in a.model)

    pinned_cfg = replace(same, pinned_mixers=("1:conv",))
    train(tiny_space, corpus, pinned_cfg, tmp_path / "pinned", progress=False)
    curve = _losses(tmp_path / "pinned")[0]
    assert [step for step, *_ in curve] == list(range(4, 9))
    assert [lr for *_, lr in curve] == [lr_at(s, config) for s in range(3, 8)]
    source_usage = read_checkpoint(tmp_path / "src").state["usage"]
    usage = read_checkpoint(tmp_path / "pinned").state["usage"]
    # Slot 1 trained only conv after the branch, at every step (the largest runs slot 1).
    for key in usage:
        if key.startswith("1:"):
            grown = usage[key] - source_usage.get(key, 0)
            assert grown == (5 if key == usage_key(1, "conv") else 0), key
    # The branch resumes as any run does, and keeps its settings.
    train(tiny_space, corpus, pinned_cfg, tmp_path / "pinned", resume=True, progress=False)
    with pytest.raises(CheckpointError, match="pinned_mixers"):
        train(tiny_space, corpus, same, tmp_path / "pinned", resume=True, progress=False)


@pytest.mark.parametrize(
    "change, match",
    [
        ({"lr": 1e-3}, "a branch keeps its source's settings: lr 0.003 \\(given 0.001\\)"),
        ({"steps": 3}, "no schedule is left to branch"),
    ],
)
def test_a_branch_is_refused_unless_it_only_adds_pins(tiny_space, corpus, tmp_path, change, match):
    config = TrainConfig(steps=8, checkpoint_every=3, **TINY)
    train(tiny_space, corpus, config, tmp_path / "src", progress=False, stop_after=3)
    if change.get("steps") == 3:  # a finished source: nothing of its schedule is left
        train(tiny_space, corpus, replace(config, steps=3), tmp_path / "src3", progress=False)
        source = tmp_path / "src3"
    else:
        source = tmp_path / "src"
    bad = replace(config, branch_from=str(source), pinned_mixers=("0:conv",), **change)
    with pytest.raises(CheckpointError, match=match):
        train(tiny_space, corpus, bad, tmp_path / "bad", progress=False)
    assert not (tmp_path / "bad").exists()
    with pytest.raises(NasError, match="exclude each other"):
        replace(config, branch_from="a", init_from="b")


def _outside_prefix(module, dims):
    """{param name: boolean mask of the entries past the prefix `dims`} of an unchunked
    ElasticParams: the widths that an arch of those dims never reads."""
    masks = {}
    for spec in module.specs:
        param = getattr(module, spec.name)
        inside = torch.zeros_like(param, dtype=torch.bool)
        prefix = tuple(slice(0, dims[k]) for k in spec.dims)
        inside[(slice(None), *prefix) if spec.pack > 1 else prefix] = True
        masks[spec.name] = ~inside
    return masks


def test_a_family_only_run_trains_only_the_family_arch_weights(tiny_space, corpus, tmp_path):
    source = train(
        tiny_space, corpus, TrainConfig(steps=4, **TINY), tmp_path / "src", progress=False
    )
    # Narrower than the space (16 of 32), shallower (2 of 3 layers), one head of two.
    arch = Arch(16, (LayerArch("attention", heads=1, ffn=32), LayerArch("conv", ffn=0)))
    config = TrainConfig(
        steps=8,
        family=(arch.to_json(),),
        sandwich=False,
        init_from=str(source.checkpoint),
        weight_decay=0.0,  # decay would shrink whole matrices, prefixes and the rest alike
        lr=1e-3,
        **{**TINY, "reference_archs": 4},
    )
    tuned = train(tiny_space, corpus, config, tmp_path / "tuned", progress=False)
    before, after = load_supernet(source.checkpoint), load_supernet(tuned.checkpoint)
    b, a = dict(before.named_parameters()), dict(after.named_parameters())
    dims = before.consts.dims
    read = {  # part the arch reads -> the dims it reads it at
        "blocks.0.norm_mix": dims(16),
        "blocks.0.mixers.attention": dims(16, 1),
        "blocks.0.norm_ffn": dims(16),
        "blocks.0.ffn": dims(16, 1, 32),
        "blocks.1.norm_mix": dims(16),
        "blocks.1.mixers.conv": dims(16),
    }
    outside = {
        f"{part}.{name}": mask
        for part, part_dims in read.items()
        for name, mask in _outside_prefix(before.get_submodule(part), part_dims).items()
    }
    for name in b:
        if name in outside:  # changed inside the arch's prefix only
            assert not torch.equal(b[name], a[name]), name
            assert torch.equal(b[name][outside[name]], a[name][outside[name]]), name
        elif name.startswith(("embedding.", "exits.1.", "exits.2.")) and not name.endswith("_16"):
            assert not torch.equal(b[name], a[name]), name  # all but the chunk past width 16
        else:  # other mixers, layer 2, layer 1's FFN, exit 3, the chunks past width 16
            assert torch.equal(b[name], a[name]), name
    # Only the family is trained and validated, and its loss goes down.
    records = MetricsLog(tuned.run_dir / METRICS_FILE).read()
    steps = [r for r in records if r["kind"] == "train"]
    assert all(r["passes"] == 1 and len(r["loss_family"]) == 1 for r in steps)
    assert set(read_manifest(tuned.run_dir)["reference_archs"]) == {"family0"}
    batches = eval_batches(corpus.val, 2, 16, 8)
    cpu = torch.device("cpu")
    assert (
        evaluate(after, {"a": arch}, batches, cpu)["a"]
        < evaluate(before, {"a": arch}, batches, cpu)["a"] - 0.05
    )
    usage = read_checkpoint(tuned.checkpoint).state["usage"]
    assert usage == {usage_key(0, "attention"): 8, usage_key(1, "conv"): 8}


def test_sandwich_false_needs_a_family_and_round_trips(tiny_space):
    with pytest.raises(NasError, match="sandwich=False trains only the family"):
        TrainConfig(sandwich=False)
    with pytest.raises(NasError, match="need sandwich=True|shape the sandwich"):
        TrainConfig(sandwich=False, family=_mixed_family(tiny_space), fair=True)
    config = TrainConfig(sandwich=False, family=_mixed_family(tiny_space))
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
