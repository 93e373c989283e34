"""The real `nas` console command, run as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import nas

NAS = Path(sys.executable).with_name("nas")


def run_nas(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [str(NAS), *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300
    )


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_space_show_text_and_json():
    proc = run_nas("space", "show")
    assert proc.returncode == 0, proc.stderr
    assert "search space 'default'" in proc.stdout
    assert "smallest:" in proc.stdout and "largest:" in proc.stdout
    proc = run_nas("space", "show", "--json")
    info = json.loads(proc.stdout)
    space = nas.SearchSpace.default()
    assert info["log10_size"] == pytest.approx(space.log10_size)
    assert info["largest"]["params"] == space.param_count(space.largest())
    assert nas.Arch.from_dict(info["smallest"]["arch"]) == space.smallest()
    assert info["largest"]["flops"] > info["smallest"]["flops"] > 0


def test_space_sample_prints_valid_json_lines(tmp_path):
    space_file = tmp_path / "tiny.yaml"
    space_file.write_text(
        "d_model: [16, 32]\nheads: [1, 2]\nffn: [0, 32]\nmixers: [attention, ssm, skip]\n"
        "exits: [1, 2]\nmax_seq_len: 32\nhead_dim: 8\n"
    )
    proc = run_nas("space", "sample", "-n", "5", "--seed", "3", "--space", str(space_file))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 5
    space = nas.SearchSpace.from_file(space_file)
    archs = [space.validate(nas.Arch.from_json(line)) for line in lines]
    assert archs == space.sample_many(5, seed=3)
    assert (
        run_nas("space", "sample", "-n", "5", "--seed", "3", "--space", str(space_file)).stdout
        == proc.stdout
    )


def test_malformed_space_file_is_one_line_exit_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("d_model: [64, 32]\nheads: [2]\nffn: [0]\nmixers: [attention]\nexits: [2]\n")
    assert_one_line_error(
        run_nas("space", "show", "--space", str(bad)), str(bad), "d_model", "ascending"
    )
    broken = tmp_path / "broken.json"
    broken.write_text('{"d_model": [64,')
    assert_one_line_error(
        run_nas("space", "sample", "--space", str(broken)), str(broken), "not valid JSON"
    )
    assert_one_line_error(
        run_nas("space", "show", "--space", str(tmp_path / "nope.yaml")), "not found"
    )


def test_debug_flag_shows_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("d_model: [64, 32]\n")
    proc = run_nas("--debug", "space", "show", "--space", str(bad))
    assert proc.returncode == 2 and "Traceback" in proc.stderr


def test_arch_file_check_and_errors(tmp_path):
    space = nas.SearchSpace.default()
    arch = space.sample(seed=4)
    good = tmp_path / "arch.json"
    good.write_text(arch.to_json())
    proc = run_nas("space", "arch", str(good), "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["id"] == arch.id and info["params"] == space.param_count(arch)
    cases = {
        "trunc.json": (arch.to_json()[:-5], "not valid JSON"),
        "type.json": (
            '{"d_model": 128, "layers": [{"mixer": "pool", "ffn": "big"}]}',
            "layers[0]: field 'ffn'",
        ),
        "foreign.json": (
            '{"d_model": 100, "layers": [{"mixer": "pool"}, {"mixer": "pool"}]}',
            "d_model: 100 is not one of",
        ),
        "mixer.json": (
            '{"d_model": 128, "layers": [{"mixer": "flash"}, {"mixer": "pool"}]}',
            "layers[0].mixer: 'flash'",
        ),
    }
    for name, (text, fragment) in cases.items():
        path = tmp_path / name
        path.write_text(text)
        assert_one_line_error(run_nas("space", "arch", str(path)), str(path), fragment)
    assert_one_line_error(run_nas("space", "arch", str(tmp_path / "missing.json")), "not found")
