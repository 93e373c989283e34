"""`nas latency ARCH.json`: the predicted latency of one arch, and its measured one."""

from __future__ import annotations

import argparse
import json

from nas.search.drift import measure_drift
from nas.search.measure import Measurer
from nas.search.profile import check_device, check_space, load_profile

from .common import load_arch, load_space
from .profile_cmd import add_workload_arguments, load_or_build

DRIFT_ARCHS = 3  # profile archs re-timed by --measure to see how far the host has moved


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "latency", help="predict an arch's latency from the device profile (--measure: time it)"
    )
    parser.add_argument("arch", metavar="ARCH.json", help="arch JSON file (as `nas space sample`)")
    parser.add_argument(
        "--space",
        metavar="FILE",
        help="search space file (.yaml/.json); default: the shipped space",
    )
    parser.add_argument(
        "--profile",
        metavar="FILE",
        help="use this profile file (its own workload) instead of the cached one",
    )
    add_workload_arguments(parser)
    parser.add_argument(
        "--measure",
        action="store_true",
        help="also measure it on this device, and re-time a few of the profile's archs to "
        "see how far the host's speed has drifted since the profile was built",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=cmd_latency)


def cmd_latency(args: argparse.Namespace) -> int:
    space = load_space(args)
    arch = load_arch(args.arch, space)
    if args.profile:
        profile, path = load_profile(args.profile), args.profile
        check_space(profile, space)
    else:
        space, profile, path, _ = load_or_build(args, accept_quick=True)
    predicted = profile.predictor.predict_one(arch)
    ours = profile.accuracy.rows.get("ours (kernels + correction)")
    out = {
        "arch_id": arch.id,
        "arch": arch.to_dict(),
        "predicted_ms": predicted,
        "workload": profile.workload.to_dict(),
        "profile": str(path),
        "profile_mape_pct": ours.mape if ours else None,
    }
    measurement = drift = None
    if args.measure:
        check_device(profile)
        drift = measure_drift(profile, space, n=DRIFT_ARCHS)
        measurement = Measurer(profile.workload, profile.config.measure).measure_arch(space, arch)
        measured = measurement.median_ms
        out["measured_ms"] = measured
        out["error_pct"] = (predicted - measured) / measured * 100  # of the raw prediction
        out["error_refers_to"] = "predicted_ms"
        out["measurement"] = measurement.to_dict()
        out["drift"] = drift.to_dict()
        out["predicted_scaled_ms"] = drift.scaled(predicted)
        out["error_scaled_pct"] = (out["predicted_scaled_ms"] - measured) / measured * 100
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"arch {arch.id}: predicted {predicted:.3f} ms  ({profile.workload})")
    if measurement is not None and drift is not None:
        print(
            f"  measured {measurement.median_ms:.3f} ms (median of {measurement.runs} runs, "
            f"IQR/median {measurement.rel_iqr:.1%}); prediction error {out['error_pct']:+.1f}% "
            "(raw prediction)"
        )
        print(f"  {drift.line()}")
        print(
            f"  drift-scaled prediction {out['predicted_scaled_ms']:.3f} ms "
            f"(x{drift.scale:.3f}): error {out['error_scaled_pct']:+.1f}%"
        )
    if ours is not None:
        print(
            f"  profile: {path}  (held-out MAPE {ours.mape:.2f}%, {ours.within_10:.0%} within ±10%)"
        )
    return 0
