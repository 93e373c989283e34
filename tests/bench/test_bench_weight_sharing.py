"""The weight-sharing bench, run for real at a tiny size: it finishes, writes what the
README reads from it, reuses its standalone records, and refuses bad input in one line."""

from __future__ import annotations

import importlib
import itertools
import json
import math
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import BENCH_DIR
from nas.supernet.checkpoint import checkpoint_path, read_checkpoint

TINY = ["--steps", "6", "--batch-size", "2", "--seq-len", "16", "--eval-batches", "2"]
TINY += ["--standalone-lrs", "0.003", "--mixed", "3"]


@pytest.fixture
def bench(run_bench):
    return lambda *extra: run_bench("bench_weight_sharing.py", *TINY, *extra)


@pytest.fixture
def rankings(monkeypatch):
    """The bench's ranking module, imported as the bench does (bench/ on sys.path)."""
    monkeypatch.syspath_prepend(str(BENCH_DIR))
    return importlib.import_module("weight_sharing_rankings")


def kendall_tau_b(a: list[float], b: list[float]) -> float:
    """Kendall's tau-b by counting pairs, independently of scipy: (concordant - discordant)
    / sqrt((pairs - pairs tied in a) (pairs - pairs tied in b))."""
    concordant = discordant = tied_a = tied_b = 0
    for i, j in itertools.combinations(range(len(a)), 2):
        da, db = (a[i] > a[j]) - (a[i] < a[j]), (b[i] > b[j]) - (b[i] < b[j])
        tied_a += da == 0
        tied_b += db == 0
        concordant += da * db > 0
        discordant += da * db < 0
    pairs = len(a) * (len(a) - 1) // 2
    return (concordant - discordant) / math.sqrt((pairs - tied_a) * (pairs - tied_b))


def test_tau_of_rankings_whose_tau_is_known(rankings, capsys):
    """Five archs whose reference ranking swaps the last two of the values': 1 discordant
    pair of 10, tau 0.8; among the last three alone, 1 of 3, tau 1/3. Ranking by
    parameter count (more parameters ranked as lower loss) reverses it: -0.8 and -1/3."""
    values = [1.0, 2.0, 3.0, 4.0, 5.0]
    reference = [1.0, 2.0, 3.0, 5.0, 4.0]
    params = [10, 20, 30, 40, 50]
    rows = [(v, r, p) for v, r, p in zip(values, reference, params, strict=True)]
    mixed = [False, False, True, True, True]
    taus = rankings.report_tau("ref", rows, 1, mixed)
    tau, low, high, by_params = taus["all"]
    assert tau == pytest.approx(0.8) and by_params == pytest.approx(-0.8)
    assert low <= tau <= high
    tau, low, high, by_params = taus["mixed"]
    assert tau == pytest.approx(1 / 3) and by_params == pytest.approx(-1 / 3)
    assert "Kendall tau, inherited vs ref: 0.800" in capsys.readouterr().out
    # Too few mixed archs for a ranking among them: no "mixed" entry.
    assert set(rankings.report_tau("ref", rows, 1, [True, True, False, False, False])) == {"all"}
    # Every bootstrap resample of a perfect (reversed) ranking has tau 1 (-1).
    assert rankings.tau_interval(values, values) == pytest.approx((1.0, 1.0))
    assert rankings.tau_interval(values, values[::-1]) == pytest.approx((-1.0, -1.0))


def test_vectorized_tau_b_equals_pair_counting(rankings):
    """The bootstrap's vectorized tau-b equals tau-b by counting pairs, ties included
    (rounded values tie often), and is NaN where one side has no untied pair."""
    rng = np.random.default_rng(0)
    for n in (2, 3, 7, 20):
        a = rng.normal(size=(30, n)).round(1 if n > 3 else 0)
        b = (a + rng.normal(size=(30, n))).round(0)
        got = rankings.tau_b_rows(a, b)
        for row, value in enumerate(got):
            try:
                want = kendall_tau_b(a[row].tolist(), b[row].tolist())
            except ZeroDivisionError:
                assert math.isnan(value)
                continue
            assert value == pytest.approx(want, abs=1e-12)
    assert math.isnan(rankings.tau_b_rows([[1.0, 1.0, 1.0]], [[1.0, 2.0, 3.0]])[0])


def test_gaps_of_known_losses(rankings, capsys):
    rows = [(1.02, 1.0, 1), (0.9, 1.0, 1), (2.0, 2.0, 1)]  # +2%, -10%, 0%
    assert rankings.report_gaps("ref", rows, 1) == pytest.approx(0.1)
    line = capsys.readouterr().out
    assert "largest |gap| 10.0%" in line and "mean -2.7%" in line and "within 3%: 2 of 3" in line


def test_bench_runs_end_to_end_and_reuses_its_standalone_records(bench_files, bench):
    first = bench("--no-full-budget")
    assert first.returncode == 0, first.stderr[-2000:]
    summary = json.loads((bench_files["out"] / "results.json").read_text())
    names = {"smallest", "largest", "mixed0", "mixed1", "mixed2", "ssm", "conv", "pool"}
    assert names <= set(summary["inherited"])
    assert set(summary["inherited"]) == set(summary["standalone_same_tokens"])
    # The tau the bench reports is that of its own two columns, counted pair by pair.
    names = list(summary["inherited"])
    inherited = [summary["inherited"][n] for n in names]
    alone = [summary["standalone_same_tokens"][n] for n in names]
    assert summary["kendall_tau"] == pytest.approx(kendall_tau_b(inherited, alone))
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


def test_reference_seed_and_scratch_control(bench_files, bench):
    """--reference-seed retrains every arch on the whole budget from another seed and
    reports how far the two standalone rankings agree; --finetune-steps also trains each
    arch for as many steps from scratch, the control for the fine-tuned ranking."""
    run = bench("--reference-seed", "1", "--finetune-steps", "1,3")
    assert run.returncode == 0, run.stderr[-2000:]
    summary = json.loads((bench_files["out"] / "results.json").read_text())
    again = summary["reference_seed"]["standalone_all_tokens"]
    first = summary["standalone_all_tokens"]
    assert set(again) == set(first)
    # Another initialisation and batch stream: another loss for every arch but the smallest
    # skip stacks, which may coincide only if their weights did.
    assert sum(again[n] != first[n] for n in first) >= len(first) - 1
    tau, low, high, _ = summary["reference_seed"]["kendall_tau_between_seeds"]["all"]
    assert -1 <= low <= tau <= high <= 1
    assert tau == pytest.approx(kendall_tau_b([first[n] for n in first], [again[n] for n in first]))
    assert "(the ceiling of any ranking)" in run.stdout
    assert list((bench_files["out"] / "standalone" / "seed1").glob("*.json"))
    scratch, finetuned = summary["scratch"], summary["finetuned"]
    assert set(scratch) == set(finetuned) == {"1", "3"}
    # Scratch starts from the standalone initialisation, fine-tuning from the supernet's.
    assert scratch["3"]["loss"] != finetuned["3"]["loss"]
    assert set(finetuned["3"]["kendall_tau"]) == {"same_tokens", "all_tokens", "reference_seed"}
    assert "trained 3 steps from scratch" in run.stdout

    rerun = bench("--reference-seed", "1")  # every record reused, seed 1's too
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "standalone:" not in rerun.stdout


def test_parallel_standalone_runs_match_serial_ones(bench_files, bench):
    """--jobs 2 trains the standalone runs in worker processes (the whole-budget ones while
    the supernet trains): the records are those of the serial run, to the bit."""
    serial = bench("--finetune-steps", "1")
    assert serial.returncode == 0, serial.stderr[-2000:]
    out = bench_files["out"]
    parallel = bench("--jobs", "2", "--out", str(out.parent / "parallel"), "--finetune-steps", "1")
    assert parallel.returncode == 0, parallel.stderr[-2000:]
    assert "standalone: mixed0" in parallel.stdout  # trained again, not read back
    one = json.loads((out / "results.json").read_text())
    two = json.loads((out.parent / "parallel" / "results.json").read_text())
    for key in ("standalone_same_tokens", "standalone_all_tokens", "inherited", "scratch"):
        assert one[key] == two[key], key


def test_mixed_all_compares_every_arch_of_a_small_space_once(bench_files, bench):
    """Two mixers at each of two layers, every width fixed: 2**2 archs, the two one-mixer
    stacks being the smallest and the largest, so the bench compares exactly four."""
    space = bench_files["out"].parent / "two_mixers.yaml"
    space.write_text(
        "vocab_size: 256\nmax_seq_len: 16\nhead_dim: 8\nd_model: [16]\nheads: [2]\n"
        "ffn: [32]\nmixers: [attention, conv]\nwindows: [8]\nexits: [2]\n"
    )
    bench_files["space"] = str(space)
    result = bench("--no-full-budget", "--mixed", "all")
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((bench_files["out"] / "results.json").read_text())
    assert set(summary["inherited"]) == {"smallest", "largest", "mixed0", "mixed1"}
    layers = [
        tuple(layer["mixer"] for layer in entry["arch"]["layers"])
        for entry in summary["archs"].values()
    ]
    assert sorted(layers) == sorted(itertools.product(["attention", "conv"], repeat=2))
    # No skip arch in this space: the ablation takes the mixer out of the extracted model.
    assert all(isinstance(c, float) for c in summary["mixer_ablation"]["largest"])


def test_few_shot_reads_each_arch_from_the_sub_supernet_of_its_first_mixer(bench_files, bench):
    """--few-shot 0: a one-shot phase, then one sub-supernet per mixer of layer 0 from its
    weights, each training only archs with that mixer there; every bench arch is read
    from its own and ranked against the whole-budget runs."""
    result = bench("--few-shot", "0", "--few-shot-split-at", "4", "--reference-seed", "1")
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((bench_files["out"] / "results.json").read_text())
    few = summary["few_shot"]
    assert few["layers"] == [0] and few["split_at"] == 4
    assert set(few["loss"]) == set(summary["inherited"])
    assert set(few["mixer_ablation"]) == set(summary["inherited"])
    assert set(few["kendall_tau_reference_seed"]) == {"all", "mixed"}
    assert few["loss"] != summary["inherited"]  # other weights than the one-shot supernet's
    runs = bench_files["out"] / "few_shot" / "split4"
    for entry in summary["archs"].values():
        first = entry["arch"]["layers"][0]["mixer"]
        state = read_checkpoint(runs / f"layer0_{first}").state
        # Resumed from the one-shot phase for the rest of the budget, slot 0 pinned.
        assert state["step"] == 2 and state["config"]["init_from"] == str(
            checkpoint_path((runs / "one_shot").resolve())
        )
        assert {key for key in state["usage"] if key.startswith("0:")} == {f"0:{first}"}
    assert "few-shot (layer 0, split at step 4) vs standalone@all" in result.stdout

    again = bench("--few-shot", "0", "--few-shot-split-at", "4", "--reference-seed", "1")
    assert again.returncode == 0, again.stderr[-2000:]  # every run resumed at its end
    assert json.loads((bench_files["out"] / "results.json").read_text())["few_shot"] == few


def test_few_shot_branch_continues_the_one_shot_schedule_and_lr_restarts_it(bench_files, bench):
    """--few-shot-branch: the one-shot phase is the first steps of a --steps run, and each
    sub-supernet branches it and ends at --steps; --few-shot-lr: sub-supernets of their own
    schedule at that peak lr, kept apart from the default lr's runs."""
    result = bench("--few-shot", "0", "--few-shot-split-at", "4", "--few-shot-branch")
    assert result.returncode == 0, result.stderr[-2000:]
    runs = bench_files["out"] / "few_shot" / "split4-branched"
    one_shot = read_checkpoint(runs / "one_shot").state
    assert one_shot["step"] == 4 and one_shot["config"]["steps"] == 6
    for mixer in ("attention", "conv"):
        state = read_checkpoint(runs / f"layer0_{mixer}").state
        assert state["step"] == 6 and state["config"]["branch_from"] == str(
            checkpoint_path((runs / "one_shot").resolve())
        )
        # The one-shot phase's usage counts carry on: slot 0 ran the pinned mixer after it.
        assert state["usage"][f"0:{mixer}"] - one_shot["usage"].get(f"0:{mixer}", 0) == 2
    summary = json.loads((bench_files["out"] / "results.json").read_text())
    assert summary["few_shot"]["branched"] is True
    assert "few-shot (layer 0, split at step 4, branched)" in result.stdout

    result = bench("--few-shot", "0", "--few-shot-split-at", "4", "--few-shot-lr", "0.006")
    assert result.returncode == 0, result.stderr[-2000:]
    state = read_checkpoint(bench_files["out"] / "few_shot" / "split4" / "layer0_conv-lr0.006")
    assert state.state["config"]["lr"] == 0.006 and state.step == 2
    assert "few-shot (layer 0, split at step 4, lr 0.006)" in result.stdout


def test_few_shot_on_two_layers_trains_one_sub_supernet_per_combination(bench_files, bench):
    """Two layers of two mixers each: four sub-supernets, each training the one arch with
    its two mixers, which is read from it."""
    space = bench_files["out"].parent / "two_mixers.yaml"
    space.write_text(
        "vocab_size: 256\nmax_seq_len: 16\nhead_dim: 8\nd_model: [16]\nheads: [2]\n"
        "ffn: [32]\nmixers: [attention, conv]\nwindows: [8]\nexits: [2]\n"
    )
    bench_files["space"] = str(space)
    result = bench("--mixed", "all", "--few-shot", "1,0", "--few-shot-split-at", "0")
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((bench_files["out"] / "results.json").read_text())
    assert summary["few_shot"]["layers"] == [0, 1]
    folder = bench_files["out"] / "few_shot" / "split0"
    runs = sorted(p for p in folder.iterdir() if p.is_dir())
    assert (folder / "few_shot.json").is_file()
    assert [r.name for r in runs] == [
        f"layer0_{a}-layer1_{b}" for a in ("attention", "conv") for b in ("attention", "conv")
    ]
    for run in runs:
        state = read_checkpoint(run).state
        assert state["config"]["init_from"] == ""  # split at step 0: from scratch
        assert sorted(state["usage"]) == sorted(state["config"]["pinned_mixers"])
    assert "few-shot (layers 0,1, split at step 0)" in result.stdout
    # Each sub-supernet holds one arch: every step runs it once as the teacher and once as
    # the (merged) distilled students, 2 passes, against 1 per step for each arch alone.
    assert summary["few_shot"]["arch_passes"] == {"one_shot": 0, "sub_supernets": 4 * 6 * 2}
    assert summary["few_shot"]["share_of_training_alone"] == 2.0
    assert "one-shot phase 0, sub-supernets 48; in all 48, 2.00 of training all 4" in result.stdout


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state, ppid, ...); None once
    the process is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _alive(pid: int) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z"


def _children(pid: int) -> list[int]:
    """Pids of the live (not zombie) processes whose parent is `pid`."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        fields = _stat(int(entry.name))
        if fields is not None and fields[0] != "Z" and int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def test_extend_lrs_tries_past_the_edge_of_the_grid_where_the_best_lr_sits(bench_files, bench):
    # With two lrs the best is always at an edge: each arch tries one more lr, half the
    # lower one where that did best and double the higher one where that did.
    result = bench("--no-full-budget", "--standalone-lrs", "0.003,0.006", "--extend-lrs", "1")
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((bench_files["out"] / "results.json").read_text())
    folder = bench_files["out"] / "standalone"
    for name, tried in summary["standalone_lrs_tried"].items():
        loss = {
            lr: json.loads(next(folder.glob(f"{name}-*-lr{lr:g}.json")).read_text())["val_loss"]
            for lr in tried
        }
        assert len(tried) == 3
        past = 0.0015 if loss[0.003] <= loss[0.006] else 0.012
        assert past in tried, (name, loss)
        best = min(loss, key=loss.__getitem__)
        assert summary["standalone_best_lr"][name] == best
        assert summary["standalone_same_tokens"][name] == loss[best]


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_workers_end_when_the_bench_is_killed(bench_files, run_bench_process):
    """kill -9 on a bench with --jobs 2 leaves no worker behind still training."""
    steps = ["--steps", "3000"]  # long enough to be killed mid-run
    bench = run_bench_process("bench_weight_sharing.py", *TINY, *steps, "--jobs", "2")
    try:
        deadline = time.monotonic() + 120
        workers: list[int] = []
        while len(workers) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
            workers = [p for p in _children(bench.pid) if _is_python(p)]
        assert len(workers) >= 2, "the bench started no worker processes"
    finally:
        bench.kill()
        bench.wait()
    deadline = time.monotonic() + 20
    while any(_alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_alive(p) for p in workers)


def _is_python(pid: int) -> bool:
    try:
        return b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


@pytest.mark.parametrize(
    "args, match",
    [
        (["--reference-seed", "1", "--no-full-budget"], "drop --no-full-budget"),
        (["--reference-seed", "0"], "must differ from --seed"),
        (["--device", "tpu"], "unknown device 'tpu'"),
        (["--jobs", "0"], "--jobs must be 1 or more"),
        (["--extend-lrs", "-1"], "--extend-lrs must be 0 or more, got -1"),
        (["--mixed", "all"], "more than 64; give a count of random archs instead"),
        (["--mixed", "some"], "'some' is not a count or 'all'"),
        (["--few-shot", "0,1"], "need layer slots every arch has, 0 to 0"),
        (["--few-shot", "x"], "'x' is not a list of layer indices"),
        (["--few-shot", "0", "--few-shot-split-at", "6"], "need 0 to 5"),
        (["--few-shot", "0", "--no-full-budget"], "drop --no-full-budget"),
        (["--few-shot", "0", "--few-shot-branch", "--few-shot-lr", "0.01"], "drop --few-shot-lr"),
        (["--few-shot", "0", "--few-shot-lr", "0"], "--few-shot-lr must be > 0"),
    ],
)
def test_bad_options_give_one_line_and_exit_2(bench_files, monkeypatch, capsys, args, match):
    """Checked in-process through the bench's own parser (a subprocess per case spent ~3 s
    importing torch); the script itself is run on bad input by the test below."""
    monkeypatch.syspath_prepend(str(BENCH_DIR))
    monkeypatch.setenv("NAS_CACHE_DIR", str(bench_files["out"].parent / "cache"))
    common = ["--space", bench_files["space"], "--data", bench_files["data"]]
    parse_setup = importlib.import_module("weight_sharing_args").parse_setup
    with pytest.raises(SystemExit) as exited:
        parse_setup("bench", [*common, "--out", str(bench_files["out"]), *TINY, *args])
    assert exited.value.code == 2
    assert match in capsys.readouterr().err.strip().splitlines()[-1]


def test_the_script_gives_one_line_and_exit_2(bench):
    result = bench("--jobs", "0")
    assert result.returncode == 2
    assert "--jobs must be 1 or more" in result.stderr.strip().splitlines()[-1]
    assert "Traceback" not in result.stderr


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
