"""`nas profile`: build (or reuse) the latency profile of this device, and check it."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from nas.core.errors import WorkloadError
from nas.search.accuracy import AccuracyReport
from nas.search.fingerprint import Workload
from nas.search.measure import MeasureConfig
from nas.search.profile import ProfileConfig, check_profile, get_profile, save_profile, total_steps
from nas.search.quick_profile import cached_full_or_quick

from .common import add_space_argument, load_space


def add_workload_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags that name a workload and a profile build; shared with `nas latency`."""
    group = parser.add_argument_group("workload (part of the profile's key)")
    # Devices and modes are checked by the library, not by argparse `choices`, so that a
    # wrong one is one line and exit code 2 like every other user error.
    group.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    group.add_argument("--batch", type=int, default=1, help="sequences per forward (default 1)")
    group.add_argument(
        "--seq-len", type=int, default=None, help="tokens per sequence (default: the space's max)"
    )
    group.add_argument(
        "--threads", type=int, default=0, help="CPU threads (default 0 = all available cores)"
    )
    group.add_argument(
        "--mode", default="eager", help="eager, or graph (CUDA-graph replay; cuda only)"
    )
    proto = parser.add_argument_group(
        "build protocol (lowering these makes a quicker, less accurate profile, kept apart)"
    )
    proto.add_argument(
        "--train",
        type=int,
        default=ProfileConfig.n_train,
        metavar="N",
        help="sampled subnets measured to fit the correction (default %(default)s)",
    )
    proto.add_argument(
        "--holdout",
        type=int,
        default=ProfileConfig.n_holdout,
        metavar="N",
        help="held-out subnets measured for the report (default %(default)s)",
    )
    proto.add_argument(
        "--runs",
        type=int,
        default=None,
        metavar="N",
        help="timed runs per measurement (default 30 on cpu, 100 on cuda)",
    )
    proto.add_argument(
        "--warmup-s",
        type=float,
        default=MeasureConfig.warmup_s,
        metavar="S",
        help="warm-up seconds per measurement (default %(default)s)",
    )
    proto.add_argument(
        "--max-waits",
        type=int,
        default=MeasureConfig.max_waits,
        metavar="N",
        help="pauses per measurement while other processes keep the CPU busy (default "
        "%(default)s; then it is kept and flagged)",
    )
    proto.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")


def workload_from_args(args: argparse.Namespace, max_seq_len: int) -> Workload:
    seq_len = max_seq_len if args.seq_len is None else args.seq_len
    if seq_len > max_seq_len:
        raise WorkloadError(f"--seq-len {seq_len} exceeds the space's max_seq_len {max_seq_len}")
    workload = Workload(
        device=args.device,
        batch=args.batch,
        seq_len=seq_len,
        threads=args.threads,
        mode=args.mode,
    )
    workload.check_available()
    return workload


def config_from_args(args: argparse.Namespace) -> ProfileConfig:
    for name in ("train", "holdout"):
        if getattr(args, name) < 2:
            raise WorkloadError(f"--{name} must be at least 2, got {getattr(args, name)}")
    if args.runs is not None and args.runs < 1:
        raise WorkloadError(f"--runs must be at least 1, got {args.runs}")
    if args.warmup_s < 0:
        raise WorkloadError(f"--warmup-s must be >= 0, got {args.warmup_s}")
    if args.max_waits < 0:
        raise WorkloadError(f"--max-waits must be >= 0, got {args.max_waits}")
    # Changes on top of the defaults, so that default flags give exactly the default key.
    default = ProfileConfig()
    protocol = {"runs": args.runs, "warmup_s": args.warmup_s, "max_waits": args.max_waits}
    return replace(
        default,
        n_train=args.train,
        n_holdout=args.holdout,
        seed=args.seed,
        measure=replace(default.measure, **protocol),
        kernel_measure=replace(default.kernel_measure, **protocol),
    )


@contextmanager
def progress_bar(total: int, desc: str):
    """A tqdm bar on stderr; yields the step callback the library calls per measurement."""
    from tqdm import tqdm

    with tqdm(
        total=total,
        desc=desc,
        unit="meas",
        file=sys.stderr,
        mininterval=0.5,
        dynamic_ncols=True,
        leave=False,
    ) as bar:

        def step(label: str) -> None:
            bar.set_postfix_str(label, refresh=False)
            bar.update(1)

        yield step


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "profile",
        help="build or reuse this device's latency profile; --check N scores it on fresh archs",
    )
    add_space_argument(parser)
    add_workload_arguments(parser)
    parser.add_argument(
        "--check",
        type=int,
        default=0,
        metavar="N",
        help="measure N fresh held-out archs and print the accuracy table",
    )
    parser.add_argument("--refresh", action="store_true", help="rebuild even if cached")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=cmd_profile)


def load_or_build(args: argparse.Namespace, refresh: bool = False, accept_quick: bool = False):
    """(space, profile, path, built) for the flags in `args`, building with a progress bar.

    `accept_quick`: with no full profile cached for the workload, use the quick one a
    search built rather than spend ~10 minutes building the full one (`nas latency`)."""
    from nas.search.profile import cache_dir, environment, profile_path

    space = load_space(args)
    workload = workload_from_args(args, space.max_seq_len)
    config = config_from_args(args)
    if accept_quick and not refresh:
        found = cached_full_or_quick(space, workload, config)
        if found is not None:
            profile, path, quick = found
            if quick:
                print(
                    "nas: using the quick profile `nas search` built for this workload; "
                    "`nas profile` builds the full, more accurate one",
                    file=sys.stderr,
                )
            return space, profile, path, False
    path = profile_path(space, environment(workload), config)
    if path.is_file() and not refresh:
        profile, path, built = get_profile(space, workload, config=config)
        return space, profile, path, built
    print(
        f"nas: building the latency profile for {workload} in {cache_dir()} "
        "(a few minutes; reused afterwards)",
        file=sys.stderr,
    )
    with progress_bar(total_steps(space, config), "profiling") as step:
        profile, path, built = get_profile(space, workload, refresh, config, step)
    return space, profile, path, built


def _summary(profile, path, built: bool) -> dict[str, Any]:
    return {
        "path": str(path),
        "key": profile.key,
        "built": built,
        "build_s": round(profile.build_s, 1),
        "env": profile.env,
        "config": profile.config.to_dict(),
        "kernel_entries": len(profile.kernels),
        "train_archs": len(profile.train["archs"]),
        "contended_measurements": profile.contended,
    }


def cmd_profile(args: argparse.Namespace) -> int:
    if args.check < 0 or args.check == 1:
        raise WorkloadError(f"--check needs at least 2 archs, got {args.check}")
    space, profile, path, built = load_or_build(args, refresh=args.refresh)
    check: AccuracyReport | None = None
    if args.check:
        with progress_bar(2 * args.check, "checking") as step:
            check = check_profile(profile, space, args.check, step=step)
        save_profile(profile, path)
    if args.json:
        out = {**_summary(profile, path, built), "accuracy": profile.accuracy.to_dict()}
        if check is not None:
            out["check"] = check.to_dict()
        print(json.dumps(out, indent=2))
        return 0
    env = profile.env
    verb = f"built in {profile.build_s:.0f} s" if built else f"reused (built {profile.created})"
    print(f"profile {path}  {verb}")
    where = env["gpu_name"] if env["device"] == "cuda" else env["cpu_model"]
    print(f"  device: {where} ({env['cpu_cores']} cores), torch {env['torch']}; {profile.workload}")
    print(
        f"  {len(profile.kernels)} kernel-table entries; correction fitted on "
        f"{len(profile.train['archs'])} measured subnets"
    )
    if profile.contended:
        print(
            f"  warning: {profile.contended} of its measurements were disturbed (other "
            "processes, or a slow spell of the machine); rebuild with --refresh when quiet"
        )
    _print_table("build report", profile.accuracy)
    if check is not None:
        _print_table(f"--check {args.check}", check)
    return 0


def _print_table(title: str, report: AccuracyReport, out: Callable[[str], None] = print) -> None:
    out(f"\n[{title}]")
    out(report.table())
