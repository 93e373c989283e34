"""`nas eval DIR`: a table and the same as JSON, for a model and a family; one-line errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from conftest import make_tiny_space
from nas.cli import main
from nas.supernet import Supernet, load_model, save_model
from nas.supernet.family import save_family

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = ["--batches", "2", "--batch-size", "4", "--seq-len", "16", "--threads", "1"]
QUIET = ["--no-latency", "--no-progress"]


@pytest.fixture
def files(tmp_path, monkeypatch):
    """A tiny saved model, a family of three and a small text corpus (cache in tmp_path)."""
    monkeypatch.setenv("NAS_CACHE_DIR", str(tmp_path / "cache"))
    space = make_tiny_space()
    net = Supernet(space, seed=1)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():  # away from the near-uniform init, so members' losses differ
        for p in net.parameters():
            p.normal_(0.0, 1.0, generator=gen)
    save_model(net.extract(space.sample(seed=2)), tmp_path / "model")
    members = {"small": space.smallest(), "big": space.largest()}
    save_family(net, members, tmp_path / "fam", {"big": {"val_loss": 3.0, "predicted_ms": 2.0}})
    data = tmp_path / "code.py"
    data.write_text("".join(f"def f{i}(x):\n    return x * {i}\n\n" for i in range(300)))
    return {"model": str(tmp_path / "model"), "fam": str(tmp_path / "fam"), "data": str(data)}


def _eval(files, target, *extra):
    return main(["eval", files[target], "--data", files["data"], *FAST, *extra])


def _json(files, capsys, target, *extra) -> dict:
    assert _eval(files, target, "--json", *extra) == 0
    return json.loads(capsys.readouterr().out)


def test_json_reports_loss_perplexity_bpb_params_and_flops(files, capsys):
    out = _json(files, capsys, "model", *QUIET)
    assert out["kind"] == "model" and out["data"]["kind"] == "text"
    assert out["data"]["tokens"] == 2 * 4 * 16 == out["data"]["windows"] * 16
    (row,) = out["models"]
    assert row["bpb"] == pytest.approx(row["val_loss"] / math.log(2))
    assert row["perplexity"] == pytest.approx(math.exp(row["val_loss"]))
    model = load_model(files["model"])
    assert row["params"] == sum(p.numel() for p in model.parameters())
    assert row["flops"] > row["params"]  # 16 tokens: most weights are used once per token
    assert row["latency_ms"] is None and out["latency_protocol"] is None


def test_table_shows_the_same_numbers_as_json(files, capsys):
    row = _json(files, capsys, "model", *QUIET)["models"][0]
    assert _eval(files, "model", *QUIET) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any("8 evenly spaced windows of 16 tokens = 128 tokens scored" in x for x in lines)
    header = next(i for i, line in enumerate(lines) if line.startswith("name"))
    cells = lines[header + 2].split()
    assert cells[0] == "model"
    assert float(cells[3]) == pytest.approx(row["val_loss"], abs=1e-4)
    assert float(cells[5]) == pytest.approx(row["bpb"], abs=1e-4)
    assert cells[6] == "-"  # --no-latency


def test_latency_is_measured_briefly_at_batch_1(files, capsys):
    out = _json(files, capsys, "model", "--no-progress")
    (row,) = out["models"]
    assert out["workload"]["batch"] == 1 and out["workload"]["seq_len"] == 16
    assert row["latency_ms"] > 0 and row["latency"]["runs"] == 20


def test_a_family_gets_a_row_per_member(files, capsys):
    out = _json(files, capsys, "fam", *QUIET)
    assert out["kind"] == "family"
    assert [m["name"] for m in out["models"]] == ["small", "big"]
    assert out["models"][0]["val_loss"] != out["models"][1]["val_loss"]
    assert out["models"][1]["recorded"]["predicted_ms"] == 2.0
    assert _eval(files, "fam", *QUIET) == 0
    table = capsys.readouterr().out
    assert "\nsmall " in table and "\nbig " in table


@pytest.mark.parametrize(
    "case, match",
    [
        ("missing_dir", "no such folder"),
        ("not_a_model", "config.json"),
        ("missing_data", "no such file or folder"),
        ("long_seq", "max_seq_len"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(files, tmp_path, capsys, case, match):
    (tmp_path / "plain").mkdir()
    argv = {
        "missing_dir": ["eval", str(tmp_path / "nowhere"), "--data", files["data"]],
        "not_a_model": ["eval", str(tmp_path / "plain"), "--data", files["data"]],
        "missing_data": ["eval", files["model"], "--data", str(tmp_path / "nothing.txt")],
        "long_seq": ["eval", files["model"], "--data", files["data"], "--seq-len", "64"],
    }[case]
    assert main([*argv, *QUIET]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith("nas: error:") and "\n" not in err and "Traceback" not in err, err
    assert match in err and captured.out == ""


def test_a_token_array_corpus_has_no_bits_per_byte(files, tmp_path, capsys):
    tokens = tmp_path / "tokens.npy"
    np.save(tokens, (np.arange(6000, dtype=np.int32) * 7) % 256)
    argv = ["eval", files["model"], "--data", str(tokens), *FAST, *QUIET]
    assert main([*argv, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["data"]["kind"] == "tokens" and out["models"][0]["bpb"] is None
    assert main(argv) == 0
    table = capsys.readouterr().out
    assert "bpb: not defined" in table and table.splitlines()[-1].split()[5] == "-"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_gpu_is_one_line(files, capsys):
    assert _eval(files, "model", "--device", "cuda", *QUIET) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("nas: error:") and "\n" not in err and "CUDA" in err, err
