"""The outputs of a search: pareto.csv/json, pareto.png, report.md and the --json summary."""

from __future__ import annotations

import csv
import dataclasses
import json
import re

import numpy as np
import pytest

from conftest import make_tiny_space
from nas.search.flops import arch_flops
from nas.search.report import (
    FRONT_COLUMNS,
    TrialRecord,
    front_table,
    plot_front,
    write_front,
)
from nas.search.report_md import summary_json, write_report_md
from nas.search_space import Arch

BUDGET_MS = 10.0
SEQ_LEN = 16
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def trials() -> list[TrialRecord]:
    """Twelve trials over nine archs: feasible, over budget, failed, and one arch twice."""
    space = make_tiny_space()
    archs = list(dict.fromkeys(space.sample_many(9, seed=3)))  # unique, in order
    rng = np.random.default_rng(0)
    out = []
    for number, arch in enumerate(archs):
        params, flops = space.param_count(arch), arch_flops(space, arch, 1, SEQ_LEN)
        predicted = float(rng.uniform(2.0, 14.0))
        loss = float(5.0 - 0.2 * predicted + rng.normal(0.0, 0.3))  # faster, worse: a front
        state = "complete" if predicted <= BUDGET_MS else "infeasible"
        out.append(_record(number, arch, loss, predicted, state, params, flops))
    # The first feasible arch again, later and with a better loss: the earliest trial counts.
    first = next(t for t in out if t.feasible)
    out.append(dataclasses.replace(first, number=len(out), loss=first.loss - 1.0))
    # A failed trial that dominates everything were it counted, and a never-evaluated one.
    out.append(_record(len(out), archs[1], 0.1, 1.0, "failed", out[1].params, out[1].flops))
    out.append(_record(len(out), archs[2], None, 0.5, "complete", out[2].params, out[2].flops))
    return out


def _record(number, arch, loss, predicted_ms, state, params, flops) -> TrialRecord:
    return TrialRecord(
        number=number,
        arch=arch,
        loss=loss,
        predicted_ms=predicted_ms,
        feasible=predicted_ms <= BUDGET_MS,
        state=state,
        node="node0",
        worker="w0",
        seconds=0.1,
        params=params,
        flops=flops,
    )


def expected_front(trials: list[TrialRecord]) -> list[TrialRecord]:
    """Brute force: the earliest evaluated trial of each arch within budget, undominated."""
    first: dict[str, TrialRecord] = {}
    for t in trials:
        if t.loss is not None and t.state != "failed" and t.predicted_ms <= BUDGET_MS:
            first.setdefault(t.arch.id, t)
    pool = list(first.values())

    def dominated(t: TrialRecord) -> bool:
        return any(
            o.loss <= t.loss
            and o.predicted_ms <= t.predicted_ms
            and (o.loss < t.loss or o.predicted_ms < t.predicted_ms)
            for o in pool
        )

    return sorted((t for t in pool if not dominated(t)), key=lambda t: t.predicted_ms)


def _outcome(trials, front, winner_id):
    """Re-rank the two fastest front members; verify them (the first fits, the second not)."""
    rerank = {t.arch.id: t.loss - 0.25 for t in front[:2]}
    verifications = {}
    for t, status in zip(front[:2], ("fits", "over"), strict=False):
        passes = [t.predicted_ms * f for f in (1.02, 0.98, 1.0)]
        verifications[t.arch.id] = {
            "predicted_ms": t.predicted_ms,
            "passes_ms": passes,
            "median_ms": 1.0 * t.predicted_ms,
            "spread": 0.04,  # a fraction of the median
            "status": status,
        }
    return rerank, verifications


def _summary(tmp_path, trials, front, rerank, verifications, winner_id, status):
    return summary_json(
        trials=trials,
        front=front,
        budget_ms=BUDGET_MS,
        workload="batch 1 x 16 tokens, cpu",
        winner_id=winner_id,
        winner_status=status,
        rerank=rerank,
        rerank_tau=0.5,
        verifications=verifications,
        drift={"line": "drift: measured/predicted 1.04 on 3 archs", "ratio": 1.04, "applied": True},
        phases_s={"search": 12.5, "rerank": 30.0, "verify": 4.25},
        command="nas search --budget 10ms --trials 12",
        run_dir=tmp_path,
        journal=tmp_path / "journal.log",
        best=tmp_path / "best" if winner_id else None,
    )


# ------------------------------------------------------------------ pareto.csv / .json
def test_front_matches_brute_force_and_round_trips(tmp_path, trials):
    reference = expected_front(trials)
    assert len(reference) >= 2  # the fixture must exercise a real front
    rerank, verifications = _outcome(trials, reference, None)
    front = write_front(tmp_path, trials, BUDGET_MS, rerank, verifications)
    assert [t.number for t in front] == [t.number for t in reference]
    assert trials[-3].number not in [t.number for t in front]  # the later rerun of an arch

    with open(tmp_path / "pareto.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == FRONT_COLUMNS
        rows = list(reader)
    assert len(rows) == len(front)
    for rank, (row, t) in enumerate(zip(rows, front, strict=True), start=1):
        verified = verifications.get(t.arch.id)
        assert int(row["rank"]) == rank and int(row["trial"]) == t.number
        assert row["arch_id"] == t.arch.id
        assert float(row["loss"]) == t.loss and float(row["predicted_ms"]) == t.predicted_ms
        finetuned = rerank.get(t.arch.id)
        assert row["finetuned_loss"] == ("" if finetuned is None else repr(finetuned))
        assert row["measured_ms"] == ("" if verified is None else repr(verified["median_ms"]))
        assert row["status"] == (verified["status"] if verified else "unverified")
        assert int(row["params"]) == t.params and int(row["flops"]) == t.flops
        assert Arch.from_json(row["arch"]) == t.arch

    data = json.loads((tmp_path / "pareto.json").read_text())
    assert [Arch.from_dict(item["arch"]) for item in data] == [t.arch for t in front]
    for item, t in zip(data, front, strict=True):
        assert set(item) == set(FRONT_COLUMNS)
        assert item["loss"] == t.loss and item["params"] == t.params
        assert item["finetuned_loss"] == rerank.get(t.arch.id)
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temp file


def test_front_is_empty_when_nothing_fits(tmp_path, trials):
    assert write_front(tmp_path, trials, 0.1, {}, {}) == []
    assert (tmp_path / "pareto.csv").read_text().strip() == ",".join(FRONT_COLUMNS)
    assert json.loads((tmp_path / "pareto.json").read_text()) == []


# ------------------------------------------------------------------ pareto.png
@pytest.mark.parametrize("with_winner", [True, False])
def test_plot_is_a_valid_png(tmp_path, trials, with_winner):
    import matplotlib.image

    front = expected_front(trials)
    rerank, _ = _outcome(trials, front, None)
    path = tmp_path / "pareto.png"
    winner = front[0].arch.id if with_winner else None
    plot_front(path, trials, front, BUDGET_MS, winner, rerank if with_winner else {}, "w")
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert matplotlib.image.imread(path).shape == (480, 750, 4)  # 7.5 x 4.8 in at 100 dpi
    assert not list(tmp_path.glob(".*.tmp"))


def test_plot_without_evaluated_trials(tmp_path, trials):
    failed = [t for t in trials if t.state == "failed"]
    plot_front(tmp_path / "p.png", failed, [], BUDGET_MS, None, {})
    assert (tmp_path / "p.png").read_bytes()[:8] == PNG_MAGIC


# ------------------------------------------------------------------ summary and report.md
WINNER_KEYS = {
    "arch",
    "arch_id",
    "inherited_loss",
    "finetuned_loss",
    "predicted_ms",
    "measured_ms",
    "measured_spread",
    "status",
    "params",
    "flops",
}
PATH_KEYS = {"run_dir", "journal", "pareto_csv", "pareto_json", "pareto_png", "report_md", "best"}


def test_summary_json_has_every_key(tmp_path, trials):
    front = expected_front(trials)
    rerank, verifications = _outcome(trials, front, None)
    winner = front[0]
    summary = _summary(tmp_path, trials, front, rerank, verifications, winner.arch.id, "fits")
    for key in (
        "winner",
        "trials",
        "rerank_tau",
        "drift",
        "budget_ms",
        "workload",
        "paths",
        "phases_s",
    ):
        assert key in summary
    assert set(summary["winner"]) == WINNER_KEYS
    assert set(summary["paths"]) == PATH_KEYS
    assert set(summary["trials"]) == {"complete", "infeasible", "failed", "total"}
    states = [t.state for t in trials]
    assert summary["trials"] == {
        "complete": states.count("complete"),
        "infeasible": states.count("infeasible"),
        "failed": states.count("failed"),
        "total": len(trials),
    }
    w = summary["winner"]
    assert Arch.from_dict(w["arch"]) == winner.arch and w["arch_id"] == winner.arch.id
    assert w["inherited_loss"] == winner.loss and w["finetuned_loss"] == rerank[winner.arch.id]
    assert w["measured_ms"] == verifications[winner.arch.id]["median_ms"]
    assert (w["params"], w["flops"]) == (winner.params, winner.flops)
    assert summary["paths"]["pareto_png"] == str(tmp_path / "pareto.png")
    json.dumps(summary, allow_nan=False)  # plain JSON, as `nas search --json` prints it

    with pytest.raises(ValueError, match="not an evaluated trial"):
        _summary(tmp_path, trials, front, rerank, verifications, "0" * 12, "fits")


def test_report_md_names_the_winner_and_the_front(tmp_path, trials):
    front = expected_front(trials)
    rerank, verifications = _outcome(trials, front, None)
    winner = front[0]
    summary = _summary(tmp_path, trials, front, rerank, verifications, winner.arch.id, "fits")
    plot_front(tmp_path / "pareto.png", trials, front, BUDGET_MS, winner.arch.id, rerank)
    text = write_report_md(tmp_path, summary).read_text()

    assert "nas search --budget 10ms --trials 12" in text
    assert "10 ms" in text and "batch 1 x 16 tokens" in text
    assert "drift: measured/predicted 1.04" in text and "scaled by x1.040" in text
    for t in front:
        assert t.arch.id in text
    winner_part = text.split("## Winner", 1)[1]
    assert winner.arch.id in winner_part and winner.arch.to_json() in winner_part
    assert str(tmp_path / "best") in winner_part and "fits" in winner_part
    assert "(spread 4.0%)" in winner_part
    verify_part = text.split("## Verification on the device", 1)[1].split("## Winner")[0]
    for arch_id, v in verifications.items():
        assert arch_id in verify_part and v["status"] in verify_part
        assert ", ".join(f"{p:.3f}" for p in v["passes_ms"]) in verify_part
    assert "No arch fits" not in text
    assert "0.500" in text  # Kendall tau
    assert "![front](pareto.png)" in text
    assert f"optuna-dashboard {tmp_path / 'journal.log'}" in text


def test_report_md_without_winner_says_so_and_suggests_a_budget(tmp_path, trials):
    front = expected_front(trials)
    rerank, _ = _outcome(trials, front, None)
    # Every candidate measured over the budget on the device.
    verifications = {
        t.arch.id: {
            "predicted_ms": t.predicted_ms,
            "passes_ms": [m, m],
            "median_ms": m,
            "spread": 0.1,
            "status": "over",
        }
        for t, m in zip(front, (12.31, 11.07, 13.5), strict=False)
    }
    summary = _summary(tmp_path, trials, front, rerank, verifications, None, None)
    assert summary["winner"] is None and summary["paths"]["best"] is None
    text = write_report_md(tmp_path, summary).read_text()
    winner_part = text.split("## Winner", 1)[1]
    assert "No arch fits the budget of 10 ms" in winner_part
    assert "11.070 ms" in winner_part  # the smallest measured latency is named
    suggested = float(re.search(r"--budget ([0-9.]+)ms", winner_part).group(1))
    assert 11.07 < suggested <= 11.07 * 1.1


def test_report_md_without_any_measurement_names_the_fastest_prediction(tmp_path, trials):
    summary = _summary(tmp_path, trials, [], {}, {}, None, None)
    text = write_report_md(tmp_path, summary).read_text()
    fastest = min(t.predicted_ms for t in trials if t.loss is not None and t.state != "failed")
    assert "No arch fits the budget of 10 ms" in text and f"{fastest:.3f} ms" in text
    assert "the front is empty" in text and "No arch was measured" in text


def test_front_table_console_and_markdown(trials):
    front = expected_front(trials)
    rerank, verifications = _outcome(trials, front, None)
    console = front_table(front, rerank, verifications).splitlines()
    assert len(console) == len(front) + 2  # header, rule, one line per member
    assert console[0].split()[:2] == ["rank", "loss"]
    for line, t in zip(console[2:], front, strict=True):
        assert t.arch.id in line and f"{t.loss:.4f}" in line
    markdown = front_table(front, rerank, verifications, markdown=True).splitlines()
    assert len(markdown) == len(front) + 2
    assert all(line.startswith("| ") and line.endswith(" |") for line in markdown)
