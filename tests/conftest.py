"""Shared fixtures: tiny spaces that exercise every mixer in milliseconds."""

from __future__ import annotations

import os

# Set before torch loads OpenMP. Ray 2.60 turns token authentication on for local
# clusters, so tests choose explicitly. On 2 shared cores, OpenMP's default spin-waiting
# makes small tensor work up to 100x slower whenever another process is busy; passive
# waiting keeps the suite's time stable.
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402

from nas.search_space import MIXERS, SearchSpace  # noqa: E402

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
def tiny_space() -> SearchSpace:
    return make_tiny_space()


@pytest.fixture(params=[True, False], ids=["causal", "bidirectional"])
def tiny_space_both(request) -> SearchSpace:
    return make_tiny_space(causal=request.param)
