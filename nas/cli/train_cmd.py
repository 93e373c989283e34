"""`nas train`: train the supernet of a space on a corpus, into a run folder.

A new run starts from a preset (`--preset quick|full`, docs/training.md: what each sets
and the measurements behind it); every flag given overrides its preset's value.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from nas.core.errors import CheckpointError, NasError
from nas.search_space import SearchSpace
from nas.supernet.checkpoint import checkpoint_path, read_checkpoint
from nas.supernet.corpus import Corpus, load_corpus
from nas.supernet.device import resolve_device
from nas.supernet.few_shot import FEW_SHOT_FILE, check_split, train_few_shot
from nas.supernet.training import TrainConfig, train

from .common import add_space_argument, layer_list, load_archs, load_space
from .train_presets import PRESETS, preset_help, preset_values

# CLI flag -> TrainConfig field. The flags default to None so that a resumed run can tell
# a flag the user gave (which must agree with the run) from one left out.
_CONFIG_FLAGS = {
    "steps": "steps",
    "batch_size": "batch_size",
    "seq_len": "seq_len",
    "random_archs": "random_archs",
    "lr": "lr",
    "homogeneous_share": "homogeneous_share",
    "fair": "fair",
    "sandwich_random_mixers": "sandwich_random_mixers",
    "ffn_per_mixer": "ffn_per_mixer",
    "eval_every": "eval_every",
    "checkpoint_every": "checkpoint_every",
    "seed": "seed",
    "init_from": "init_from",
    "branch_from": "branch_from",
    "pin_mixer": "pinned_mixers",
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train the supernet (sandwich rule, a loss at every exit)",
        description="Train the weight-sharing supernet of a space on a corpus. Everything "
        "goes to the run folder --out: manifest.json, metrics.jsonl, checkpoint.safetensors. "
        "A new run starts from --preset; each flag given overrides the preset's value.",
    )
    add_space_argument(p)
    p.add_argument(
        "--data",
        metavar="PATH",
        help="a text file, a folder of text files, a .npy token array, or a .bin token array "
        "with --tokens-dtype (default: the Python standard library's sources, byte-level)",
    )
    p.add_argument("--tokens-dtype", metavar="DTYPE", help="dtype of a raw .bin token array")
    p.add_argument(
        "--preset",
        choices=PRESETS,
        help=preset_help(),
    )
    p.add_argument("--steps", type=int, metavar="N", help="optimizer steps (preset)")
    p.add_argument("--batch-size", type=int, metavar="B", help="sequences per step (preset)")
    p.add_argument(
        "--seq-len", type=int, metavar="T", help="tokens per sequence (preset: max_seq_len)"
    )
    p.add_argument("--lr", type=float, help=f"peak learning rate ({TrainConfig.lr})")
    p.add_argument(
        "--family",
        metavar="FILE",
        help="archs that train at every step, e.g. the ones you will ship: a JSON file of "
        "one arch, a list of archs, or one arch per line (`nas space sample -n N` prints that)",
    )
    p.add_argument(
        "--init-from",
        metavar="RUN",
        help="start from another run's trained weights (its folder or checkpoint file), e.g. "
        "to specialise a trained supernet to a --family of picked archs",
    )
    p.add_argument(
        "--few-shot",
        type=layer_list,
        metavar="LAYERS",
        help="a few-shot supernet split on these layer slots' mixers (e.g. 1 or 0,1): a "
        "one-shot phase, then one sub-supernet per combination of their mixers, each a run "
        "folder inside --out; an arch is read from the one of its own mixers. It ranked "
        "better than one-shot only with --fair --ffn-per-mixer --sandwich-random-mixers",
    )
    p.add_argument(
        "--split-at",
        type=int,
        metavar="STEP",
        help="with --few-shot: steps of the one-shot phase (default: half of --steps); each "
        "sub-supernet trains the rest, so every arch sees --steps steps in all",
    )
    p.add_argument("--eval-every", type=int, metavar="N", help="steps between validations (preset)")
    p.add_argument(
        "--checkpoint-every", type=int, metavar="N", help="steps between checkpoints (preset)"
    )
    p.add_argument(
        "--seed",
        type=int,
        metavar="S",
        help=f"seed of weights, archs and batches ({TrainConfig.seed})",
    )
    p.add_argument("--out", default="runs/train", metavar="DIR", help="run folder (runs/train)")
    p.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its checkpoint"
    )
    p.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto: CUDA if available"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    _add_experiment_knobs(p)
    p.set_defaults(func=cmd_train)


def _add_experiment_knobs(p: argparse.ArgumentParser) -> None:
    """The sampling and few-shot knobs of the weight-sharing study, last in --help."""
    defaults = TrainConfig()
    g = p.add_argument_group(
        "advanced (experiments of the weight-sharing study; see docs/training.md)"
    )
    g.add_argument(
        "--random-archs",
        type=int,
        metavar="K",
        help=f"random archs per step besides the largest and smallest ({defaults.random_archs})",
    )
    g.add_argument(
        "--homogeneous-share",
        type=float,
        metavar="P",
        help="share of the random archs drawn with one mixer in every layer "
        f"({defaults.homogeneous_share})",
    )
    g.add_argument(
        "--fair",
        action=argparse.BooleanOptionalAction,
        help="fair sampling: instead of --random-archs, one arch per mixer, so that every "
        "mixer trains at every layer in every step (2.6-2.9x the time per step; preset)",
    )
    g.add_argument(
        "--ffn-per-mixer",
        action=argparse.BooleanOptionalAction,
        help="an FFN per (layer, mixer) instead of one per layer shared by the mixers (preset)",
    )
    g.add_argument(
        "--sandwich-random-mixers",
        action=argparse.BooleanOptionalAction,
        help="the sandwich's largest and smallest archs draw each layer's mixer at random at "
        "every step instead of always being attention and skip stacks",
    )
    g.add_argument(
        "--pin-mixer",
        action="append",
        metavar="SLOT:MIXER",
        help="train only archs with this mixer at this layer slot (0-based; repeatable), "
        "e.g. 0:conv: one sub-supernet of a few-shot split, best started with --init-from a "
        "one-shot run",
    )
    g.add_argument(
        "--stop-at",
        type=int,
        metavar="STEP",
        help="stop after this step of the run's --steps (the schedule stays that of --steps); "
        "--resume continues it, --branch-from branches it",
    )
    g.add_argument(
        "--branch-from",
        metavar="RUN",
        help="continue another run, stopped early with --stop-at, as a new run with more "
        "--pin-mixer: its weights, optimizer, schedule and settings carry on (a few-shot "
        "sub-supernet that keeps the one-shot run's warmup and cosine)",
    )


def cmd_train(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    out = Path(args.out)
    flags = {field: getattr(args, flag) for flag, field in _CONFIG_FLAGS.items()}
    flags = {k: v for k, v in flags.items() if v is not None}  # the flags given
    if args.stop_at is not None and args.stop_at < 1:
        raise NasError(f"--stop-at must be a step >= 1, got {args.stop_at}")
    if args.branch_from and args.init_from:
        raise NasError("--branch-from continues a run, --init-from starts anew; give one")
    data, dtype = args.data, args.tokens_dtype
    ckpt_file = checkpoint_path(out)
    settings = ""
    if args.resume and ckpt_file.exists():
        # A resumed run keeps its space, data and settings; flags given must agree with them.
        space, config, data, dtype = _settings_of(ckpt_file, args)
        config = replace(config, **_given(args, flags, space))
    elif args.branch_from:
        # A branch keeps its source's space, data and settings, and adds pins.
        space, config, data, dtype = _settings_of(args.branch_from, args)
        given = _given(args, flags, space)
        new_pins = tuple(given.pop("pinned_mixers", ()))
        config = replace(config, **given)  # --branch-from is among `given`
        config = replace(
            config, pinned_mixers=tuple(dict.fromkeys(config.pinned_mixers + new_pins))
        )
    else:
        space = load_space(args)
        config = TrainConfig(**_given(args, flags, space, preset="quick"))
        settings = f" (preset {args.preset or 'quick'})"
    if args.family:
        # Canonical JSON, so that the same archs given again on --resume compare equal.
        family = tuple(a.to_json() for a in load_archs(args.family, space))
        config = replace(config, family=family)
    config.pins(space)  # a bad --pin-mixer fails before the corpus loads
    split_at = _few_shot_split(args, config, space)  # None without --few-shot
    corpus = load_corpus(data, dtype=dtype, progress=not args.no_progress)
    tokens = corpus.info["tokens"]
    print(
        f"data: {corpus.info['source']} ({corpus.info['split']} split; train {tokens['train']:,} "
        f"/ val {tokens['val']:,} / test {tokens['test']:,} tokens)"
    )
    print(
        f"space: {space.name} (fingerprint {space.fingerprint}); device: {device}; "
        f"{config.steps} steps x {config.batch_size} x {config.seq_len} tokens{settings}"
        + (f", stopping after step {args.stop_at}" if args.stop_at else "")
    )
    started = time.perf_counter()
    if split_at is not None:
        return _train_few_shot(args, space, corpus, config, split_at, device, started)
    result = train(
        space,
        corpus,
        config,
        out,
        resume=args.resume,
        device=device,
        progress=not args.no_progress,
        stop_after=args.stop_at,
        on_event=print,
    )
    minutes = (time.perf_counter() - started) / 60
    print(f"checkpoint: {result.checkpoint} (step {result.step}, {result.tokens:,} tokens)")
    if result.val_loss:
        print(
            f"validation loss, nats/token: largest {result.val_loss['largest']:.3f}, "
            f"smallest {result.val_loss['smallest']:.3f} (uniform: ln {space.vocab_size} = "
            f"{_ln(space.vocab_size):.3f}); {minutes:.1f} min"
        )
    return 0


def _given(
    args: argparse.Namespace, flags: dict[str, Any], space: SearchSpace, preset: str | None = None
) -> dict[str, Any]:
    """The settings the command line gives (TrainConfig fields): those of --preset (else
    of `preset`, if any), each overridden by the flag given for it, in `flags`.
    `NasError` when a flag asks for random archs that fair sampling replaces."""
    name = args.preset or preset
    given = {**(preset_values(name, space) if name else {}), **flags}
    if given.get("fair") and {"random_archs", "homogeneous_share"} & set(flags):
        by_flag = bool(flags.get("fair"))
        source = "--fair" if by_flag else f"--preset {name} (fair sampling)"
        fix = "drop --fair" if by_flag else "pass --no-fair"
        raise NasError(
            f"{source} trains one arch per mixer in place of the random archs; "
            f"drop --random-archs / --homogeneous-share, or {fix}"
        )
    return given


def _few_shot_split(
    args: argparse.Namespace, config: TrainConfig, space: SearchSpace
) -> int | None:
    """The step of the --few-shot split (None without it); `NasError` for a bad split, a
    flag that does not go with it, or a few-shot --out without it."""
    if args.few_shot is None:
        if (Path(args.out) / FEW_SHOT_FILE).exists():
            raise NasError(
                f"{args.out}: holds a few-shot run; continue it with its own flags, "
                f"--few-shot among them, and --resume, or choose another --out"
            )
        if args.split_at is not None:
            raise NasError("--split-at is the step of a --few-shot split; add --few-shot LAYERS")
        return None
    clashing = [
        flag
        for flag, value in (
            ("--pin-mixer", args.pin_mixer),
            ("--init-from", args.init_from),
            ("--branch-from", args.branch_from),
            ("--stop-at", args.stop_at),
            ("--family", args.family),
        )
        if value is not None
    ]
    if clashing:
        raise NasError(
            "--few-shot trains its own one-shot phase and sub-supernets; "
            f"drop {', '.join(clashing)}"
        )
    split_at = config.steps // 2 if args.split_at is None else args.split_at
    check_split(space, args.few_shot, split_at, config.steps)
    return split_at


def _train_few_shot(
    args: argparse.Namespace,
    space: SearchSpace,
    corpus: Corpus,
    config: TrainConfig,
    split_at: int,
    device: torch.device,
    started: float,
) -> int:
    """Train the --few-shot supernet into --out (resumed with --resume) and say where."""
    runs = train_few_shot(
        space,
        corpus,
        config,
        args.few_shot,
        split_at,
        args.out,
        device=device,
        resume=args.resume,
        progress=not args.no_progress,
        on_event=print,
    )
    minutes = (time.perf_counter() - started) / 60
    layers = ",".join(map(str, args.few_shot))
    print(
        f"few-shot supernet: {Path(args.out) / FEW_SHOT_FILE} ({len(runs.subs)} sub-supernets, "
        f"one per mixer combination of layer slots {layers}; {minutes:.1f} min). Read an arch "
        f"from its own: nas.supernet.few_shot.load_few_shot(DIR).sub_for(arch)"
    )
    return 0


def _settings_of(
    run: str | Path, args: argparse.Namespace
) -> tuple[SearchSpace, TrainConfig, str | None, str | None]:
    """The space, settings and data (path, dtype) of the run whose checkpoint is `run`;
    `CheckpointError` when --space names another space."""
    ckpt = read_checkpoint(run)
    space = ckpt.space
    if args.space and load_space(args).fingerprint != space.fingerprint:
        raise CheckpointError(
            f"{ckpt.path}: trained for another search space than {args.space} "
            f"(fingerprint {space.fingerprint})"
        )
    config = TrainConfig.from_dict(ckpt.state.get("config", {}))
    data, dtype = args.data, args.tokens_dtype
    stored = ckpt.state.get("data", {})
    if data is None and stored.get("kind") is not None and stored.get("source") != "python-stdlib":
        data = stored["source"]
        if stored.get("kind") == "tokens" and dtype is None and not str(data).endswith(".npy"):
            dtype = stored.get("dtype")
    return space, config, data, dtype


def _ln(x: int) -> float:
    import math

    return math.log(x)
