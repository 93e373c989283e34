"""A tiny trained supernet, corpus and latency profile on disk, for real `nas search` runs."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from conftest import make_tiny_space
from nas.search.fingerprint import Workload
from nas.search.measure import MeasureConfig
from nas.search.profile import ProfileConfig, build_profile, save_profile
from nas.search_space import SearchSpace
from nas.supernet.corpus import load_corpus
from nas.supernet.training import TrainConfig, train

NAS = Path(sys.executable).with_name("nas")  # the installed console command
SEQ_LEN = 16
QUICK = MeasureConfig(runs=3, warmup_iters=1, warmup_s=0.0, max_attempts=1, max_waits=0)


@dataclass(frozen=True)
class SearchSetup:
    root: Path
    space: SearchSpace
    space_file: Path
    data: Path
    supernet: Path  # a run folder of `nas train`
    profile: Path  # a profile file for (cpu, batch 1, SEQ_LEN tokens, 1 thread)
    budget_ms: float  # a budget some archs fit and many do not
    smallest_ms: float  # the smallest arch's predicted latency
    env: dict[str, str]

    def args(self, *extra: str, budget: str | None = None) -> list[str]:
        """`nas search` arguments for this setup (in-process unless `extra` says more)."""
        return [
            "search",
            "--budget",
            budget or f"{self.budget_ms:.4f}ms",
            "--supernet",
            str(self.supernet),
            "--profile",
            str(self.profile),
            "--seq-len",
            str(SEQ_LEN),
            "--threads",
            "1",
            "--no-progress",
            *extra,
        ]


def make_search_setup(root: Path) -> SearchSetup:
    """Train a tiny supernet for a few steps and build a quick profile, under `root`."""
    env = {**os.environ, "NAS_CACHE_DIR": str(root / "cache"), "OMP_NUM_THREADS": "1"}
    space = make_tiny_space(exits=(2, 3))
    space_file = root / "tiny.json"
    space_file.write_text(json.dumps(space.to_dict()))
    data = root / "code.py"
    data.write_text("".join(f"def f{i}(x):\n    return x * {i} + {i % 7}\n\n" for i in range(600)))
    corpus = load_corpus(data, cache_dir=root / "cache", progress=False)
    config = TrainConfig(
        steps=30,
        batch_size=8,
        seq_len=SEQ_LEN,
        eval_every=30,
        checkpoint_every=30,
        distill_weight=0,
    )
    supernet = root / "supernet"
    train(space, corpus, config, supernet, device="cpu", progress=False)
    workload = Workload(seq_len=SEQ_LEN, threads=1)
    profile = build_profile(
        space, workload, ProfileConfig(n_train=8, n_holdout=4, measure=QUICK, kernel_measure=QUICK)
    )
    profile_file = root / "profile.json"
    save_profile(profile, profile_file)
    predicted = profile.predict(space.sample_many(200, seed=11))
    return SearchSetup(
        root=root,
        space=space,
        space_file=space_file,
        data=data,
        supernet=supernet,
        profile=profile_file,
        budget_ms=float(np.quantile(predicted, 0.4)),
        smallest_ms=float(profile.predict([space.smallest()])[0]),
        env=env,
    )
