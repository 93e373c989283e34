"""bench_weight_sharing.py's command line: its flags, their checks, and the run they set up.

`parse_setup` parses the flags, reads the space, corpus and device, refuses a bad
combination in one line (argparse's `error`: usage, then the line, exit 2) and returns
the `Setup` the bench measures: its archs and the supernet's training config.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from space_args import layer_list, load_space
from weight_sharing_archs import MAX_ENUMERATED, MIXED_ARCHS, bench_archs

import nas
from nas import Arch
from nas.core.errors import NasError
from nas.supernet.corpus import Corpus, load_corpus
from nas.supernet.device import resolve_device
from nas.supernet.few_shot import check_split
from nas.supernet.training import TrainConfig


@dataclass(frozen=True)
class Setup:
    """What the flags set up: everything the bench measures and reports."""

    args: argparse.Namespace  # the parsed flags
    space: nas.SearchSpace  # the space of --space (or the shipped default)
    corpus: Corpus  # the corpus of --data (or the default corpus)
    device: torch.device  # where everything trains and is evaluated
    archs: dict[str, Arch]  # name -> the bench's archs, in table order
    config: TrainConfig  # the supernet's training config (standalone runs vary its lr)
    split_at: int  # steps of the few-shot run's one-shot phase (used with --few-shot)


def _mixed_count(text: str) -> int | None:
    """'20' -> 20 random archs; 'all' -> None, every arch of a small space."""
    if text == "all":
        return None
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a count or 'all'") from None
    if count < 0:
        raise argparse.ArgumentTypeError("--mixed must be 0 or more (or 'all')")
    return count


def _lr_list(text: str) -> list[float]:
    """'0.001,0.003' -> [0.001, 0.003]: distinct positive learning rates, ascending."""
    try:
        lrs = sorted({float(x) for x in text.split(",")})
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"'{text}' is not a comma-separated list of numbers"
        ) from None
    if not lrs or min(lrs) <= 0:
        raise argparse.ArgumentTypeError(f"learning rates must be > 0, got '{text}'")
    return lrs


def _steps_list(text: str) -> tuple[int, ...]:
    """'25,50' -> (25, 50): distinct positive step counts, ascending."""
    try:
        steps = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a list of step counts") from None
    if not steps or steps[0] < 1:
        raise argparse.ArgumentTypeError(f"'{text}': step counts must be 1 or more")
    return tuple(steps)


def _name_list(text: str) -> tuple[str, ...]:
    """'mixed0,mixed1' -> ('mixed0', 'mixed1'); parse_setup checks them against `bench_archs`."""
    return tuple(n.strip() for n in text.split(",") if n.strip())


def build_parser(description: str) -> argparse.ArgumentParser:
    """The bench's flags (`description` heads --help)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--space", help="search space file (default: the shipped space)")
    parser.add_argument(
        "--data", help="corpus, as nas train --data takes it (default: the default corpus)"
    )
    parser.add_argument("--dtype", help="token dtype of a raw .bin corpus (e.g. uint16)")
    parser.add_argument("--steps", type=int, default=800, help="supernet (and standalone) steps")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--random-archs", type=int, default=TrainConfig.random_archs)
    parser.add_argument("--homogeneous-share", type=float, default=TrainConfig.homogeneous_share)
    parser.add_argument(
        "--ffn-per-mixer",
        action="store_true",
        help="an FFN per (layer, mixer) in the supernet (nas train --ffn-per-mixer); the "
        "standalone runs are initialised as always, so their records are shared",
    )
    parser.add_argument(
        "--fair",
        action="store_true",
        help="fair sampling (nas train --fair): every mixer trains at every layer in every step",
    )
    parser.add_argument(
        "--sandwich-random-mixers",
        action="store_true",
        help="the sandwich's largest and smallest archs draw their mixers at random each step",
    )
    parser.add_argument("--distill-weight", type=float, default=TrainConfig.distill_weight)
    parser.add_argument("--early-exit-weight", type=float, default=TrainConfig.early_exit_weight)
    parser.add_argument("--lr", type=float, default=TrainConfig.lr, help="supernet peak lr")
    parser.add_argument(
        "--standalone-lrs",
        type=_lr_list,
        default="0.001,0.003,0.006",
        help="comma-separated peak lrs each standalone run tries; the best validation loss counts",
    )
    parser.add_argument(
        "--extend-lrs",
        type=int,
        default=0,
        metavar="N",
        help="where an arch does best at the lowest (highest) lr of --standalone-lrs, also "
        "try half (double) that lr, up to N steps past the grid's edge, until its best lr "
        "has a tried lr on each side (default 0: the grid as given)",
    )
    parser.add_argument("--eval-batches", type=int, default=32, help="validation batches per arch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--device",
        default="cpu",
        help="cpu (fp32, the default), cuda (bf16 autocast, as nas train) or auto; the "
        "supernet, the standalone runs and every evaluation run there",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="standalone runs trained at once, each in its own process (default 1); the "
        "whole-budget ones start beside the supernet",
    )
    parser.add_argument("--out", default="runs/bench_weight_sharing")
    parser.add_argument(
        "--no-full-budget",
        dest="full_budget",
        action="store_false",
        help="skip the reference column: every arch trained alone on the whole budget",
    )
    parser.add_argument(
        "--family",
        type=_name_list,
        default=(),
        help="comma-separated bench archs (e.g. mixed0,mixed1) that the supernet trains at "
        "every step as its family (nas train --family); marked * in the table",
    )
    parser.add_argument(
        "--mixed",
        type=_mixed_count,
        default=MIXED_ARCHS,
        help="random archs of the space (mixers varying by layer) to compare; with 3 or more, "
        "tau among them alone is printed too: the ranking a search relies on. 'all' compares "
        f"every arch of a space of at most {MAX_ENUMERATED}",
    )
    parser.add_argument(
        "--finetune-steps",
        type=_steps_list,
        default=(),
        help="comma-separated step counts (e.g. 25,50): also rank the archs after fine-tuning "
        "each one's inherited weights for that many steps (lr --finetune-lr, on a batch "
        "stream of its own), and print tau of those losses against each reference",
    )
    parser.add_argument("--finetune-lr", type=float, default=1e-3)
    parser.add_argument(
        "--reference-seed",
        type=int,
        help="train every arch alone on the whole budget once more, initialisation and "
        "batches from this seed, at its best lr, and print tau between the two standalone "
        "rankings: how far two trainings agree, the most any ranking can be expected to",
    )
    parser.add_argument(
        "--few-shot",
        type=layer_list,
        metavar="LAYERS",
        help="also split the supernet on these layers' mixers (e.g. 1 or 1,2; few-shot NAS, "
        "nas train --few-shot): a one-shot phase, then one sub-supernet per combination of "
        "their mixers from its weights; rank each arch with the sub-supernet of its own",
    )
    parser.add_argument(
        "--few-shot-split-at",
        type=int,
        metavar="STEPS",
        help="steps of the few-shot run's one-shot phase (default: half of --steps); each "
        "sub-supernet trains the rest, so every arch's weights see --steps batches. 0 trains "
        "the sub-supernets from scratch",
    )
    parser.add_argument(
        "--few-shot-branch",
        action="store_true",
        help="the sub-supernets branch the one-shot phase (its optimizer state, warmup and "
        "cosine continue from the split) instead of starting a schedule of their own",
    )
    parser.add_argument(
        "--few-shot-lr",
        type=float,
        metavar="LR",
        help="peak lr of the sub-supernets (default: --lr); they start a schedule of their own",
    )
    parser.add_argument(
        "--standalone-dir", help="where standalone results are kept (default: OUT/standalone)"
    )
    return parser


def parse_setup(description: str, argv: Sequence[str] | None = None) -> Setup:
    """Parse `argv` (default: sys.argv), read the space, corpus and device, and check the
    flags together; exits 2 with one line (argparse's `error`) on bad input."""
    parser = build_parser(description)
    args = parser.parse_args(argv)

    try:
        space = load_space(args)
        corpus = load_corpus(args.data, dtype=args.dtype)
        device = resolve_device(args.device)
    except NasError as exc:  # a bad space file, data path or device: one line, exit 2
        parser.error(str(exc))
    if args.mixed is None and 10**space.log10_size > MAX_ENUMERATED + 0.5:
        parser.error(
            f"--mixed all: the space has {10**space.log10_size:.0f} archs, more than "
            f"{MAX_ENUMERATED}; give a count of random archs instead"
        )
    if args.jobs < 1:
        parser.error("--jobs must be 1 or more")
    if args.extend_lrs < 0:
        parser.error(f"--extend-lrs must be 0 or more, got {args.extend_lrs}")
    if args.reference_seed is not None and not args.full_budget:
        parser.error("--reference-seed retrains the whole-budget runs; drop --no-full-budget")
    if args.reference_seed == args.seed:
        parser.error(f"--reference-seed must differ from --seed ({args.seed})")
    split_at = args.steps // 2 if args.few_shot_split_at is None else args.few_shot_split_at
    if args.few_shot is not None:
        try:
            check_split(space, args.few_shot, split_at, args.steps)
        except NasError as exc:
            parser.error(f"--few-shot / --few-shot-split-at: {exc}")
        if not args.full_budget:
            parser.error("--few-shot is compared with the whole-budget runs; drop --no-full-budget")
        if args.few_shot_branch and args.few_shot_lr is not None:
            parser.error("--few-shot-branch keeps the one-shot schedule; drop --few-shot-lr")
        if args.few_shot_lr is not None and not args.few_shot_lr > 0:
            parser.error(f"--few-shot-lr must be > 0, got {args.few_shot_lr}")
    archs = bench_archs(space, args.mixed)
    unknown = [n for n in args.family if n not in archs]
    if unknown:
        parser.error(f"--family: unknown bench arch(s) {unknown}; choose from {list(archs)}")
    config = TrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        seq_len=args.seq_len,
        random_archs=args.random_archs,
        homogeneous_share=args.homogeneous_share,
        fair=args.fair,
        sandwich_random_mixers=args.sandwich_random_mixers,
        ffn_per_mixer=args.ffn_per_mixer,
        distill_weight=args.distill_weight,
        early_exit_weight=args.early_exit_weight,
        lr=args.lr,
        eval_every=max(1, args.steps // 4),
        checkpoint_every=max(1, args.steps // 8),
        seed=args.seed,
        family=tuple(archs[n].to_json() for n in args.family),
    )
    return Setup(args, space, corpus, device, archs, config, split_at)
