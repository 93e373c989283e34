"""The per-device training bench, run for real at a tiny size on the CPU."""

from __future__ import annotations

import pytest
import torch

TINY = ["--steps", "4", "--skip", "1", "--batch-size", "2", "--seq-len", "16"]


def _rows(stdout: str) -> list[list[str]]:
    """The table's device rows, split into columns."""
    return [line.split() for line in stdout.splitlines() if line.startswith(("cpu ", "cuda "))]


def test_same_seed_on_the_same_device_trains_the_same_losses(run_bench):
    result = run_bench("bench_train_device.py", *TINY, "--devices", "cpu,cpu")
    assert result.returncode == 0, result.stderr[-2000:]
    first, second = _rows(result.stdout)
    assert float(first[2]) == 1.0  # the reference's ratio to itself
    assert float(second[2]) > 0
    # Columns 4..7: train and validation losses of the largest and smallest archs. The CPU
    # path is fp32 and deterministic, so a second run from the same seed matches exactly.
    assert first[4:8] == second[4:8]
    assert all(0 < float(x) < 6.0 for x in first[4:8])


@pytest.mark.parametrize(
    ("devices", "match"),
    [("tpu", "unknown device 'tpu'"), ("cuda", "CUDA is not available")],
)
def test_bad_device_gives_one_line_and_exit_2(run_bench, devices, match):
    if devices == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = run_bench("bench_train_device.py", *TINY, "--devices", devices)
    assert result.returncode == 2
    assert match in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr
