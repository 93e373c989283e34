"""The quick profile `nas search` builds when the device has none: the main job's time budget.

A full profile (`nas profile`) measures 80 fitted and 40 held-out subnets and every kernel
twice, minutes apart: about 10 minutes on 2 CPU cores, the whole main job's budget. The
quick one measures 24 fitted and 8 held-out subnets, each kernel once, with shorter
warm-ups; its own accuracy report (held-out MAPE, τ, noise floor) says what that costs,
and it is cached under its own key, never standing in for a full profile. The search
re-times a few profile archs before it starts (drift.py) and measures its candidates for
real at the end (verify.py), so a rougher predictor decides less than it seems.
"""

from __future__ import annotations

from dataclasses import replace

from .profile import ProfileConfig

QUICK_TRAIN = 24  # sampled subnets measured whole to fit the correction
QUICK_HOLDOUT = 8  # held-out subnets for the accuracy report
QUICK_WARMUP_S = 0.25  # warm-up per measurement (the protocol's 0.5 s halved)


def quick_profile_config() -> ProfileConfig:
    """The `ProfileConfig` of the quick profile (see the module docstring)."""
    default = ProfileConfig()
    return replace(
        default,
        n_train=QUICK_TRAIN,
        n_holdout=QUICK_HOLDOUT,
        kernel_passes=1,
        measure=replace(default.measure, warmup_s=QUICK_WARMUP_S),
        kernel_measure=replace(default.kernel_measure, warmup_s=QUICK_WARMUP_S),
    )


def is_quick(config: ProfileConfig) -> bool:
    return config == quick_profile_config()
