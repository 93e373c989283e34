"""`nas extract` on a real (tiny) search run: the winner, a front member, an arch, families."""

from __future__ import annotations

import json
import subprocess

import pytest
import torch

import nas
from nas.cli import main
from nas.search_space import Arch
from nas.supernet.checkpoint import load_supernet
from nas.supernet.family import load_family
from search_setup import NAS, SEQ_LEN, make_search_setup


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return make_search_setup(tmp_path_factory.mktemp("extract"))


@pytest.fixture(scope="module")
def run(setup):
    """A finished search: 10 archs, the best 2 re-ranked by 3 fine-tuning steps."""
    out = setup.root / "search"
    args = setup.args("--trials", "10", "--workers", "0", "--rerank", "2", "--rerank-steps", "3")
    proc = subprocess.run(
        [str(NAS), *args, "--out", str(out)],
        capture_output=True,
        text=True,
        env=setup.env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture(autouse=True)
def _cache(setup, monkeypatch):
    monkeypatch.setenv("NAS_CACHE_DIR", setup.env["NAS_CACHE_DIR"])


def _json(capsys, argv: list[str]) -> dict:
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def _tokens() -> torch.Tensor:
    return torch.randint(0, 256, (2, SEQ_LEN), generator=torch.Generator().manual_seed(3))


def test_the_winner_is_the_search_s_fine_tuned_model_with_a_card(run, tmp_path):
    out = tmp_path / "winner"
    proc = subprocess.run(
        [str(NAS), "extract", "--run", str(run), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((run / "manifest.json").read_text())
    arch = Arch.from_dict(manifest["winner"]["arch"])
    model, best = nas.load(out), nas.load(run / "best")
    assert model.arch == arch
    x = _tokens()
    assert torch.equal(model(x), best(x))
    card = (out / "model_card.md").read_text()
    for fragment in (
        arch.id,
        "nats/token",
        "predicted latency",
        "measured at extraction",
        "nas search",
        "nas extract",
        "fine-tuned",
    ):
        assert fragment in card, fragment
    assert arch.id in proc.stdout and "wrote" in proc.stdout


def test_a_front_member_by_rank_equals_its_source_weights(run, setup, tmp_path, capsys):
    front = json.loads((run / "pareto.json").read_text())
    entry = front[0]
    arch = Arch.from_dict(entry["arch"])
    out = tmp_path / "rank1"
    summary = _json(
        capsys, ["extract", "--run", str(run), "--rank", "1", "--out", str(out), "--no-measure"]
    )
    member = summary["members"][0]
    assert member["arch_id"] == arch.id and member["measured_ms"] is None
    assert member["params"] == entry["params"] == setup.space.param_count(arch)
    model, x = nas.load(out), _tokens()
    tuned = run / "rerank" / arch.id
    if (tuned / "config.json").is_file():
        reference = nas.load(tuned)
    else:
        reference = load_supernet(setup.supernet).extract(arch)
    assert torch.equal(model(x), reference.eval()(x))
    # The loss the card reports is the model's loss on the search's own batches: for
    # inherited weights it is the search's loss for that arch.
    if not (tuned / "config.json").is_file():
        assert member["val_loss"] == pytest.approx(entry["loss"], rel=1e-5)


def test_an_arch_from_a_supernet_equals_the_supernet(setup, tmp_path, capsys):
    arch = setup.space.sample_many(1, seed=5)[0]
    arch_file = tmp_path / "arch.json"
    arch_file.write_text(arch.to_json())
    out = tmp_path / "arch"
    summary = _json(
        capsys,
        [
            "extract",
            "--supernet",
            str(setup.supernet),
            "--arch",
            str(arch_file),
            "--profile",
            str(setup.profile),
            "--out",
            str(out),
        ],
    )
    member = summary["members"][0]
    assert member["predicted_ms"] > 0 and member["measured_ms"] > 0
    net, model, x = load_supernet(setup.supernet), nas.load(out), _tokens()
    assert torch.equal(model(x), net(x, arch))


def test_a_family_from_budgets_stores_shared_weights_once(run, setup, tmp_path, capsys):
    front = json.loads((run / "pareto.json").read_text())
    latencies = sorted({row["predicted_ms"] for row in front})
    budgets = [latencies[0], latencies[len(latencies) // 2], latencies[-1]]
    text = ",".join(f"{b * 1000 + 0.5:.0f}us" for b in budgets)
    out = tmp_path / "family"
    summary = _json(
        capsys, ["extract", "--run", str(run), "--budgets", text, "--out", str(out), "--no-measure"]
    )
    family, members = summary["family"], summary["members"]
    assert family["union_params"] <= family["sum_params"]
    if len(members) > 1:
        assert family["union_bytes"] < family["sum_bytes"]
    net, x = load_supernet(setup.supernet), _tokens()
    loaded = load_family(out)
    assert loaded.names == [m["name"] for m in members]
    for m in members:
        arch = Arch.from_dict(m["arch"])
        assert torch.equal(nas.load(out, member=m["name"])(x), net.extract(arch).eval()(x))
    # A budget every member fits gets the most accurate member.
    best = nas.load(out, budget="10s")
    losses = {m["arch_id"]: m["val_loss"] for m in members}
    assert best.arch.id == min(losses, key=losses.get)


def test_a_family_fine_tune_improves_every_member_and_stays_nested(run, setup, tmp_path, capsys):
    front = json.loads((run / "pareto.json").read_text())
    archs = [Arch.from_dict(row["arch"]) for row in front[:3]]
    archs_file = tmp_path / "archs.json"
    archs_file.write_text(json.dumps([a.to_dict() for a in archs]))
    out = tmp_path / "tuned"
    summary = _json(
        capsys,
        [
            "extract",
            "--run",
            str(run),
            "--archs",
            str(archs_file),
            "--finetune",
            "6",
            "--out",
            str(out),
            "--no-measure",
        ],
    )
    recorded = json.loads((out / "family.json").read_text())["members"]
    for m in summary["members"]:
        assert m["loss_after_finetune"] < m["loss_before_finetune"], m
        assert recorded[m["name"]]["loss_before_finetune"] == m["loss_before_finetune"]
    # Nested: members are prefixes of one set of weights, so the embedding of the
    # narrower member is the start of the wider member's.
    models = [nas.load(out, member=m["name"]) for m in summary["members"]]
    by_width = sorted(models, key=lambda mdl: mdl.arch.d_model)
    narrow, wide = by_width[0].state_dict(), by_width[-1].state_dict()
    for name, tensor in narrow.items():
        if name.startswith("embedding."):
            assert torch.equal(tensor, wide[name][tuple(slice(0, s) for s in tensor.shape)])


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--rank", "99"], "--rank 99: the front"),
        (["--budgets", "1us"], "the fastest"),
        (["--finetune", "3"], "--finetune fine-tunes a family"),
        (["--format", "tflite"], "unknown format"),
    ],
)
def test_bad_requests_are_one_line_exit_2(run, tmp_path, capsys, argv, words):
    assert main(["extract", "--run", str(run), "--out", str(tmp_path / "x"), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("nas: error:") and words in err[0], err


def test_not_a_run_and_an_occupied_folder_are_refused(run, tmp_path, capsys):
    assert main(["extract", "--run", str(tmp_path), "--out", str(tmp_path / "x")]) == 2
    assert "not a search run" in capsys.readouterr().err
    out = tmp_path / "taken"
    assert main(["extract", "--run", str(run), "--out", str(out), "--no-measure"]) == 0
    capsys.readouterr()
    assert main(["extract", "--run", str(run), "--out", str(out), "--no-measure"]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["extract", "--run", str(run), "--out", str(out), "--no-measure", "--force"]) == 0
    # A family replacing a model leaves none of the model's files behind.
    argv = ["extract", "--run", str(run), "--budgets", "10s", "--out", str(out), "--no-measure"]
    assert main([*argv, "--force"]) == 0
    assert not (out / "config.json").exists() and not (out / "model.safetensors").exists()
    assert (out / "family.json").is_file()
