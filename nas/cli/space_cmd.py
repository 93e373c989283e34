"""`nas space show` and `nas space sample`."""

from __future__ import annotations

import argparse
import json

from nas.core.errors import NasError

from .common import add_space_argument, load_arch, load_space


def register(sub: argparse._SubParsersAction) -> None:
    space = sub.add_parser("space", help="inspect a search space")
    space_sub = space.add_subparsers(dest="space_command", metavar="ACTION")
    space_sub.required = True

    show = space_sub.add_parser("show", help="print the choices, size and extreme archs")
    add_space_argument(show)
    show.add_argument("--json", action="store_true", help="print one JSON object")
    show.set_defaults(func=cmd_show)

    sample = space_sub.add_parser("sample", help="print N sampled archs as JSON lines")
    add_space_argument(sample)
    sample.add_argument("-n", type=int, default=1, help="number of archs (default 1)")
    sample.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    sample.set_defaults(func=cmd_sample)

    arch = space_sub.add_parser("arch", help="check an arch JSON file; print its id, params, FLOPs")
    arch.add_argument("arch_file", metavar="ARCH.json")
    add_space_argument(arch)
    arch.add_argument("--json", action="store_true", help="print one JSON object")
    arch.set_defaults(func=cmd_arch)


def _describe(space, arch) -> dict:
    from nas.search.flops import arch_flops

    return {
        "arch": arch.to_dict(),
        "id": arch.id,
        "params": space.param_count(arch),
        "flops": arch_flops(space, arch, batch=1, seq_len=space.max_seq_len),
    }


def cmd_show(args: argparse.Namespace) -> int:
    space = load_space(args)
    smallest, largest = _describe(space, space.smallest()), _describe(space, space.largest())
    if args.json:
        out = {
            "space": space.to_dict(),
            "log10_size": space.log10_size,
            "smallest": smallest,
            "largest": largest,
        }
        print(json.dumps(out, indent=2))
        return 0
    print(f"search space '{space.name}'  (fingerprint {space.fingerprint})")
    rows = [
        ("d_model", space.d_model),
        ("mixers", space.mixers),
        ("heads", f"{list(space.heads)}  (head_dim {space.head_dim})"),
        ("ffn", space.ffn),
        ("windows", space.windows or "-"),
        ("exits", f"{list(space.exits)}  (max depth {space.max_depth})"),
        ("causal", space.causal),
        ("vocab / max_seq_len", f"{space.vocab_size} / {space.max_seq_len}"),
    ]
    for name, value in rows:
        print(f"  {name:<20} {list(value) if isinstance(value, tuple) else value}")
    print(
        f"  {'size':<20} 10^{space.log10_size:.2f} archs "
        f"({len(space.layer_options())} choices per layer)"
    )
    workload = f"FLOPs at batch 1 x {space.max_seq_len} tokens, multiply-adds"
    for label, info in (("smallest", smallest), ("largest", largest)):
        print(
            f"{label}: {info['params'] / 1e6:.3f} M params, {info['flops'] / 1e6:.1f} M {workload}"
        )
        print(f"  {json.dumps(info['arch'], sort_keys=True, separators=(',', ':'))}")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    space = load_space(args)
    if args.n < 0:
        raise NasError(f"-n must be >= 0, got {args.n}")
    for arch in space.sample_many(args.n, seed=args.seed):
        print(arch.to_json())
    return 0


def cmd_arch(args: argparse.Namespace) -> int:
    space = load_space(args)
    info = _describe(space, load_arch(args.arch_file, space))
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(
            f"arch {info['id']}: {info['params'] / 1e6:.3f} M params, "
            f"{info['flops'] / 1e6:.1f} M FLOPs at batch 1 x {space.max_seq_len} tokens"
        )
    return 0
