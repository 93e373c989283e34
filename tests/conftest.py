"""Shared fixtures: tiny spaces that exercise every mixer in milliseconds."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# Set before torch loads OpenMP. Ray 2.60 turns token authentication on for local
# clusters, so tests choose explicitly. On 2 shared cores, OpenMP's default spin-waiting
# makes small tensor work up to 100x slower whenever another process is busy; passive
# waiting keeps the suite's time stable.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402

from nas.search_space import MIXERS, SearchSpace  # noqa: E402
from nas.supernet.corpus import load_corpus  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))


def make_tiny_space(causal: bool = True, **overrides) -> SearchSpace:
    fields = {
        "d_model": (16, 32),
        "heads": (1, 2),
        "ffn": (0, 32, 64),
        "mixers": tuple(MIXERS),
        "windows": (4, 8),
        "exits": (1, 2, 3),
        "max_seq_len": 32,
        "head_dim": 8,
        "chunk_size": 8,
        "ssm_state": 4,
        "causal": causal,
        "name": "tiny",
    }
    fields.update(overrides)
    return SearchSpace(**fields)


@pytest.fixture
def one_thread():
    # Tiny models gain nothing from 2 threads, and OpenMP threads that spin-wait slow
    # down badly when other jobs share the 2 cores.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def corpus(tmp_path, monkeypatch):
    """A small corpus of Python-like text; its token cache stays inside tmp_path."""
    monkeypatch.setenv("NAS_CACHE_DIR", str(tmp_path / "cache"))
    text = "".join(f"def f{i}(x):\n    return x * {i} + {i % 7}\n\n" for i in range(400))
    (tmp_path / "code.py").write_text(text)
    return load_corpus(tmp_path / "code.py", progress=False)


class UnpicklingRefused(AssertionError):
    """Raised by `no_unpickling` wherever something tried to unpickle."""


@pytest.fixture
def no_unpickling(monkeypatch):
    """Make every way of unpickling raise `UnpicklingRefused` for the test's duration.

    Patching `pickle.load(s)` alone misses `torch.load`: it builds an Unpickler
    (`pickle_module.Unpickler` subclassed, or `torch._weights_only_unpickler.Unpickler`
    with weights_only) and calls its `load`. So the guard sits at the Unpickler level:
    `pickle.Unpickler` (the C class, whose methods cannot be patched, is replaced by a
    subclass that refuses), the pure-Python `pickle._Unpickler`, the module functions,
    and torch's weights-only unpickler.
    """
    import pickle

    import torch._weights_only_unpickler as weights_only

    def refuse(*args, **kwargs):
        raise UnpicklingRefused("unpickling is not allowed here (the no-pickle guard)")

    class RefusingUnpickler(pickle.Unpickler):
        load = refuse
        find_class = refuse

    monkeypatch.setattr(pickle, "Unpickler", RefusingUnpickler)
    for name in ("load", "loads", "_load", "_loads"):
        monkeypatch.setattr(pickle, name, refuse)
    monkeypatch.setattr(pickle._Unpickler, "load", refuse)
    monkeypatch.setattr(pickle._Unpickler, "find_class", refuse)
    monkeypatch.setattr(weights_only.Unpickler, "load", refuse)
    monkeypatch.setattr(weights_only, "load", refuse)
    return UnpicklingRefused


@pytest.fixture
def tiny_space() -> SearchSpace:
    return make_tiny_space()


@pytest.fixture(params=[True, False], ids=["causal", "bidirectional"])
def tiny_space_both(request) -> SearchSpace:
    return make_tiny_space(causal=request.param)


# ------------------------------------------------------------------ bench scripts
BENCH_DIR = Path(__file__).resolve().parents[1] / "bench"

TINY_BENCH_SPACE = """\
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
def bench_files(tmp_path):
    """A tiny space file and corpus for real bench runs, outputs under "out"."""
    space = tmp_path / "space.yaml"
    space.write_text(TINY_BENCH_SPACE)
    data = tmp_path / "corpus.txt"
    data.write_text("".join(f"def f{i}(x):\n    return x * {i}\n\n" for i in range(400)))
    return {"space": str(space), "data": str(data), "out": tmp_path / "out"}


def _bench_call(files: dict, script: str, args: tuple[str, ...]) -> tuple[list[str], dict]:
    """The command line and environment that run bench/SCRIPT on the tiny space and corpus."""
    common = ["--space", files["space"], "--data", files["data"], "--out", str(files["out"])]
    env = {**os.environ, "NAS_CACHE_DIR": str(files["out"].parent / "cache")}
    env.update(OMP_NUM_THREADS="1")  # tiny models; two shared cores
    return [sys.executable, str(BENCH_DIR / script), *common, *args], env


@pytest.fixture
def run_bench(bench_files):
    """Runs bench/SCRIPT on the tiny space and corpus, its outputs under bench_files["out"]."""

    def run(script: str, *args: str) -> subprocess.CompletedProcess:
        command, env = _bench_call(bench_files, script, args)
        return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)

    return run


@pytest.fixture
def run_bench_process(bench_files):
    """Starts bench/SCRIPT like `run_bench` without waiting for it; returns the Popen."""

    def start(script: str, *args: str) -> subprocess.Popen:
        command, env = _bench_call(bench_files, script, args)
        return subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
        )

    return start
