"""Few-shot supernets: a one-shot phase, one pinned sub-supernet per mixer combination,
a folder that records them, and resuming."""

from __future__ import annotations

import shutil

import pytest
from bench_modules import bench_module

from conftest import make_tiny_space
from nas import Arch, CheckpointError, LayerArch, NasError
from nas.supernet.checkpoint import checkpoint_path, read_checkpoint
from nas.supernet.few_shot import (
    FEW_SHOT_FILE,
    FewShotRuns,
    check_split,
    load_few_shot,
    train_few_shot,
)
from nas.supernet.training import METRICS_FILE, MetricsLog, TrainConfig

logged_passes = bench_module("train_accounting").logged_passes  # the bench's pass count

TINY = {"batch_size": 2, "seq_len": 16, "eval_batches": 2, "reference_archs": 2, "warmup_steps": 1}

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def two_mixers():
    """Two mixers, every arch at least 2 layers deep: slots 0 and 1 can be split."""
    return make_tiny_space(mixers=("attention", "conv"), exits=(2, 3))


def _train_records(run):
    return [r for r in MetricsLog(run / METRICS_FILE).read() if r["kind"] == "train"]


def test_one_sub_supernet_per_mixer_combination_from_the_one_shot_phase(
    two_mixers, corpus, tmp_path
):
    config = TrainConfig(steps=5, **TINY)
    runs = train_few_shot(
        two_mixers, corpus, config, (0, 1), 2, tmp_path / "fs", device="cpu", progress=False
    )
    assert sorted(runs.subs) == [
        ("attention", "attention"),
        ("attention", "conv"),
        ("conv", "attention"),
        ("conv", "conv"),
    ]
    assert read_checkpoint(runs.one_shot).state["step"] == 2
    for (m0, m1), run in runs.subs.items():
        state = read_checkpoint(run).state
        assert state["step"] == 3  # the rest of the 5 steps
        assert state["config"]["init_from"] == str(checkpoint_path(runs.one_shot.resolve()))
        assert state["config"]["pinned_mixers"] == [f"0:{m0}", f"1:{m1}"]
        # Only the pinned mixers trained at the split slots.
        trained = {key for key in state["usage"] if key[0] in "01"}
        assert trained == {f"0:{m0}", f"1:{m1}"}
    # An arch is read from the sub-supernet of its own mixers at slots 0 and 1.
    arch = Arch(32, (LayerArch("conv", ffn=32), LayerArch("attention", heads=2, ffn=0)))
    assert runs.sub_for(two_mixers.validate(arch)) == runs.subs["conv", "attention"]
    assert load_few_shot(tmp_path / "fs") == runs
    # Every step runs the largest arch, at most one pass per drawn arch besides.
    steps = [r for run in [runs.one_shot, *runs.subs.values()] for r in _train_records(run)]
    assert len(steps) == 2 + 4 * 3
    passes = sum(logged_passes(run) for run in [runs.one_shot, *runs.subs.values()])
    assert passes == sum(r["passes"] for r in steps)
    assert len(steps) <= passes <= len(steps) * (2 + config.random_archs)


def test_a_rerun_needs_resume_and_the_same_split_and_resume_trains_what_is_missing(
    two_mixers, corpus, tmp_path, monkeypatch
):
    config = TrainConfig(steps=4, **TINY)
    out = tmp_path / "fs"
    runs = train_few_shot(two_mixers, corpus, config, (1,), 2, out, device="cpu", progress=False)
    with pytest.raises(NasError, match="already holds a few-shot run; pass --resume"):
        train_few_shot(two_mixers, corpus, config, (1,), 2, out, device="cpu", progress=False)
    with pytest.raises(NasError, match="its few-shot split is"):
        train_few_shot(
            two_mixers, corpus, config, (0,), 2, out, device="cpu", resume=True, progress=False
        )
    # As if killed before the last sub-supernet: resume trains it and leaves the rest.
    kept, lost = runs.subs["attention",], runs.subs["conv",]
    before = _train_records(kept)
    shutil.rmtree(lost)
    # The rerun names the folder relative to another working directory: the same run.
    monkeypatch.chdir(tmp_path)
    again = train_few_shot(
        two_mixers, corpus, config, (1,), 2, "fs", device="cpu", resume=True, progress=False
    )
    assert again == FewShotRuns(
        runs.layers,
        runs.one_shot.relative_to(tmp_path),
        {mixers: run.relative_to(tmp_path) for mixers, run in runs.subs.items()},
    )
    assert _train_records(kept) == before
    assert read_checkpoint(lost).state["step"] == 2


def test_a_moved_few_shot_folder_resumes(two_mixers, corpus, tmp_path):
    config = TrainConfig(steps=4, **TINY)
    runs = train_few_shot(
        two_mixers, corpus, config, (1,), 2, tmp_path / "fs", device="cpu", progress=False
    )
    (tmp_path / "archive").mkdir()
    moved = (tmp_path / "fs").rename(tmp_path / "archive" / "fs")
    kept, lost = (moved / runs.subs[m].name for m in (("attention",), ("conv",)))
    before = _train_records(kept)
    shutil.rmtree(lost)  # as if killed before the last sub-supernet
    train_few_shot(two_mixers, corpus, config, (1,), 2, moved, resume=True, progress=False)
    assert _train_records(kept) == before
    assert read_checkpoint(lost).state["step"] == 2
    assert read_checkpoint(lost).state["config"]["init_from"] == str(
        checkpoint_path(moved.resolve() / "one_shot")
    )


def test_split_at_step_0_trains_the_sub_supernets_from_scratch(two_mixers, corpus, tmp_path):
    config = TrainConfig(steps=3, **TINY)
    runs = train_few_shot(
        two_mixers, corpus, config, (0,), 0, tmp_path / "fs", device="cpu", progress=False
    )
    assert runs.one_shot is None and not (tmp_path / "fs" / "one_shot").exists()
    for run in runs.subs.values():
        state = read_checkpoint(run).state
        assert state["step"] == 3 and state["config"]["init_from"] == ""
    assert load_few_shot(tmp_path / "fs") == runs


@pytest.mark.parametrize(
    "layers, split_at, match",
    [
        ((2,), 1, "need layer slots every arch has, 0 to 1"),
        ((), 1, "need distinct layer slots"),
        ((0,), 4, "need 0 to 3"),
        ((0,), -1, "need 0 to 3"),
    ],
)
def test_a_bad_split_is_named(two_mixers, layers, split_at, match):
    with pytest.raises(NasError, match=match):
        check_split(two_mixers, layers, split_at, 4)


def test_load_few_shot_names_what_is_wrong_with_the_folder(two_mixers, tmp_path):
    with pytest.raises(CheckpointError, match="not a few-shot run"):
        load_few_shot(tmp_path)
    (tmp_path / FEW_SHOT_FILE).write_text("{not json")
    with pytest.raises(CheckpointError, match="unreadable"):
        load_few_shot(tmp_path)
    (tmp_path / FEW_SHOT_FILE).write_text('{"layers": [0], "split_at": 1, "status": "running"}')
    with pytest.raises(CheckpointError, match="has not finished; --resume completes it"):
        load_few_shot(tmp_path)
    (tmp_path / FEW_SHOT_FILE).write_text('{"layers": [0], "status": "complete"}')
    with pytest.raises(CheckpointError, match="unreadable"):
        load_few_shot(tmp_path)


def test_an_arch_too_shallow_for_the_split_is_refused(tmp_path):
    runs = FewShotRuns((1,), None, {("conv",): tmp_path})
    with pytest.raises(NasError, match="has no layer 1"):
        runs.sub_for(Arch(32, (LayerArch("conv", ffn=32),)))


def test_a_mixer_combination_without_a_sub_supernet_is_one_checkpoint_error(tmp_path):
    """An arch whose split-layer mixers no sub-supernet trained (another space's arch)
    gets one line naming the combination and the few-shot folder, not a bare KeyError."""
    folder = tmp_path / "fs"
    runs = FewShotRuns(
        (0, 1),
        folder / "one_shot",
        {("conv", "conv"): folder / "layer0_conv-layer1_conv"},
    )
    arch = Arch(32, (LayerArch("conv", ffn=32), LayerArch("attention", heads=2, ffn=0)))
    with pytest.raises(CheckpointError) as caught:
        runs.sub_for(arch)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{folder}: no sub-supernet for mixers 'conv,attention'")
    assert "at layers [0, 1]" in message and "['conv,conv']" in message
    assert runs.sub_for(Arch(32, (LayerArch("conv", ffn=32),) * 2)) == folder / (
        "layer0_conv-layer1_conv"
    )
