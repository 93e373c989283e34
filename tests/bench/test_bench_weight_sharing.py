"""The weight-sharing bench, run for real at a tiny size: it finishes, writes what the
README reads from it, reuses its standalone records, and refuses bad input in one line."""

from __future__ import annotations

import json

import pytest

TINY = ["--steps", "6", "--batch-size", "2", "--seq-len", "16", "--eval-batches", "2"]
TINY += ["--standalone-lrs", "0.003", "--mixed", "3"]


@pytest.fixture
def bench(run_bench):
    return lambda *extra: run_bench("bench_weight_sharing.py", *TINY, *extra)


def test_bench_runs_end_to_end_and_reuses_its_standalone_records(bench_files, bench):
    first = bench("--no-full-budget")
    assert first.returncode == 0, first.stderr[-2000:]
    summary = json.loads((bench_files["out"] / "results.json").read_text())
    names = {"smallest", "largest", "mixed0", "mixed1", "mixed2", "ssm", "conv", "pool"}
    assert names <= set(summary["inherited"])
    assert set(summary["inherited"]) == set(summary["standalone_same_tokens"])
    assert -1.0 <= summary["kendall_tau"] <= 1.0
    assert (bench_files["out"] / "weight_sharing.png").stat().st_size > 0
    assert "standalone: mixed0" in first.stdout

    # Same settings: every standalone record is reused, so nothing trains alone again,
    # and the table is the same.
    again = bench("--no-full-budget", "--finetune-steps", "1,2")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "standalone:" not in again.stdout
    rerun = json.loads((bench_files["out"] / "results.json").read_text())
    assert rerun["standalone_same_tokens"] == summary["standalone_same_tokens"]
    assert set(rerun["finetuned"]) == {"1", "2"}

    # Another validation set size changes the losses a record holds: it must not be reused.
    other = bench("--no-full-budget", "--eval-batches", "3")
    assert other.returncode == 0, other.stderr[-2000:]
    assert "standalone: mixed0" in other.stdout


def test_supernet_options_share_the_standalone_records(bench_files, bench):
    """--fair --ffn-per-mixer change the supernet, not the standalone runs: an arch trained
    alone for the same steps (the largest runs at every step) reuses its record."""
    plain = bench("--no-full-budget")
    assert plain.returncode == 0, plain.stderr[-2000:]
    before = json.loads((bench_files["out"] / "results.json").read_text())
    standalone = str(bench_files["out"] / "standalone")
    out = str(bench_files["out"].parent / "fair")
    options = ["--fair", "--ffn-per-mixer", "--standalone-dir", standalone, "--out", out]
    fair = bench("--no-full-budget", *options)
    assert fair.returncode == 0, fair.stderr[-2000:]
    after = json.loads((bench_files["out"].parent / "fair" / "results.json").read_text())
    assert after["config"]["fair"] and after["config"]["ffn_per_mixer"]
    assert "standalone: largest" not in fair.stdout
    largest = after["standalone_same_tokens"]["largest"]
    assert largest == before["standalone_same_tokens"]["largest"]
    assert after["inherited"]["largest"] != before["inherited"]["largest"]  # another supernet
    assert "the skip slot's own FFN replaces the mixer's" in fair.stdout


@pytest.mark.parametrize(
    "flag, value, match",
    [("--data", "missing.txt", "no such file"), ("--space", "missing.yaml", "missing.yaml")],
)
def test_bad_data_or_space_gives_one_line_and_exit_2(bench_files, bench, flag, value, match):
    bench_files[flag.lstrip("-")] = str(bench_files["out"].parent / value)
    result = bench()
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert match in last and "Traceback" not in result.stderr
