"""`nas extract`: a deployable model (or an elastic family) from a search run or a supernet."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from nas.core.errors import NasError
from nas.search.budget import parse_budget
from nas.search.deploy import FORMATS, ExtractRequest, run_extract
from nas.search_space import Arch

from .common import load_arch, load_archs


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "extract",
        help="save a deployable model, or a family of them, from a search run or supernet",
        description="Write a plain PyTorch model (safetensors + config.json + model_card.md) "
        "from a search run (its winner, or --rank N of its front) or from a supernet and an "
        "arch; or an elastic family: several members cut from one set of nested weights, "
        "stored once (--budgets from a run's front, or --archs). Exports to ONNX or "
        "torch.export are checked against the PyTorch model before the command succeeds.",
    )
    what = p.add_argument_group("what to extract")
    what.add_argument("--run", metavar="RUN", help="a finished `nas search` run folder")
    what.add_argument(
        "--rank",
        type=int,
        default=0,
        metavar="N",
        help="the N-th member of the run's front (1 = fastest) instead of its winner",
    )
    what.add_argument(
        "--supernet",
        metavar="RUN",
        help="supernet to cut from: a `nas train` run folder or checkpoint, or a few-shot "
        "folder (default with --run: the one the search used)",
    )
    what.add_argument("--arch", metavar="ARCH.json", help="one arch (as `nas space sample`)")
    fam = p.add_argument_group("families (one artifact, shared weights stored once)")
    fam.add_argument(
        "--budgets",
        metavar="LIST",
        help="one member per latency budget, e.g. 5ms,10ms,20ms: the run's most accurate "
        "front member within each",
    )
    fam.add_argument("--archs", metavar="FILE", help="members from a file of several archs")
    fam.add_argument(
        "--finetune",
        type=int,
        default=0,
        metavar="S",
        help="fine-tune the shared weights S steps on all members together (default 0)",
    )
    out = p.add_argument_group("output")
    out.add_argument("--out", required=True, metavar="DIR", help="folder to write")
    out.add_argument(
        "--format",
        default="safetensors",
        metavar="LIST",
        help=f"comma-separated, of {', '.join(FORMATS)} (safetensors is always written); "
        'onnx needs pip install -e ".[onnx]"',
    )
    out.add_argument("--force", action="store_true", help="replace a model already in --out")
    out.add_argument(
        "--data",
        metavar="PATH",
        help="corpus for the validation loss (default: the one the supernet was trained on)",
    )
    out.add_argument(
        "--profile",
        metavar="FILE",
        help="profile for predicted latency without --run (default: a cached one, if any)",
    )
    out.add_argument(
        "--no-measure", action="store_true", help="do not measure latency on this device"
    )
    out.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_extract)


def cmd_extract(args: argparse.Namespace) -> int:
    request = _request(args)
    say = (lambda m: None) if args.json else (lambda m: print(m, file=sys.stderr))
    result = run_extract(request, say=say, progress=not args.json)
    summary = _summary(result)
    if args.json:
        print(json.dumps(summary, indent=2, sort_keys=True))
        return 0
    for line in _lines(result):
        print(line)
    return 0


def _request(args: argparse.Namespace) -> ExtractRequest:
    formats = tuple(f.strip() for f in args.format.split(",") if f.strip())
    budgets = (
        tuple(parse_budget(b.strip()) for b in args.budgets.split(",")) if args.budgets else ()
    )
    if args.arch and (args.archs or budgets):
        raise NasError("extract: pass --arch (one model) or --archs/--budgets (a family)")
    archs: tuple[Arch, ...] = ()
    if args.arch or args.archs:
        space = _space_for(args)
        archs = (
            (load_arch(args.arch, space),) if args.arch else tuple(load_archs(args.archs, space))
        )
    return ExtractRequest(
        out=Path(args.out),
        run=args.run or "",
        rank=args.rank,
        supernet=args.supernet or "",
        archs=archs,
        budgets=budgets,
        family=bool(args.archs or budgets),
        formats=formats,
        finetune_steps=args.finetune,
        data=args.data or "",
        profile=args.profile or "",
        measure=not args.no_measure,
        force=args.force,
        command="nas " + shlex.join(sys.argv[1:]) if sys.argv[1:] else "nas extract",
    )


def _space_for(args: argparse.Namespace):
    """The space arch files are checked against: the supernet's (or the run's)."""
    from nas.search.evaluator import open_supernet
    from nas.search.search_run import SearchRun

    if args.supernet:
        return open_supernet(args.supernet).space
    if args.run:
        return SearchRun(args.run).space
    raise NasError("extract: --arch/--archs need the supernet to cut from: pass --supernet RUN")


def _summary(result) -> dict:
    return {
        "out": str(result.out),
        "family": result.family,
        "members": [
            {
                "name": i.name,
                "arch_id": i.arch.id,
                "arch": i.arch.to_dict(),
                "weights": i.weights,
                **i.info,
            }
            for i in result.items
        ],
        "exports": [c.__dict__ | {"path": str(c.path)} for c in result.exports],
        "notes": result.notes,
    }


def _lines(result) -> list[str]:
    lines = [*result.notes]
    header = (
        f"{'name':<14} {'arch':<12} {'params':>10} {'val loss':>9} {'pred ms':>8} {'meas ms':>8}"
    )
    lines.append(header)
    for item in result.items:
        i = item.info
        lines.append(
            f"{item.name:<14} {item.arch.id:<12} {i['params']:>10,} {i['val_loss']:>9.4f} "
            f"{_ms(i.get('predicted_ms')):>8} {_ms(i.get('measured_ms')):>8}"
        )
        if i.get("loss_before_finetune") is not None:
            lines.append(
                f"{'':<14} fine-tune: {i['loss_before_finetune']:.4f} -> "
                f"{i['loss_after_finetune']:.4f} nats/token"
            )
    if result.family:
        f = result.family
        lines.append(
            f"family: {len(result.items)} members in {f['union_bytes'] / 1e6:.2f} MB "
            f"({f['union_params']:,} params) against {f['sum_bytes'] / 1e6:.2f} MB "
            f"({f['sum_params']:,}) saved apart: {f['union_bytes'] / f['sum_bytes']:.2f}x"
        )
    for check in result.exports:
        lines.append(check.line())
    lines.append(f"wrote {result.out}/ (model_card.md says what it is and how it was made)")
    return lines


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
