"""The quick profile `nas search` builds when the device has none, within its time budget.

A full profile (`nas profile`) measures 80 fitted and 40 held-out subnets and every
kernel twice, minutes apart: about 10 minutes on 2 CPU cores, the whole main job's
budget. The quick one measures 24 fitted and 8 held-out subnets, each kernel once from
15 samples, with shorter warm-ups and at most one pause for a busy machine per
measurement; its own accuracy report (held-out MAPE, τ, noise floor) says what that
costs, and it is cached under its own key, never standing in for a full profile. The
search re-times a few profile archs before it starts (drift.py) and measures its
candidates for real at the end (verify.py), so a rougher predictor decides less than it
seems."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from nas.search_space import SearchSpace

from .fingerprint import Workload, environment
from .measure import MeasureConfig
from .profile import Profile, ProfileConfig, cached_profile, profile_path

QUICK_TRAIN = 24  # sampled subnets measured whole to fit the correction
QUICK_HOLDOUT = 8  # held-out subnets for the accuracy report
QUICK_WARMUP_S = 0.25  # warm-up per measurement (the protocol's 0.5 s halved)
# One pause at most for a busy machine, not four doubling ones: on a 2-core host that is
# rarely calm, the full protocol's pauses took 90 s of a 312 s quick build.
QUICK_WAITS = 1
QUICK_KERNEL_RUNS = 15  # timed samples per kernel-table entry (the protocol: 30)


def quick_profile_config() -> ProfileConfig:
    """The `ProfileConfig` of the quick profile (see the module docstring)."""
    default = ProfileConfig()
    return replace(
        default,
        n_train=QUICK_TRAIN,
        n_holdout=QUICK_HOLDOUT,
        kernel_passes=1,
        measure=replace(default.measure, warmup_s=QUICK_WARMUP_S, max_waits=QUICK_WAITS),
        kernel_measure=replace(
            default.kernel_measure,
            warmup_s=QUICK_WARMUP_S,
            max_waits=QUICK_WAITS,
            runs=QUICK_KERNEL_RUNS,
        ),
    )


def quick_measure(profile: Profile) -> MeasureConfig:
    """The profile's whole-model protocol without pauses for a busy machine, for the few
    archs the drift check and the verification measure: on a 2-core host that is rarely
    calm, the pauses made the drift check of 4 archs take 47 s. A disturbed measurement
    is still flagged and taken once more (the least disturbed kept), and verification
    measures every candidate in several passes anyway."""
    return replace(profile.config.measure, max_waits=0)


def cached_full_or_quick(
    space: SearchSpace, workload: Workload, full: ProfileConfig | None = None
) -> tuple[Profile, Path, bool] | None:
    """(profile, path, quick) cached for this space, workload and code: the full one (built
    with `full`, default the full protocol) if `nas profile` built it, else the quick one
    a search built; None when neither is."""
    env = environment(workload)
    for config, quick in ((full or ProfileConfig(), False), (quick_profile_config(), True)):
        profile = cached_profile(space, workload, config)
        if profile is not None:
            return profile, profile_path(space, env, config), quick
    return None
