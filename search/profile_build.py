"""Building a latency profile: the kernel table, the fitted correction and baselines, and
the held-out accuracy report, all measured on this machine (see profile.py)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime, timezone

import numpy as np

from nas.core.errors import ProfileError, WorkloadError
from nas.search_space import Arch, SearchSpace

from . import measured_code
from .accuracy import (
    FEATURES,
    FLOPS,
    KERNEL_SUM,
    OURS,
    AccuracyReport,
    build_report,
    measure_twice,
)
from .baselines import arch_flops_many, flops_features, hat_features
from .fingerprint import Workload, environment
from .kernel_table import kernel_plan, measure_kernel_table
from .measure import Measurement, Measurer, retry_disturbed
from .predictor import ArchEncoder, LatencyPredictor, LinearModel
from .profile_config import ProfileConfig, Step, profile_key
from .profile_format import Profile


# ------------------------------------------------------------------ sampling
def fresh_archs(
    space: SearchSpace, n: int, rng: np.random.Generator, exclude: set[str]
) -> list[Arch]:
    """`n` distinct archs whose ids are not in `exclude` (which this extends).

    Raises `ProfileError` if 50 * n + 100 draws cannot find them (a space too small).
    """
    out: list[Arch] = []
    for _ in range(50 * n + 100):
        if len(out) == n:
            break
        arch = space.sample(rng=rng)
        if arch.id not in exclude:
            exclude.add(arch.id)
            out.append(arch)
    if len(out) < n:
        raise ProfileError(f"space '{space.name}' has too few unseen archs for {n} more samples")
    return out


def measure_archs(
    space: SearchSpace,
    archs: Sequence[Arch],
    measurer: Measurer,
    step: Step | None = None,
    label: str = "whole model",
    seed: int = 0,
) -> list[Measurement]:
    """One whole-model measurement of each arch, in order."""
    out = []
    for arch in archs:
        out.append(measurer.measure_arch(space, arch, seed=seed))
        if step:
            step(label)
    return out


# ------------------------------------------------------------------ build
def total_steps(space: SearchSpace, config: ProfileConfig) -> int:
    """How many measurements `build_profile` makes (for a progress bar)."""
    return (
        config.kernel_passes * len(kernel_plan(space)) + config.n_train + 2 + 2 * config.n_holdout
    )


def _fit_baselines(
    space: SearchSpace, archs: Sequence[Arch], flops: Sequence[int], measured: np.ndarray
) -> dict[str, LinearModel]:
    X_f, names_f = flops_features(flops)
    X_h, names_h = hat_features(space, archs)
    return {
        FLOPS: LinearModel.fit(X_f, measured, names_f),
        FEATURES: LinearModel.fit(X_h, measured, names_h),
    }


def evaluate(
    predictor: LatencyPredictor,
    baselines: dict[str, LinearModel],
    space: SearchSpace,
    archs: Sequence[Arch],
    measurer: Measurer,
    step: Step | None = None,
) -> AccuracyReport:
    """Measure `archs` fresh (twice) and score the predictor and the baselines on them."""
    w = measurer.workload
    first, again = measure_twice(measurer, space, archs, step)
    measured = np.array([m.median_ms for m in first])
    rerun = np.array([m.median_ms for m in again])
    flops = arch_flops_many(space, archs, w.batch, w.seq_len)
    predictions = {
        OURS: predictor.predict(archs),
        KERNEL_SUM: predictor.kernel_sum(archs),
        FLOPS: baselines[FLOPS].predict(flops_features(flops)[0]),
        FEATURES: baselines[FEATURES].predict(hat_features(space, archs)[0]),
    }
    both = first + again
    return build_report(
        archs,
        measured,
        rerun,
        predictions,
        noisy=sum(m.noisy for m in both),
        workload=str(w),
        contended=sum(m.contended for m in both),
    )


def build_profile(
    space: SearchSpace,
    workload: Workload,
    config: ProfileConfig | None = None,
    step: Step | None = None,
) -> Profile:
    """Measure and fit a profile of `space` for `workload` on this machine.

    Raises `DeviceError` if the workload's device is not available here.
    """
    config = config or ProfileConfig()
    workload.check_available()
    if workload.seq_len > space.max_seq_len:
        raise WorkloadError(
            f"sequence length {workload.seq_len} exceeds the space's "
            f"max_seq_len {space.max_seq_len}"
        )
    start = time.perf_counter()
    env = environment(workload)
    measurer = Measurer(workload, config.measure, seed=config.seed)
    table, kernels = measure_kernel_table(
        space,
        measurer,
        config.kernel_measure,
        config.seed,
        step,
        config.kernel_instances,
        config.kernel_passes,
    )
    predictor = LatencyPredictor(ArchEncoder.for_space(space), table)
    phases = {"kernels_s": time.perf_counter() - start}

    # Separate seeded streams for fitting and holding out; the extremes anchor the fit at
    # both ends of the range a search explores.
    rng = np.random.default_rng([config.seed, 1])
    seen: set[str] = set()
    train = [space.smallest(), space.largest()]
    seen.update(a.id for a in train)
    train += fresh_archs(space, config.n_train, rng, seen)
    holdout = fresh_archs(space, config.n_holdout, np.random.default_rng([config.seed, 2]), seen)

    fit = measure_archs(space, train, measurer, step, "fit: whole model", config.seed)
    fit = retry_disturbed(fit, lambda i: measurer.measure_arch(space, train[i], seed=config.seed))
    measured = np.array([m.median_ms for m in fit])
    # Disturbed measurements are left out of every fit, unless so many are disturbed
    # that what is left could not support one (then the report's flags say so).
    trusted = [i for i, m in enumerate(fit) if not m.contended]
    use = trusted if len(trusted) >= max(10, len(fit) // 2) else list(range(len(fit)))
    predictor.fit_correction([train[i] for i in use], measured[use])
    flops = arch_flops_many(space, train, workload.batch, workload.seq_len)
    baselines = _fit_baselines(
        space, [train[i] for i in use], [flops[i] for i in use], measured[use]
    )
    phases["fit_s"] = time.perf_counter() - start - sum(phases.values())
    accuracy = evaluate(predictor, baselines, space, holdout, measurer, step)
    phases["holdout_s"] = time.perf_counter() - start - sum(phases.values())
    phases["waited_s"] = measurer.waits.spent_s
    return Profile(
        key=profile_key(space, env, config),
        config=config,
        env=env,
        space=space.to_dict(),
        predictor=predictor,
        baselines=baselines,
        accuracy=accuracy,
        train={
            "archs": [a.to_json() for a in train],
            "measured_ms": measured.tolist(),
            "rel_iqr": [m.rel_iqr for m in fit],
            "contended": [m.contended for m in fit],
            "flops": flops,
            "used_in_fit": len(use),
        },
        phases=phases,
        kernels=kernels,
        build_s=time.perf_counter() - start,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        code_digest=measured_code.code_digest(),
    )
