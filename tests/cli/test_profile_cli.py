"""`nas profile` and `nas latency`: one-line errors, and a small real run end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import make_tiny_space
from nas.cli import main

NAS = Path(sys.executable).with_name("nas")  # the installed console command

# The lowest protocol settings the CLI accepts, so that a real build takes seconds.
QUICK = [
    "--seq-len",
    "8",
    "--threads",
    "1",
    "--train",
    "4",
    "--holdout",
    "3",
    "--runs",
    "3",
    "--warmup-s",
    "0",
    "--max-waits",
    "0",
]


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("nas: error: ")
    return err[0]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_request_without_cuda_is_one_line_exit_2(capsys):
    assert main(["profile", "--device", "cuda"]) == 2
    assert "no CUDA device" in _one_error_line(capsys)


@pytest.mark.parametrize(
    "argv, words",
    [
        (["profile", "--device", "tpu"], "unknown device 'tpu'"),
        (["profile", "--mode", "graph"], "needs --device cuda"),
        (["profile", "--mode", "jit"], "unknown mode"),
        (["profile", "--seq-len", "100000"], "exceeds the space's max_seq_len"),
        (["profile", "--batch", "0"], "batch must be a positive integer"),
    ],
)
def test_bad_workload_flags_are_one_line_exit_2(capsys, argv, words):
    assert main(argv) == 2
    assert words in _one_error_line(capsys)


def test_latency_of_a_bad_arch_file_is_one_line_exit_2(capsys, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"d_model": 128, "layers": "many"}')
    assert main(["latency", str(bad)]) == 2
    assert "bad.json" in _one_error_line(capsys)
    assert main(["latency", str(tmp_path / "missing.json")]) == 2
    assert "not found" in _one_error_line(capsys)


def _nas(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(NAS), *args],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_profile_then_latency_end_to_end(tmp_path):
    space = make_tiny_space(d_model=(16,), exits=(1, 2))
    space_file = tmp_path / "tiny.json"
    space_file.write_text(json.dumps(space.to_dict()))
    arch_file = tmp_path / "arch.json"
    arch_file.write_text(space.sample(seed=4).to_json())
    env = {**os.environ, "NAS_CACHE_DIR": str(tmp_path / "cache")}

    built = _nas("profile", "--space", str(space_file), *QUICK, "--json", env=env)
    assert built.returncode == 0, built.stderr
    info = json.loads(built.stdout)
    assert info["built"] and info["path"].startswith(str(tmp_path / "cache" / "profiles"))
    assert info["env"]["threads"] == 1 and info["env"]["seq_len"] == 8
    assert "noise floor (rerun vs first)" in info["accuracy"]["rows"]

    latency = _nas(
        "latency",
        str(arch_file),
        "--space",
        str(space_file),
        *QUICK,
        "--measure",
        "--json",
        env=env,
    )
    assert latency.returncode == 0, latency.stderr
    out = json.loads(latency.stdout)
    assert out["profile"] == info["path"]  # reused, not rebuilt
    assert out["predicted_ms"] > 0 and out["measured_ms"] > 0
    assert out["measurement"]["runs"] == 3 and "rel_iqr" in out["measurement"]

    check = _nas("profile", "--space", str(space_file), *QUICK, "--check", "3", env=env)
    assert check.returncode == 0, check.stderr
    assert "reused" in check.stdout and "[--check 3]" in check.stdout
    assert "FLOPs-linear" in check.stdout and "features-linear" in check.stdout
