"""`nas train`: a run folder, one-line errors with exit code 2, and surviving `kill -9`."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml

from conftest import make_tiny_space
from nas.cli import main
from nas.search.default_supernet import search_train_config
from nas.supernet import training
from nas.supernet.checkpoint import checkpoint_path, load_supernet, read_checkpoint
from nas.supernet.few_shot import load_few_shot
from nas.supernet.training import TrainConfig, lr_at, read_manifest

SMALL = ["--batch-size", "2", "--seq-len", "16", "--no-progress"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def files(tmp_path, monkeypatch):
    """A tiny space file and a small text corpus; the data cache stays inside tmp_path."""
    monkeypatch.setenv("NAS_CACHE_DIR", str(tmp_path / "cache"))
    space = tmp_path / "tiny.yaml"
    space.write_text(yaml.safe_dump(make_tiny_space().to_dict()))
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(make_tiny_space(d_model=(16, 48)).to_dict()))
    data = tmp_path / "code.py"
    data.write_text("".join(f"def f{i}(x):\n    return x + {i}\n\n" for i in range(300)))
    return {"space": str(space), "other": str(other), "data": str(data), "out": tmp_path / "run"}


def _train_args(files, *extra) -> list[str]:
    """`nas train` arguments for the tiny space, corpus and run folder of `files`."""
    args = ["train", "--space", files["space"], "--data", files["data"]]
    return [*args, "--out", str(files["out"]), *SMALL, *extra]


def _train(files, *extra):
    return main(_train_args(files, *extra))


def _one_error_line(capsys, match):
    err = capsys.readouterr().err.strip()
    assert err.startswith("nas: error:") and "\n" not in err and "Traceback" not in err, err
    assert match in err, err


def test_train_writes_a_run_folder_and_prints_the_checkpoint(files, capsys):
    assert _train(files, "--steps", "4", "--eval-every", "2") == 0
    out = capsys.readouterr().out
    ckpt = files["out"] / "checkpoint.safetensors"
    assert f"checkpoint: {ckpt}" in out and "validation loss" in out
    assert read_checkpoint(ckpt).step == 4
    manifest = read_manifest(files["out"])
    assert manifest["status"] == "complete" and manifest["config"]["steps"] == 4
    kinds = [json.loads(line)["kind"] for line in (files["out"] / "metrics.jsonl").open()]
    assert kinds.count("train") == 4 and kinds.count("eval") == 2


def test_resume_continues_and_refuses_changes(files, capsys):
    assert _train(files, "--steps", "3") == 0
    assert _train(files, "--steps", "3") == 2
    _one_error_line(capsys, "--resume")
    assert _train(files, "--steps", "5", "--resume") == 2
    _one_error_line(capsys, "keeps its settings")
    assert main(["train", "--out", str(files["out"]), "--resume", "--no-progress"]) == 0
    assert read_checkpoint(files["out"]).step == 3  # already complete: nothing to do


def test_fair_flag_trains_every_mixer_slot_and_is_kept_on_resume(files, capsys):
    assert _train(files, "--steps", "2", "--fair") == 0
    usage = read_checkpoint(files["out"]).state["usage"]
    space = make_tiny_space()
    assert len(usage) == space.max_depth * len(space.mixers)
    assert set(usage.values()) == {2}
    assert read_manifest(files["out"])["config"]["fair"] is True
    capsys.readouterr()
    # Resumed without the flag, the run keeps it (a flag left out is not a change).
    assert main(["train", "--out", str(files["out"]), "--resume", "--no-progress"]) == 0
    capsys.readouterr()
    # The random archs it replaces cannot be asked for beside it.
    assert _train(files, "--steps", "2", "--fair", "--random-archs", "4") == 2
    _one_error_line(capsys, "drop --random-archs")


def test_sandwich_random_mixers_flag_reaches_the_trainer_and_must_agree_on_resume(files, capsys):
    assert _train(files, "--steps", "2", "--sandwich-random-mixers") == 0
    assert read_manifest(files["out"])["config"]["sandwich_random_mixers"] is True
    capsys.readouterr()
    assert main(["train", "--out", str(files["out"]), "--resume", "--no-progress"]) == 0
    capsys.readouterr()
    # Another run without the flag keeps the fixed extremes: the setting is in its config.
    other = str(files["out"].parent / "fixed")
    args = ["train", "--space", files["space"], "--data", files["data"], "--out", other, *SMALL]
    assert main([*args, "--steps", "2"]) == 0
    assert read_manifest(other)["config"]["sandwich_random_mixers"] is False
    capsys.readouterr()
    resumed = ["train", "--out", other, "--resume", "--no-progress", "--steps", "3"]
    assert main([*resumed, "--sandwich-random-mixers"]) == 2
    _one_error_line(capsys, "sandwich_random_mixers")


def test_pin_mixer_trains_one_sub_supernet_from_a_one_shot_run(files, capsys):
    """A few-shot split by hand: a one-shot run, then a sub-supernet pinned to conv at slot
    0 from its weights; only conv trains at slot 0, and the pin must agree on resume."""
    assert _train(files, "--steps", "2") == 0
    sub = str(files["out"].parent / "conv0")
    args = ["train", "--space", files["space"], "--data", files["data"], "--out", sub, *SMALL]
    pinned = [*args, "--steps", "3", "--pin-mixer", "0:conv", "--init-from", str(files["out"])]
    assert main(pinned) == 0
    usage = read_checkpoint(sub).state["usage"]
    assert {key for key in usage if key.startswith("0:")} == {"0:conv"}
    assert read_manifest(sub)["config"]["pinned_mixers"] == ["0:conv"]
    capsys.readouterr()
    resumed = ["train", "--out", sub, "--resume", "--no-progress"]
    assert main([*resumed, "--pin-mixer", "0:conv"]) == 0
    capsys.readouterr()
    assert main([*resumed, "--steps", "4", "--pin-mixer", "0:pool"]) == 2
    _one_error_line(capsys, "pinned_mixers")


def test_stop_at_then_branch_from_splits_one_run_into_sub_supernets(files, capsys):
    """A few-shot split that keeps one schedule: a run of 6 steps stopped after 3, then a
    branch pinned to conv at slot 0 that runs steps 4-6 of the same cosine; branched with
    no pin, it is the run itself resumed."""
    assert _train(files, "--steps", "6", "--stop-at", "3") == 0
    assert "stopping after step 3" in capsys.readouterr().out
    assert read_manifest(files["out"])["status"] == "stopped"
    base = ["train", "--data", files["data"], "--no-progress"]
    sub = str(files["out"].parent / "conv0")
    assert (
        main([*base, "--out", sub, "--branch-from", str(files["out"]), "--pin-mixer", "0:conv"])
        == 0
    )
    manifest = read_manifest(sub)
    assert manifest["status"] == "complete" and manifest["step"] == 6
    assert manifest["config"]["pinned_mixers"] == ["0:conv"]
    assert manifest["config"]["batch_size"] == 2  # the source's settings
    lrs = [r["lr"] for r in _records(sub) if r["kind"] == "train"]
    config = TrainConfig.from_dict(manifest["config"])
    assert lrs == [lr_at(step, config) for step in (3, 4, 5)]  # the source's schedule goes on
    same = str(files["out"].parent / "same")
    assert main([*base, "--out", same, "--branch-from", str(files["out"])]) == 0
    assert main([*base, "--out", str(files["out"]), "--resume"]) == 0
    capsys.readouterr()
    # A resumed branch keeps its source: another --branch-from on --resume is refused.
    assert main([*base, "--out", same, "--resume", "--branch-from", sub]) == 2
    _one_error_line(capsys, "branch_from")
    a, b = read_checkpoint(same), read_checkpoint(files["out"])
    assert all(torch.equal(a.model[k], b.model[k]) for k in a.model)
    capsys.readouterr()
    # A finished run has no schedule left to branch; a branch takes its source's settings.
    again = [*base, "--out", str(files["out"].parent / "x"), "--branch-from", str(files["out"])]
    assert main(again) == 2
    _one_error_line(capsys, "no schedule is left to branch; stop the source early with --stop-at")
    assert main([*again[:-2], "--branch-from", sub, "--init-from", sub]) == 2
    _one_error_line(capsys, "give one")
    assert main([*again, "--stop-at", "0"]) == 2
    _one_error_line(capsys, "--stop-at must be a step >= 1")


def _records(run: str) -> list[dict]:
    return [json.loads(line) for line in (Path(run) / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize(
    "pin, match", [("conv", "is not SLOT:MIXER"), ("0:mamba", "need a layer slot below 3")]
)
def test_a_bad_pin_gives_one_line_and_exit_2(files, capsys, pin, match):
    assert _train(files, "--steps", "2", "--pin-mixer", pin) == 2
    out, err = capsys.readouterr()
    assert "data:" not in out  # refused before the corpus loads
    assert err.startswith("nas: error:") and err.count("\n") == 1 and match in err, err
    assert not files["out"].exists()


def test_ffn_per_mixer_flag_builds_that_layout_and_init_from_must_match(files, capsys):
    assert _train(files, "--steps", "2", "--ffn-per-mixer") == 0
    assert load_supernet(files["out"]).ffn_per_mixer
    capsys.readouterr()
    other = str(files["out"].parent / "shared")
    args = ["train", "--space", files["space"], "--data", files["data"], "--out", other, *SMALL]
    assert main([*args, "--steps", "2", "--init-from", str(files["out"])]) == 2
    _one_error_line(capsys, "it was trained with --ffn-per-mixer")


@pytest.mark.parametrize("damage", ["truncated", "corrupted", "other space"])
def test_bad_checkpoint_gives_one_line_and_exit_2(files, capsys, damage):
    assert _train(files, "--steps", "2") == 0
    ckpt = files["out"] / "checkpoint.safetensors"
    data = ckpt.read_bytes()
    capsys.readouterr()
    if damage == "truncated":
        ckpt.write_bytes(data[: len(data) // 3])
        code = _train(files, "--steps", "2", "--resume")
    elif damage == "corrupted":
        ckpt.write_bytes(data[:-64] + bytes(64))
        code = _train(files, "--steps", "2", "--resume")
    else:
        code = main(
            [
                "train",
                "--space",
                files["other"],
                "--data",
                files["data"],
                "--out",
                str(files["out"]),
                "--resume",
                *SMALL,
            ]
        )
    assert code == 2
    _one_error_line(
        capsys,
        {"truncated": "truncated", "corrupted": "corrupted", "other space": "another search space"}[
            damage
        ],
    )


def test_bad_inputs_give_one_line_and_exit_2(files, capsys, tmp_path):
    assert (
        main(
            [
                "train",
                "--data",
                str(tmp_path / "nope"),
                "--out",
                str(tmp_path / "r"),
                "--no-progress",
            ]
        )
        == 2
    )
    _one_error_line(capsys, "no such file or folder")
    assert _train(files, "--steps", "0") == 2
    _one_error_line(capsys, "steps must be >= 1")
    assert _train(files, "--homogeneous-share", "1.5") == 2
    _one_error_line(capsys, "homogeneous_share must be in [0, 1]")
    if not torch.cuda.is_available():
        assert _train(files, "--device", "cuda") == 2
        _one_error_line(capsys, "CUDA is not available")


def _nas_command() -> list[str]:
    script = Path(sys.executable).parent / "nas"
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from nas.cli import main; sys.exit(main())"]


def test_kill_9_leaves_a_loadable_checkpoint_and_resume_completes(files):
    args = _train_args(files, "--steps", "150", "--checkpoint-every", "2", "--eval-every", "1000")
    # Passive OpenMP waiting keeps the child fast when the 2 cores are shared.
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        _nas_command() + args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    ckpt = files["out"] / "checkpoint.safetensors"
    deadline = time.monotonic() + 120
    try:
        while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)  # kill while it is training and rewriting the checkpoint
        assert proc.poll() is None, proc.stderr.read().decode()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert read_manifest(files["out"])["status"] == "running"
    step = read_checkpoint(ckpt).step  # loadable, whatever moment the kill hit
    assert 2 <= step < 150
    leftovers = [p.name for p in files["out"].iterdir() if p.name.endswith(".tmp")]
    for name in leftovers:  # a temp file a kill interrupted is never the checkpoint
        assert name.startswith(".checkpoint.safetensors.")
    assert main([*args, "--resume"]) == 0
    assert read_checkpoint(ckpt).step == 150
    assert read_manifest(files["out"])["status"] == "complete"


def test_family_file_trains_its_archs_and_must_stay_the_same_on_resume(files, capsys, tmp_path):
    space = make_tiny_space()
    archs = space.sample_many(3, seed=2)
    family = tmp_path / "family.json"
    family.write_text(json.dumps([a.to_dict() for a in archs[:2]]))
    assert _train(files, "--steps", "3", "--family", str(family)) == 0
    manifest = read_manifest(files["out"])
    assert manifest["config"]["family"] == [a.to_json() for a in archs[:2]]
    # Family members are validated with the reference archs.
    assert [manifest["reference_archs"][f"family{i}"] for i in (0, 1)] == [
        a.to_dict() for a in archs[:2]
    ]
    usage = read_checkpoint(files["out"]).state["usage"]
    assert all(
        usage[f"{i}:{la.mixer}"] == 3
        for a in archs[:2]
        for i, la in enumerate(a.layers)
        if la.mixer != "skip"
    )
    # Resuming with the same file is fine; another family is refused in one line.
    assert _train(files, "--steps", "3", "--family", str(family), "--resume") == 0
    one = tmp_path / "one.json"
    one.write_text(archs[2].to_json())  # a single arch object is a family of one
    capsys.readouterr()
    assert _train(files, "--steps", "3", "--family", str(one), "--resume") == 2
    # The refusal names the archs by id, not by pages of JSON.
    _one_error_line(capsys, f"family [{archs[0].id}, {archs[1].id}] (given [{archs[2].id}])")
    # One arch per line, as `nas space sample -n N` prints, is the same family as the list.
    lines = tmp_path / "lines.jsonl"
    lines.write_text("".join(a.to_json() + "\n" for a in archs[:2]))
    assert _train(files, "--steps", "3", "--family", str(lines), "--resume") == 0


def test_bad_family_file_gives_one_line_and_exit_2(files, capsys, tmp_path):
    bad = tmp_path / "bad.json"
    cases = {
        "missing.json": "arch file not found",
        "[]": "an empty list",
        "{": "not valid JSON",
        '{"d_model": 32}\n{': "not valid JSON",
        '[{"d_model": 4096, "layers": [{"mixer": "conv", "ffn": 32}]}]': "arch 0",
        '[{"d_model": 32}]': "field 'layers' must be",
    }
    for text, match in cases.items():
        path = tmp_path / text if text.endswith(".json") else bad
        if path == bad:
            bad.write_text(text)
        assert _train(files, "--steps", "2", "--family", str(path)) == 2
        _one_error_line(capsys, match)
        assert not (files["out"] / "checkpoint.safetensors").exists()


def test_init_from_a_run_and_bad_sources(files, capsys, tmp_path):
    assert _train(files, "--steps", "3") == 0
    base = ["train", "--space", files["space"], "--data", files["data"], *SMALL, "--steps", "2"]
    warm = tmp_path / "warm"
    assert main([*base, "--out", str(warm), "--init-from", str(files["out"])]) == 0
    assert read_manifest(warm)["config"]["init_from"] == str(
        checkpoint_path(files["out"].resolve())
    )
    # The same source named by its checkpoint file is the same run: it resumes.
    source_file = str(checkpoint_path(files["out"]))
    assert main([*base, "--out", str(warm), "--resume", "--init-from", source_file]) == 0
    capsys.readouterr()
    for source, match in (
        (tmp_path / "nope", "checkpoint not found"),
        (files["data"], "corrupted"),
    ):
        out = tmp_path / "bad"
        assert main([*base, "--out", str(out), "--init-from", str(source)]) == 2
        _one_error_line(capsys, match)
        assert not out.exists()


def test_few_shot_trains_one_sub_supernet_per_mixer_and_resumes(files, capsys):
    """--few-shot 0: a one-shot phase of --split-at steps, then one sub-supernet per mixer
    of slot 0, each pinned to it; a rerun needs --resume and the same flags."""
    assert _train(files, "--steps", "3", "--few-shot", "0", "--split-at", "1") == 0
    out = capsys.readouterr().out
    assert f"few-shot supernet: {files['out'] / 'few_shot.json'}" in out
    runs = load_few_shot(files["out"])
    space = make_tiny_space()
    assert sorted(runs.subs) == sorted((m,) for m in space.mixers)
    for (mixer,), run in runs.subs.items():
        state = read_checkpoint(run).state
        assert state["step"] == 2 and state["config"]["pinned_mixers"] == [f"0:{mixer}"]
        assert {key for key in state["usage"] if key.startswith("0:")} == {f"0:{mixer}"}
    assert _train(files, "--steps", "3", "--few-shot", "0", "--split-at", "1") == 2
    _one_error_line(capsys, "already holds a few-shot run; pass --resume")
    assert _train(files, "--steps", "3", "--few-shot", "0", "--split-at", "1", "--resume") == 0
    capsys.readouterr()
    # The folder is a few-shot run: a plain run there is refused.
    assert _train(files, "--steps", "3", "--resume") == 2
    _one_error_line(capsys, "holds a few-shot run")


@pytest.mark.parametrize(
    "extra, match",
    [
        (["--few-shot", "0", "--pin-mixer", "0:conv"], "drop --pin-mixer"),
        (["--few-shot", "0", "--stop-at", "2"], "drop --stop-at"),
        (["--split-at", "2"], "add --few-shot LAYERS"),
        (["--few-shot", "0", "--split-at", "4"], "need 0 to 3"),
        (["--few-shot", "1"], "need layer slots every arch has, 0 to 0"),
        (["--few-shot", "a"], "'a' is not a list of layer indices"),
    ],
)
def test_a_bad_few_shot_split_gives_one_line_and_exit_2(files, capsys, extra, match):
    assert _train(files, "--steps", "4", *extra) == 2
    _one_error_line(capsys, match)
    assert not files["out"].exists()


def _config_of(run) -> TrainConfig:
    return TrainConfig.from_dict(read_manifest(run)["config"])


def test_a_new_run_trains_the_main_job_s_settings_unless_a_flag_says_otherwise(files):
    """No --preset: the settings of the supernet `nas search` trains (its own definition,
    search_train_config), but for the flags given."""
    assert _train(files, "--steps", "2") == 0
    space = make_tiny_space()
    expected = replace(search_train_config(space), steps=2, batch_size=2, seq_len=16)
    assert _config_of(files["out"]) == expected
    assert expected.distill_weight == 0.0 and not expected.fair  # the study's finding


def test_preset_full_samples_fairly_with_an_ffn_per_mixer_and_flags_override_it(
    files, capsys, tmp_path
):
    assert _train(files, "--preset", "full", "--steps", "2", "--eval-every", "2") == 0
    assert "(preset full)" in capsys.readouterr().out
    config = _config_of(files["out"])
    assert config.fair and config.ffn_per_mixer and config.distill_weight == 0.0
    assert load_supernet(files["out"]).ffn_per_mixer
    # Resumed with the same preset it is the same run; with another, it is refused.
    assert _train(files, "--preset", "full", "--steps", "2", "--eval-every", "2", "--resume") == 0
    capsys.readouterr()
    assert _train(files, "--preset", "quick", "--steps", "2", "--resume") == 2
    _one_error_line(capsys, "keeps its settings")
    # A flag given wins over the preset's value.
    other = tmp_path / "no_fair"
    args = ["train", "--space", files["space"], "--data", files["data"], *SMALL, "--steps", "2"]
    assert main([*args, "--out", str(other), "--preset", "full", "--no-fair"]) == 0
    assert not _config_of(other).fair and _config_of(other).ffn_per_mixer
    capsys.readouterr()
    # Random archs are what fair sampling replaces: asking for them names the way out.
    bad = [*args, "--out", str(tmp_path / "bad"), "--preset", "full", "--random-archs", "3"]
    assert main(bad) == 2
    _one_error_line(capsys, "pass --no-fair")


def test_help_shows_the_user_flags_before_the_experiment_knobs(capsys):
    assert main(["train", "--help"]) == 0
    text = capsys.readouterr().out
    user, _, advanced = text.partition("advanced (experiments")
    assert advanced, text
    for flag in ("--preset", "--data", "--steps", "--family", "--init-from", "--resume"):
        assert f"  {flag}" in user, flag
    knobs = ["--random-archs", "--homogeneous-share", "--fair", "--ffn-per-mixer"]
    knobs += ["--sandwich-random-mixers", "--pin-mixer", "--stop-at", "--branch-from"]
    for flag in knobs:
        assert f"  {flag}" in advanced and f"  {flag}" not in user, flag
    assert "--distill-weight" not in text  # measured worse, used by no user: not a flag


def test_a_diverging_run_gives_one_line_naming_the_step_and_the_fix(files, capsys):
    assert _train(files, "--steps", "5", "--lr", "1e30") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("nas: error:") and "\n" not in err and "Traceback" not in err, err
    fix = r"lower the peak learning rate \(--lr, now 1e\+30\)"
    assert re.search(r"non-finite loss at step \d+ \(.*\); " + fix, err), err


def test_a_nan_loss_is_a_one_line_error_with_exit_2(files, capsys, monkeypatch):
    """A loss that turns NaN at step 2 (as if the run diverged): one line, no traceback."""
    real = training.sandwich_step
    calls = []

    def nan_at_step_2(*args, **kwargs):
        losses = real(*args, **kwargs)
        calls.append(1)
        return {**losses, "largest": float("nan")} if len(calls) == 2 else losses

    monkeypatch.setattr(training, "sandwich_step", nan_at_step_2)
    assert _train(files, "--steps", "4") == 2
    err = capsys.readouterr().err
    assert err.startswith("nas: error:") and err.count("\n") == 1 and "Traceback" not in err
    assert "non-finite loss at step 2" in err and "--lr" in err, err
    # No checkpoint holds the diverged step.
    assert not checkpoint_path(files["out"]).exists() or read_checkpoint(files["out"]).step < 2
