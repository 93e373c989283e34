"""A latency profile: one device, one workload, one space, and how far to trust it.

A profile has two parts and a report:

1. a kernel table: every op of the space (each mixer choice at each width, the FFN at
   each width, the embedding, the exit head) measured in isolation, by calling the same
   `StaticBlock` / `embed` / `read_exit` code the extracted model runs;
2. a correction, fitted on whole-model measurements of sampled subnets, for what the
   sum of isolated ops misses;
3. an accuracy report on held-out subnets that no fit has seen, measured fresh, beside
   two baselines and the noise floor (see accuracy.py).

It is stored as one JSON file (never a pickle) in the cache directory
(`$NAS_CACHE_DIR/profiles`, default `~/.cache/nas/profiles`), named by a key that hashes
the device fingerprint (machine, software, workload), the space and the build config, so
it is reused whenever all match and never otherwise.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nas.core.atomic import atomic_write_json
from nas.core.errors import ProfileError, WorkloadError
from nas.search_space import Arch, LayerArch, SearchSpace
from nas.supernet.network import embed, read_exit

from .accuracy import (
    FEATURES,
    FLOPS,
    KERNEL_SUM,
    OURS,
    AccuracyReport,
    build_report,
    measure_twice,
)
from .fingerprint import Workload, device_fingerprint, environment
from .measure import (
    MeasureConfig,
    Measurement,
    Measurer,
    fastest_calm,
    random_model,
    retry_disturbed,
)
from .predictor import (
    ArchEncoder,
    KernelTable,
    LatencyPredictor,
    LinearModel,
    arch_flops_many,
    flops_features,
    hat_features,
    mixer_options,
)

FORMAT = "nas.profile/1"
Step = Callable[[str], None]  # called once per measurement with what is being measured


@dataclass(frozen=True)
class ProfileConfig:
    """How a profile is built. The defaults fit in 10 minutes on 2 CPU cores.

    The config is part of a profile's key: a quick profile built with fewer runs or
    samples is stored beside the default one and never stands in for it.
    """

    n_train: int = 80  # sampled subnets measured whole to fit the correction (plus extremes)
    n_holdout: int = 40  # fresh subnets, never fitted on, measured twice for the report
    seed: int = 0  # seeds arch sampling (numpy) and the random weights (torch)
    measure: MeasureConfig = field(default_factory=MeasureConfig)  # whole models
    # Isolated ops can take tens of microseconds, so each timed sample groups calls up
    # to 1 ms: the median then is not dominated by timer jitter.
    kernel_measure: MeasureConfig = field(
        default_factory=lambda: MeasureConfig(min_sample_ms=1.0, max_attempts=2)
    )
    kernel_instances: int = 4  # copies of an op per timed call (see measure_kernel_table)
    # Each kernel entry is measured once per pass, the passes minutes apart, and the
    # fastest undisturbed one is kept: a slow spell of a shared host lasting seconds
    # would otherwise leave a 10-30% error in the one entry it hit.
    kernel_passes: int = 2

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_train": self.n_train,
            "n_holdout": self.n_holdout,
            "seed": self.seed,
            "measure": self.measure.to_dict(),
            "kernel_measure": self.kernel_measure.to_dict(),
            "kernel_instances": self.kernel_instances,
            "kernel_passes": self.kernel_passes,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProfileConfig:
        return cls(
            n_train=int(data["n_train"]),
            n_holdout=int(data["n_holdout"]),
            seed=int(data["seed"]),
            measure=MeasureConfig(**data["measure"]),
            kernel_measure=MeasureConfig(**data["kernel_measure"]),
            kernel_instances=int(data["kernel_instances"]),
            kernel_passes=int(data.get("kernel_passes", 1)),
        )


def cache_dir() -> Path:
    """Where profiles live: `$NAS_CACHE_DIR/profiles`, else `~/.cache/nas/profiles`."""
    root = os.environ.get("NAS_CACHE_DIR")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "nas"
    return base / "profiles"


def profile_key(space: SearchSpace, env: dict[str, Any], config: ProfileConfig) -> str:
    """16 hex digits naming the (device fingerprint, space, build config) a profile is for."""
    text = json.dumps(
        {
            "device": device_fingerprint(env),
            "space": space.fingerprint,
            "config": config.to_dict(),
        },
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def profile_path(
    space: SearchSpace, env: dict[str, Any], config: ProfileConfig, root: Path | None = None
) -> Path:
    """The cache file of the profile for (this device and workload, `space`, `config`)."""
    w = Workload.from_dict(env)
    key = profile_key(space, env, config)
    return (root or cache_dir()) / f"{w.device}-{w.mode}-b{w.batch}-t{w.seq_len}-{key}.json"


@dataclass
class Profile:
    """A latency model for one (device, workload, space), with its accuracy report."""

    key: str  # profile_key(space, env, config)
    env: dict[str, Any]  # environment(): machine, software and workload
    config: ProfileConfig  # how it was built (runs, samples, seed)
    space: dict[str, Any]  # the space it was built for (SearchSpace.to_dict())
    predictor: LatencyPredictor
    baselines: dict[str, LinearModel]  # FLOPS / FEATURES label -> fitted linear model
    accuracy: AccuracyReport  # held-out report from the build
    train: dict[str, Any]  # {"archs": [canonical JSON], "measured_ms": [...]}
    kernels: list[dict[str, Any]]  # one measurement record per kernel-table entry
    build_s: float  # seconds the build took
    phases: dict[str, float]  # seconds per phase (kernels_s, fit_s, holdout_s, waited_s)
    created: str  # ISO 8601 UTC
    checks: list[dict[str, Any]] = field(default_factory=list)  # later `--check` reports

    @property
    def workload(self) -> Workload:
        return Workload.from_dict(self.env)

    @property
    def seen_ids(self) -> set[str]:
        """Ids of every arch measured for this profile so far (fit, held out or checked)."""
        ids = {Arch.from_json(a).id for a in self.train["archs"]}
        ids.update(self.accuracy.arch_ids)
        for check in self.checks:
            ids.update(check["arch_ids"])
        return ids

    @property
    def contended(self) -> int:
        """Measurements in this profile that stayed disturbed (see measure.MachineProbe)."""
        return (
            sum(bool(k.get("contended")) for k in self.kernels)
            + sum(bool(c) for c in self.train.get("contended", []))
            + self.accuracy.contended
        )

    def predict(self, archs: Sequence[Arch]) -> np.ndarray:
        """(n,) predicted latency of each arch, ms (one forward pass of the workload)."""
        return self.predictor.predict(archs)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "key": self.key,
            "env": self.env,
            "config": self.config.to_dict(),
            "space": self.space,
            "predictor": self.predictor.to_dict(),
            "baselines": {k: v.to_dict() for k, v in self.baselines.items()},
            "accuracy": self.accuracy.to_dict(),
            "train": self.train,
            "kernels": self.kernels,
            "build_s": self.build_s,
            "phases": self.phases,
            "created": self.created,
            "checks": self.checks,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "profile") -> Profile:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            found = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise ProfileError(
                f"{source}: not a {FORMAT} profile (format {found!r}); rebuild "
                "it with `nas profile`"
            )
        try:
            return cls(
                key=data["key"],
                env=data["env"],
                config=ProfileConfig.from_dict(data["config"]),
                space=data["space"],
                predictor=LatencyPredictor.from_dict(data["predictor"]),
                baselines={k: LinearModel.from_dict(v) for k, v in data["baselines"].items()},
                accuracy=AccuracyReport.from_dict(data["accuracy"]),
                train=data["train"],
                kernels=data["kernels"],
                build_s=float(data["build_s"]),
                phases=dict(data.get("phases", {})),
                created=data["created"],
                checks=list(data.get("checks", [])),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ProfileError(
                f"{source}: damaged profile ({exc!r}); rebuild it with `nas profile`"
            ) from None


def save_profile(profile: Profile, path: str | Path) -> None:
    """Write `profile` as JSON, atomically (a reader sees the old file or the new one)."""
    atomic_write_json(path, profile.to_dict())


def load_profile(path: str | Path) -> Profile:
    """Read a profile written by `save_profile`. Raises `ProfileError` naming the file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ProfileError(f"{path}: no such profile; build it with `nas profile`") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ProfileError(
            f"{path}: unreadable profile ({exc}); rebuild it with `nas profile --refresh`"
        ) from None
    return Profile.from_dict(data, source=str(path))


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


# ------------------------------------------------------------------ kernel table
def kernel_plan(space: SearchSpace) -> list[tuple[str, int, Any]]:
    """The entries of the kernel table, in measuring order: (kind, d_model, choice)."""
    plan: list[tuple[str, int, Any]] = []
    for d in space.d_model:
        plan.append(("embed", d, None))
        plan.extend(("mixer", d, key) for key in mixer_options(space) if key[0] != "skip")
        plan.extend(("ffn", d, f) for f in space.ffn if f > 0)
        plan.append(("exit", d, None))
    return plan


def measure_kernel_table(
    space: SearchSpace,
    measurer: Measurer,
    config: MeasureConfig,
    seed: int = 0,
    step: Step | None = None,
    instances: int = 4,
    passes: int = 1,
) -> tuple[KernelTable, list[dict[str, Any]]]:
    """Measure every op of `space` in isolation, through the extracted model's own modules.

    Each op is cut out of extracted models (seeded random weights) and called exactly as
    `StaticModel.forward` calls it, on a fixed (B, T, d) input. One timed call runs
    `instances` copies of the op with their own weights (blocks chained, as a model
    chains them) and the entry is its time / `instances`: a single small op's latency
    depends on where its weights happen to lie in memory by 10-40% on a 2-core CPU,
    and several copies average that out, as the layers of a real model do. Every entry
    is measured once in each of `passes` passes (each in its own random order) and the
    fastest undisturbed measurement is kept (see `measure.fastest_calm`).
    """
    options = mixer_options(space)
    n_d = len(space.d_model)
    table = KernelTable(
        embed_ms=np.zeros(n_d),
        exit_ms=np.zeros(n_d),
        mixer_ms=np.zeros((n_d, len(options) + 1)),
        ffn_ms=np.zeros((n_d, len(space.ffn) + 1)),
    )
    records: list[dict[str, Any]] = []
    # In a seeded random order: when the machine drifts (a slow spell on a shared host),
    # the entries it hits are scattered over widths and mixers instead of forming a block
    # that would bias every arch of one width alike; the correction averages them out.
    plan = kernel_plan(space)

    def measure_entry(k: int) -> Measurement:
        kind, d, choice = plan[k]
        fn = _op_call(kind, _layer_of(kind, choice), space, d, measurer, instances, seed)
        return measurer.measure(fn, config)

    tries: list[list[Measurement]] = [[] for _ in plan]
    for p in range(passes):
        order = np.random.default_rng([seed, 4, p] if p else [seed, 4]).permutation(len(plan))
        for k in order.tolist():
            tries[k].append(measure_entry(k))
            if step:
                step(f"kernel {plan[k][0]} d{plan[k][1]}")
    done = [fastest_calm(t) for t in tries]
    for (kind, d, choice), m in zip(plan, retry_disturbed(done, measure_entry), strict=True):
        i = space.d_model.index(d)
        layer = _layer_of(kind, choice)
        ms = m.median_ms / instances
        if kind == "embed":
            table.embed_ms[i] = ms
            label = f"embed d{d}"
        elif kind == "exit":
            table.exit_ms[i] = ms
            label = f"exit d{d}"
        elif kind == "mixer":
            table.mixer_ms[i, options.index(choice)] = ms
            label = f"{layer.mixer} d{d} h{layer.heads} w{layer.window}"
        else:
            table.ffn_ms[i, space.ffn.index(choice)] = ms
            label = f"ffn d{d} f{choice}"
        records.append({"op": label, "instances": instances, **_record(m), "median_ms": ms})
    return table, records


def _layer_of(kind: str, choice: Any) -> LayerArch:
    """The one-layer arch choice whose block (or ends) a kernel-table entry times."""
    if kind == "mixer":
        return LayerArch(choice[0], choice[1], choice[2], 0)
    return LayerArch("skip", None, None, choice if kind == "ffn" else 0)


def _op_call(
    kind: str,
    layer: LayerArch,
    space: SearchSpace,
    d: int,
    measurer: Measurer,
    instances: int,
    seed: int,
) -> Callable[[], Any]:
    """One call of `instances` copies of an op, each as `StaticModel.forward` calls it.

    Blocks (a mixer or an FFN) run chained, as in a model; embeddings and exit heads of
    separate models run in turn on the same input.
    """
    x = measurer.hidden(d, seed)  # (B, T, d)
    if kind in ("mixer", "ffn"):
        model = measurer.prepare(random_model(space, Arch(d, (layer,) * instances), seed))
        blocks, consts = list(model.blocks), model.consts

        def chain() -> torch.Tensor:
            h = x
            for block in blocks:
                h = block(h, consts)  # (B, T, d)
            return h

        return chain
    models = [
        measurer.prepare(random_model(space, Arch(d, (layer,)), seed + j)) for j in range(instances)
    ]
    if kind == "embed":
        tokens = measurer.tokens_for(space.vocab_size)  # (B, T)
        tables = [m.embedding for m in models]
        return lambda: [embed(tokens, t.tensors()) for t in tables]  # each (B, T, d)
    heads = [m.exit_head for m in models]
    return lambda: [read_exit(x, h.tensors()) for h in heads]  # each (B, T, V)


def _record(m: Measurement) -> dict[str, Any]:
    return {
        k: m.to_dict()[k]
        for k in (
            "median_ms",
            "rel_iqr",
            "runs",
            "inner",
            "attempts",
            "noisy",
            "contended",
            "foreign_cores",
            "slowdown",
        )
    }


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


# ------------------------------------------------------------------ build and check
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
    )


def check_space(profile: Profile, space: SearchSpace) -> None:
    """Raise `ProfileError` unless `profile` was built for `space`."""
    if SearchSpace.from_dict(profile.space).fingerprint != space.fingerprint:
        raise ProfileError(
            "the profile was built for another search space; rebuild it with "
            "`nas profile --space FILE`"
        )


def check_profile(
    profile: Profile,
    space: SearchSpace,
    n: int,
    config: MeasureConfig | None = None,
    step: Step | None = None,
) -> AccuracyReport:
    """Measure `n` archs this profile has never seen and score it on them.

    The report is appended to `profile.checks` (the caller saves the profile).
    """
    if n < 2:
        raise ProfileError(f"--check needs at least 2 archs to rank, got {n}")
    check_space(profile, space)
    check_device(profile)
    workload = profile.workload
    measurer = Measurer(workload, config or profile.config.measure, seed=len(profile.checks) + 1)
    # Each check draws from its own seeded stream, and skips every arch already seen.
    rng = np.random.default_rng([int(profile.key, 16) % 2**32, 3, len(profile.checks)])
    archs = fresh_archs(space, n, rng, profile.seen_ids)
    report = evaluate(profile.predictor, profile.baselines, space, archs, measurer, step)
    profile.checks.append(
        {
            **report.to_dict(),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
    )
    return report


def get_profile(
    space: SearchSpace,
    workload: Workload,
    refresh: bool = False,
    config: ProfileConfig | None = None,
    step: Step | None = None,
    root: Path | None = None,
) -> tuple[Profile, Path, bool]:
    """The cached profile for (this device, `workload`, `space`, `config`), built if missing.

    Returns (profile, its path, whether it was built now). `refresh` rebuilds it anyway.
    Raises `DeviceError` if the workload's device is not available here.
    """
    config = config or ProfileConfig()
    workload.check_available()
    env = environment(workload)
    path = profile_path(space, env, config, root)
    if path.is_file() and not refresh:
        profile = load_profile(path)
        if profile.key == profile_key(space, env, config):
            return profile, path, False
    profile = build_profile(space, workload, config, step)
    save_profile(profile, path)
    return profile, path, True


def check_device(profile: Profile) -> None:
    """Raise `ProfileError` unless `profile` was measured on this machine and stack."""
    here = environment(profile.workload)
    if device_fingerprint(here) != device_fingerprint(profile.env):
        differ = sorted(k for k in here if here.get(k) != profile.env.get(k))
        raise ProfileError(
            f"the profile was measured on another device or stack (differs in {differ}); "
            "build one here with `nas profile`"
        )
