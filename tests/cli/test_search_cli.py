"""`nas search` for real on a tiny trained supernet: outputs, bad input, resume after kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import optuna
import pytest
import torch

import nas
from nas.search.driver import LATENCY_CONSTRAINT
from nas.search.run_folder import JOURNAL
from nas.search_space import Arch
from search_setup import NAS, SEQ_LEN, make_search_setup


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return make_search_setup(tmp_path_factory.mktemp("search"))


def _nas(setup, *args: str, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(NAS), *args],
        capture_output=True,
        text=True,
        env={**setup.env, **env},
        timeout=timeout,
    )


def _one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> str:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.startswith("nas: error:")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def _study(run_dir) -> optuna.Study:
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    storage = JournalStorage(JournalFileBackend(str(run_dir / JOURNAL)))
    return optuna.load_study(study_name="nas-search", storage=storage)


def test_a_search_writes_its_outputs_and_a_fine_tuned_winner(setup, tmp_path):
    out = tmp_path / "run"
    proc = _nas(
        setup,
        *setup.args("--trials", "14", "--workers", "0", "--rerank", "2", "--rerank-steps", "4"),
        "--out",
        str(out),
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    for name in (JOURNAL, "pareto.csv", "pareto.json", "pareto.png", "report.md", "manifest.json"):
        assert (out / name).is_file(), name
    assert (out / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    winner = summary["winner"]
    assert winner is not None and winner["status"] in ("fits", "borderline")
    assert winner["predicted_ms"] <= setup.budget_ms
    assert winner["measured_ms"] > 0 and winner["finetuned_loss"] is not None
    # Every trial told: 14 distinct archs evaluated, the rest over budget or repeats.
    study = _study(out)
    evaluated = [t for t in study.trials if t.user_attrs.get("evaluated")]
    assert len(evaluated) == 14 == len({t.user_attrs["arch_id"] for t in evaluated})
    assert summary["trials"]["complete"] == 14
    for t in study.trials:
        over = t.user_attrs["predicted_ms"] > setup.budget_ms
        assert (t.constraints[LATENCY_CONSTRAINT] > 0) == over  # the constraint Optuna was told
        if over:
            assert not t.user_attrs.get("evaluated")  # infeasible archs are never evaluated
    assert {t.user_attrs.get("worker", "") for t in evaluated} != {""}
    # The largest feasible and the smallest arch went first.
    first = [Arch.from_json(t.user_attrs["arch"]) for t in study.trials[:2]]
    assert setup.space.smallest() in first
    # The winner in best/ loads without the supernet and is the fine-tuned model.
    model = nas.load(out / "best")
    arch = Arch.from_dict(winner["arch"])
    assert model.arch == arch
    tuned_dir = out / "rerank" / arch.id
    tuned = nas.load(tuned_dir if (tuned_dir / "config.json").is_file() else tuned_dir / "model")
    x = torch.randint(0, 256, (2, SEQ_LEN))
    assert torch.equal(model(x), tuned(x))
    report = (out / "report.md").read_text()
    assert arch.id in report and "optuna-dashboard" in report


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--budget", "10 parsecs"], "not a latency"),
        (["--workers", "-1"], "--workers must be 0"),
        (["--trials", "0"], "--trials must be >= 1"),
        (["--sampler", "grid"], "valid samplers are"),
        (["--storage", "sqlite:////nonexistent/dir/db.sqlite"], "--storage"),
        (["--seq-len", "8"], "the profile is for"),
        (
            ["--workers", "1", "--address", "127.0.0.1:1"],
            "within 1 s; start one with `ray start --head`",
        ),
        (["--workers", "1", "--address", "nowhere"], "is not 'auto' or HOST:PORT"),
    ],
)
def test_bad_flags_are_one_line_exit_2(setup, tmp_path, extra, words):
    args = setup.args("--workers", "0", "--out", str(tmp_path / "run"))
    if extra[0] == "--budget":
        args[args.index("--budget") + 1] = extra[1]
        extra = []
    # A dead address is probed for NAS_RAY_WAIT_S seconds (20 by default) before it fails.
    _one_line_error(_nas(setup, *args, *extra, NAS_RAY_WAIT_S="1"), words)


def test_a_bad_ray_wait_is_one_line_exit_2(setup, tmp_path):
    args = setup.args("--workers", "1", "--address", "127.0.0.1:1", "--out", str(tmp_path / "r"))
    _one_line_error(_nas(setup, *args, NAS_RAY_WAIT_S="soon"), "NAS_RAY_WAIT_S='soon'")


def test_a_budget_below_the_smallest_arch_names_the_smallest_latency(setup, tmp_path):
    budget = f"{setup.smallest_ms / 4 * 1000:.3f}us"
    proc = _nas(setup, *setup.args("--workers", "0", budget=budget), "--out", str(tmp_path / "r"))
    line = _one_line_error(proc, "below the smallest arch's predicted latency")
    assert "give at least that" in line


def test_bad_supernets_are_one_line_exit_2(setup, tmp_path):
    def run(supernet: str, *extra: str) -> subprocess.CompletedProcess:
        args = setup.args("--workers", "0", *extra, "--out", str(tmp_path / "r"))
        args[args.index("--supernet") + 1] = supernet
        return _nas(setup, *args)

    _one_line_error(run(str(tmp_path / "missing")), "no such supernet")
    corrupt = tmp_path / "corrupt.safetensors"
    data = (setup.supernet / "checkpoint.safetensors").read_bytes()
    corrupt.write_bytes(data[: len(data) // 2])
    _one_line_error(run(str(corrupt)), "corrupt")
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**setup.space.to_dict(), "d_model": [16, 24]}))
    _one_line_error(run(str(setup.supernet), "--space", str(other)), "another search space")


def test_a_profile_for_another_space_is_refused(setup, tmp_path):
    from nas.search.profile import load_profile, save_profile

    profile = load_profile(setup.profile)
    profile.space = {**profile.space, "d_model": [16, 24]}
    bad = tmp_path / "profile.json"
    save_profile(profile, bad)
    args = setup.args("--workers", "0", "--out", str(tmp_path / "r"))
    args[args.index("--profile") + 1] = str(bad)
    _one_line_error(_nas(setup, *args), "another search space")


def test_the_driver_killed_mid_search_resumes_without_losing_or_repeating_trials(setup, tmp_path):
    out = tmp_path / "run"
    args = [*setup.args("--trials", "60", "--workers", "0", "--rerank", "1", "--rerank-steps", "2")]
    args += ["--out", str(out)]
    proc = subprocess.Popen(
        [str(NAS), *args], env=setup.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 240
    before: dict[int, tuple] = {}
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
        if (out / JOURNAL).is_file():
            done = [t for t in _study(out).trials if t.user_attrs.get("evaluated")]
            if len(done) >= 5:
                break
    assert proc.poll() is None, "the search finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    for t in _study(out).trials:
        if t.state == optuna.trial.TrialState.COMPLETE:
            before[t.number] = (t.user_attrs["arch_id"], tuple(t.values))
    assert len(before) >= 5
    resumed = _nas(setup, *args, "--resume", "--json")
    assert resumed.returncode == 0, resumed.stderr
    study = _study(out)
    after = {t.number: t for t in study.trials}
    for number, (arch_id, values) in before.items():  # nothing completed is lost or changed
        assert after[number].state == optuna.trial.TrialState.COMPLETE
        assert (after[number].user_attrs["arch_id"], tuple(after[number].values)) == (
            arch_id,
            values,
        )
    evaluated = [t.user_attrs["arch_id"] for t in study.trials if t.user_attrs.get("evaluated")]
    assert len(evaluated) == 60 == len(set(evaluated))  # reached its count, none twice
    assert json.loads(resumed.stdout)["trials"]["complete"] == 60


def test_a_search_on_two_ray_workers_with_token_auth(setup, tmp_path):
    out = tmp_path / "run"
    env = {**setup.env, "RAY_AUTH_MODE": "token"}
    proc = subprocess.run(
        [
            str(NAS),
            *setup.args("--trials", "10", "--workers", "2", "--rerank", "2", "--rerank-steps", "2"),
            "--out",
            str(out),
            "--json",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["trials"]["complete"] == 10
    evaluated = [t for t in _study(out).trials if t.user_attrs.get("evaluated")]
    assert len(evaluated) == 10
    # Each trial names the node and the worker that evaluated it: Ray actors, not this process.
    assert all(t.user_attrs["node"] and t.user_attrs["worker"] for t in evaluated)
    assert not any("in-process" in t.user_attrs["worker"] for t in evaluated)


def test_no_rerank_and_no_finetune_ship_the_inherited_weights(setup, tmp_path):
    from nas.supernet.checkpoint import load_supernet

    out = tmp_path / "run"
    args = setup.args("--trials", "8", "--workers", "0", "--rerank", "0", "--no-finetune")
    proc = _nas(setup, *args, "--out", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    winner = json.loads(proc.stdout)["winner"]
    assert winner["finetuned_loss"] is None and not (out / "rerank").exists()
    arch = Arch.from_dict(winner["arch"])
    x = torch.randint(0, 256, (2, SEQ_LEN))
    inherited = load_supernet(setup.supernet).extract(arch)
    assert torch.equal(nas.load(out / "best")(x), inherited(x))


def test_a_database_storage_holds_the_study(setup, tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    out = tmp_path / "run"
    args = setup.args("--trials", "4", "--workers", "0", "--rerank", "0", "--no-finetune")
    proc = _nas(setup, *args, "--storage", url, "--out", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    assert not (out / JOURNAL).exists()
    study = optuna.load_study(study_name="nas-search", storage=url)
    assert sum(bool(t.user_attrs.get("evaluated")) for t in study.trials) == 4
    assert json.loads(proc.stdout)["paths"]["journal"] == url
