"""How good is the latency profile of this machine? Ours vs FLOPs-linear vs features-linear.

Builds (with --refresh, or reuses) the profile of a space for one workload (default: the
shipped space, CPU, batch 1 x the space's max_seq_len tokens, all cores; the README's
figures are for bench/spaces/wide.yaml at 256 tokens), then measures N further held-out
archs fresh, each twice (the second pass in reverse order) for the noise floor, and
prints the accuracy table: our predictor (kernel table + correction), the kernel sum
alone, a linear fit on fvcore FLOPs, a linear fit on HAT-style features, and the noise
floor. Finally it times prediction (archs/s) against measurement (archs/s).

The machine must be quiet: the load average is printed before and after; rerun if other
jobs were running.

It also prints the correction as shipped (coefficients bounded below to what is physically
plausible) against the same correction refitted without bounds, on the same fresh archs. --quick
scores the quick profile `nas search` builds instead of the full one.

Usage: python bench/bench_latency_predictor.py [--check 40] [--refresh] [--quick]
           [--threads N] [--batch 1] [--seq-len T] [--space FILE]
"""

from __future__ import annotations

import argparse
import copy
import os
import shlex
import sys
import time

import numpy as np
from tqdm import tqdm

from nas.search.accuracy import error_metrics
from nas.search.fingerprint import Workload
from nas.search.predictor import LinearModel
from nas.search.profile import ProfileConfig, check_profile, get_profile, save_profile, total_steps
from nas.search.quick_profile import quick_measure, quick_profile_config
from nas.search_space import Arch, SearchSpace


def load() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--space", help="space file (default: the shipped space)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--seq-len", type=int, default=None, help="default: the space's max")
    parser.add_argument("--threads", type=int, default=0, help="0 = all available cores")
    parser.add_argument("--check", type=int, default=40, help="fresh held-out archs to measure")
    parser.add_argument("--refresh", action="store_true", help="rebuild the profile first")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="the quick profile `nas search` builds (and its pause-free checks), not the full one",
    )
    args = parser.parse_args()

    space = SearchSpace.from_file(args.space) if args.space else SearchSpace.default()
    workload = Workload(
        batch=args.batch, seq_len=args.seq_len or space.max_seq_len, threads=args.threads
    )
    config = quick_profile_config() if args.quick else ProfileConfig()
    print(f"$ python {shlex.join(sys.argv)}")
    print(f"load average before: {load()}  ({os.cpu_count()} cpus)")

    with tqdm(
        total=total_steps(space, config), desc="profile", file=sys.stderr, mininterval=1.0
    ) as bar:
        profile, path, built = get_profile(
            space, workload, args.refresh, config, lambda _: bar.update(1)
        )
    env = profile.env
    print(f"profile {path}: {'built' if built else 'reused'}, build took {profile.build_s:.0f} s")
    print(
        f"device: {env['cpu_model']}, {env['cpu_cores']} cores, torch {env['torch']}; "
        f"{profile.workload}"
    )
    print(
        f"{len(profile.kernels)} kernel entries; correction fitted on "
        f"{len(profile.train['archs'])} measured subnets "
        f"({config.n_train} sampled + smallest + largest)"
    )
    phases = ", ".join(f"{k} {v:.0f}" for k, v in profile.phases.items())
    print(f"build phases (s): {phases}")
    print(f"disturbed measurements (other processes, or a slow spell): {profile.contended}")
    print("\n[report kept in the profile, from its build]")
    print(profile.accuracy.table())

    start = time.perf_counter()
    with tqdm(total=2 * args.check, desc="check", file=sys.stderr, mininterval=1.0) as bar:
        measure = quick_measure(profile) if args.quick else None
        report = check_profile(profile, space, args.check, measure, lambda _: bar.update(1))
    measure_s = time.perf_counter() - start
    save_profile(profile, path)
    print(f"\n[fresh check: {args.check} more held-out archs, never seen by the profile]")
    print(report.table())
    measured = np.array(report.measured_ms)
    print(
        f"measured latencies: {measured.min():.2f} .. {measured.max():.2f} ms "
        f"(median {np.median(measured):.2f} ms)"
    )

    print(_unbounded_ablation(profile, report))

    archs = space.sample_many(10_000, seed=12345)
    best = min(_timed(profile.predict, archs) for _ in range(3))
    codes = profile.predictor.codes(archs)
    best_codes = min(_timed(profile.predictor.predict, codes) for _ in range(3))
    measure_rate = 2 * args.check / measure_s
    print(
        f"\nprediction: {len(archs) / best:,.0f} archs/s from Arch objects, "
        f"{len(archs) / best_codes:,.0f} archs/s from integer codes; "
        f"measurement: {measure_rate:.2f} archs/s "
        f"({len(archs) / best / measure_rate:,.0f}x slower)"
    )
    print(f"load average after: {load()}")
    return 0


def _unbounded_ablation(profile, report) -> str:
    """The shipped correction (coefficients bounded below, `Design.lower`) against one
    refitted on the same measurements without bounds, both scored on the fresh check."""
    fit = profile.train["used_in_fit"]
    train = [Arch.from_json(a) for a in profile.train["archs"][:fit]]
    held_out = [Arch.from_json(a) for a in report.archs]
    design = profile.predictor.design(train)
    free = copy.copy(profile.predictor)
    free.correction = LinearModel.fit(
        design.X,
        np.asarray(profile.train["measured_ms"][:fit]),
        design.names,
        design.prior,
        design.groups,
    )
    shipped = error_metrics(profile.predictor.predict(held_out), report.measured_ms)
    unconstrained = error_metrics(free.predict(held_out), report.measured_ms)
    return (
        f"correction bounded (shipped) / unbounded, same fit data, on the fresh check: MAPE "
        f"{shipped.mape:.2f}% / {unconstrained.mape:.2f}% (ratio "
        f"{shipped.mape / unconstrained.mape:.3f}); within ±10% {shipped.within_10:.1%} / "
        f"{unconstrained.within_10:.1%}"
    )


def _timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


if __name__ == "__main__":
    sys.exit(main())
