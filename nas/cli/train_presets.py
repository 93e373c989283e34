"""The presets of `nas train`: what a new run trains with when no flag says otherwise.

Both come from measurements (docs/training.md, "Presets", names the bench command of each):
- quick: the supernet `nas search` trains itself when given none
  (`nas.search.default_supernet.search_train_config`): 600 steps x 1 x max_seq_len tokens,
  without distillation, which hurt the ranking at these budgets. On the default space it
  takes minutes on 2 CPU cores.
- full: a long GPU run with the token budget of the study's GPU run (24.6M tokens on the
  default space) and the sampling that ranked archs best in the study, fair sampling with
  an FFN per (layer, mixer). That sampling was measured at 2M tokens; at 24.6M tokens only
  the default sampling was, and ranked worse than at 2M.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from nas.core.errors import NasError
from nas.search.default_supernet import (
    SEARCH_TRAIN_BATCH,
    SEARCH_TRAIN_STEPS,
    search_train_config,
)
from nas.search_space import SearchSpace
from nas.supernet.training import TrainConfig

# The TrainConfig fields a preset sets; the others keep TrainConfig's defaults.
PRESET_FIELDS = (
    "steps",
    "batch_size",
    "seq_len",
    "distill_weight",
    "fair",
    "ffn_per_mixer",
    "warmup_steps",
    "eval_every",
    "eval_batches",
    "reference_archs",
    "checkpoint_every",
)
PRESETS = ("quick", "full")
FULL_STEPS, FULL_BATCH = 3000, 8  # 8 x 1024 tokens a step: 24.6M tokens on the default space


def preset_config(name: str, space: SearchSpace) -> TrainConfig:
    """The settings of preset `name` ("quick" or "full") for `space`.

    quick: the supernet `nas search` trains itself (600 steps x 1 x max_seq_len tokens,
    no distillation), which fits the main job's minutes on 2 CPU cores. full: a long GPU
    run (3000 steps x 8 x max_seq_len) with the sampling the weight-sharing study measured
    best for ranking, fair sampling and an FFN per mixer, still without distillation.
    """
    if name not in PRESETS:
        raise NasError(f"unknown training preset {name!r}; choose one of {list(PRESETS)}")
    quick = search_train_config(space)
    if name == "quick":
        return quick
    return replace(
        quick,
        steps=FULL_STEPS,
        batch_size=FULL_BATCH,
        fair=True,
        ffn_per_mixer=True,
        eval_every=500,
        reference_archs=4,
        checkpoint_every=100,
    )


def preset_values(name: str, space: SearchSpace) -> dict[str, Any]:
    """The TrainConfig fields preset `name` sets for `space` (the others keep TrainConfig's
    defaults), as keyword arguments of `TrainConfig`."""
    config = preset_config(name, space)
    return {field: getattr(config, field) for field in PRESET_FIELDS}


def preset_help() -> str:
    """The --preset help: what each preset trains, without loading a space."""
    return (
        f"quick (the default): what `nas search` trains, {SEARCH_TRAIN_STEPS} steps x "
        f"{SEARCH_TRAIN_BATCH} x the space's max_seq_len tokens, no distillation; minutes on "
        f"2 CPU cores. full: a long GPU run, {FULL_STEPS} steps x {FULL_BATCH} x max_seq_len "
        "tokens, no distillation, with --fair --ffn-per-mixer, the sampling that ranked "
        "archs best in the weight-sharing study (measured there at 2M tokens; no run has "
        "measured it at this length; docs/training.md)"
    )
