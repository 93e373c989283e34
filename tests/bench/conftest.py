"""Shared by the bench tests: a tiny space and corpus, so a real bench run takes seconds."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH_DIR = Path(__file__).resolve().parents[2] / "bench"

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


@pytest.fixture
def files(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text(TINY_SPACE)
    data = tmp_path / "corpus.txt"
    data.write_text("".join(f"def f{i}(x):\n    return x * {i}\n\n" for i in range(400)))
    return {"space": str(space), "data": str(data), "out": tmp_path / "out"}


@pytest.fixture
def run_bench(files):
    """Runs bench/SCRIPT on the tiny space and corpus, its outputs under files["out"]."""

    def run(script: str, *args: str) -> subprocess.CompletedProcess:
        common = ["--space", files["space"], "--data", files["data"], "--out", str(files["out"])]
        env = {**os.environ, "NAS_CACHE_DIR": str(files["out"].parent / "cache")}
        env.update(OMP_NUM_THREADS="1")  # tiny models; two shared cores
        return subprocess.run(
            [sys.executable, str(BENCH_DIR / script), *common, *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
        )

    return run
