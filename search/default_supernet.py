"""The supernet `nas search` trains when none is given, cached so that the next search reuses it.

The cache holds one ordinary `nas train` run folder per (space, corpus, training config),
under `$NAS_CACHE_DIR/supernets` (default `~/.cache/nas/supernets`). Training resumes from
its last checkpoint, so a search killed while it trains loses at most one checkpoint
interval; a folder whose run completed is reused as it is.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

from nas.search_space import SearchSpace
from nas.supernet.corpus import Corpus
from nas.supernet.training import TrainConfig, read_manifest, train

# The main job's training, sized to fit its 10-minute budget on 2 CPU cores (README,
# "The main job"): the sequence length the search times and validates at, no distillation
# (it hurt ranking at these budgets in the weight-sharing study), small reference sets.
# At a fixed number of tokens, more and smaller steps trained every arch further: on the
# default space, 480 steps of 1 x 1024 tokens left sampled archs 0.1-0.3 nats/token
# lower than 120 steps of 4 x 1024, and put mixed archs ahead of the 2-skip-layer
# smallest one, which the larger batch left ahead of every arch (docs/search.md).
SEARCH_TRAIN_STEPS = 600
SEARCH_TRAIN_BATCH = 1


def search_train_config(space: SearchSpace, seq_len: int | None = None) -> TrainConfig:
    """The training config of the supernet a search trains for `space` itself."""
    return TrainConfig(
        steps=SEARCH_TRAIN_STEPS,
        batch_size=SEARCH_TRAIN_BATCH,
        seq_len=seq_len or space.max_seq_len,
        distill_weight=0.0,
        warmup_steps=20,
        eval_every=SEARCH_TRAIN_STEPS,
        eval_batches=4,
        reference_archs=2,
        checkpoint_every=100,
    )


def supernet_cache_dir() -> Path:
    root = os.environ.get("NAS_CACHE_DIR")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "nas"
    return base / "supernets"


def cached_run_dir(space: SearchSpace, corpus: Corpus, config: TrainConfig) -> Path:
    """The cache folder of the supernet of (`space`, `corpus`, `config`)."""
    key = json.dumps(
        {"space": space.fingerprint, "data": corpus.key, "config": config.to_dict()},
        sort_keys=True,
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return supernet_cache_dir() / f"{space.name}-{digest}"


def is_complete(run_dir: Path) -> bool:
    manifest = read_manifest(run_dir)
    return bool(manifest and manifest.get("status") == "complete")


def default_supernet(
    space: SearchSpace,
    corpus: Corpus,
    config: TrainConfig,
    *,
    progress: bool = True,
    device: str = "auto",
    say: Callable[[str], None] | None = None,
) -> tuple[Path, bool]:
    """The cached supernet run folder of (`space`, `corpus`, `config`), trained (or finished)
    first if needed. Returns (run folder, whether it trained now)."""
    run_dir = cached_run_dir(space, corpus, config)
    if is_complete(run_dir):
        return run_dir, False
    if say:
        say(
            f"training the supernet of space {space.name!r} ({config.steps} steps x "
            f"{config.batch_size} x {config.seq_len} tokens) into {run_dir}; reused afterwards"
        )
    train(space, corpus, config, run_dir, resume=True, device=device, progress=progress)
    return run_dir, True
