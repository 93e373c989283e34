"""The weight-sharing bench, run for real at a tiny size: it finishes, writes what the
README reads from it, reuses its standalone records, and refuses bad input in one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_weight_sharing.py"
TINY_SPACE = """\
vocab_size: 256
max_seq_len: 16
causal: true
head_dim: 8
d_model: [16, 24]
heads: [1, 2]
ffn: [0, 32]
mixers: [attention, sliding_window, linear_attention, pool, conv, glu, ssm, skip]
windows: [4, 8]
exits: [1, 2]
conv_kernel: 3
pool_size: 3
ssm_state: 4
chunk_size: 8
"""
TINY = ["--steps", "6", "--batch-size", "2", "--seq-len", "16", "--eval-batches", "2"]
TINY += ["--standalone-lrs", "0.003", "--mixed", "3"]


@pytest.fixture
def files(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text(TINY_SPACE)
    data = tmp_path / "corpus.txt"
    data.write_text("".join(f"def f{i}(x):\n    return x * {i}\n\n" for i in range(400)))
    return {"space": str(space), "data": str(data), "out": tmp_path / "out"}


def _bench(files, *extra) -> subprocess.CompletedProcess:
    args = ["--space", files["space"], "--data", files["data"], "--out", str(files["out"])]
    env = {**os.environ, "NAS_CACHE_DIR": str(files["out"].parent / "cache")}
    env.update(OMP_NUM_THREADS="1")  # tiny models; two shared cores
    return subprocess.run(
        [sys.executable, str(BENCH), *args, *TINY, *extra],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


def test_bench_runs_end_to_end_and_reuses_its_standalone_records(files):
    first = _bench(files, "--no-full-budget")
    assert first.returncode == 0, first.stderr[-2000:]
    summary = json.loads((files["out"] / "results.json").read_text())
    names = {"smallest", "largest", "mixed0", "mixed1", "mixed2", "ssm", "conv", "pool"}
    assert names <= set(summary["inherited"])
    assert set(summary["inherited"]) == set(summary["standalone_same_tokens"])
    assert -1.0 <= summary["kendall_tau"] <= 1.0
    assert (files["out"] / "weight_sharing.png").stat().st_size > 0
    assert "standalone: mixed0" in first.stdout

    # Same settings: every standalone record is reused, so nothing trains alone again,
    # and the table is the same.
    again = _bench(files, "--no-full-budget", "--finetune-steps", "1,2")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "standalone:" not in again.stdout
    rerun = json.loads((files["out"] / "results.json").read_text())
    assert rerun["standalone_same_tokens"] == summary["standalone_same_tokens"]
    assert set(rerun["finetuned"]) == {"1", "2"}

    # Another validation set size changes the losses a record holds: it must not be reused.
    other = _bench(files, "--no-full-budget", "--eval-batches", "3")
    assert other.returncode == 0, other.stderr[-2000:]
    assert "standalone: mixed0" in other.stdout


@pytest.mark.parametrize(
    "flag, value, match",
    [("--data", "missing.txt", "no such file"), ("--space", "missing.yaml", "missing.yaml")],
)
def test_bad_data_or_space_gives_one_line_and_exit_2(files, flag, value, match):
    files[flag.lstrip("-")] = str(files["out"].parent / value)
    result = _bench(files)
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert match in last and "Traceback" not in result.stderr
