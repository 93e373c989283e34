"""The per-device training bench, run for real at a tiny size on the CPU."""

from __future__ import annotations

import importlib

import pytest
import torch

from conftest import BENCH_DIR

TINY = ["--steps", "4", "--skip", "1", "--batch-size", "2", "--seq-len", "16"]


def _rows(stdout: str) -> list[list[str]]:
    """The table's device rows, split into columns."""
    return [line.split() for line in stdout.splitlines() if line.startswith(("cpu ", "cuda "))]


def test_same_seed_on_the_same_device_trains_the_same_losses(run_bench):
    result = run_bench("bench_train_device.py", *TINY, "--devices", "cpu,cpu")
    assert result.returncode == 0, result.stderr[-2000:]
    first, second = _rows(result.stdout)
    # Column 2 is each run's tok/s (column 1) against the first run's, to 2 decimals.
    rates = [float(row[1].replace(",", "")) for row in (first, second)]
    assert float(second[2]) == pytest.approx(rates[1] / rates[0], abs=0.006)
    # Columns 4..7: train and validation losses of the largest and smallest archs. The CPU
    # path is fp32 and deterministic, so a second run from the same seed matches exactly.
    assert first[4:8] == second[4:8]
    assert all(0 < float(x) < 6.0 for x in first[4:8])


def test_speed_ratio_is_the_median_after_warm_up_against_the_first_run(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH_DIR))
    bench = importlib.import_module("bench_train_device")
    # One slow warm-up step each, then medians 20 and 60: a ratio of 3. Counting the
    # warm-up steps would give medians 25 and 50, a ratio of 2.
    reference = [1000.0, 10.0, 20.0, 30.0]
    other = [5.0, 40.0, 60.0, 80.0]
    assert bench.speed_ratios([reference, other], skip=1) == [1.0, 3.0]
    assert bench.speed_ratios([other, reference], skip=1) == [1.0, pytest.approx(1 / 3)]
    with pytest.raises(ValueError):
        bench.speed_ratios([reference, other], skip=4)  # no timed step left


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
