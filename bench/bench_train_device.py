"""Supernet training per device: tokens/s and losses, CPU (fp32) against CUDA (bf16 autocast).

Runs the trainer of `nas train` (sandwich rule, in-place distillation, a loss at every
exit, AdamW, validation and checkpoints included) for --steps steps of --batch-size x
--seq-len tokens on the default corpus (or --data), once per device of --devices (default:
the CPU, and CUDA where there is a GPU), with the same seed, so the same archs and batches.
Prints per device its name, the training tokens/s (B x T tokens per step, each trained on
by every arch of the sandwich; the median over the steps after --skip warm-up steps), the
wall time, and the train and validation losses of the largest and smallest archs at the
end; then the ratio of tokens/s against the first device. The losses show whether bf16
autocast training follows fp32 training.

Usage: python bench/bench_train_device.py [--steps 60] [--batch-size 8] [--seq-len 64]
       [--devices cpu,cuda] [--space FILE] [--data PATH] [--out runs/bench_train_device]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path

import torch
from space_args import load_space

from nas.core.errors import NasError
from nas.search.fingerprint import cpu_model
from nas.supernet.corpus import load_corpus
from nas.supernet.device import resolve_device
from nas.supernet.training import METRICS_FILE, MetricsLog, TrainConfig, train


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda}, bf16 autocast)"
    return f"{cpu_model()} ({torch.get_num_threads()} threads, fp32)"


def speed_ratios(rates: list[list[float]], skip: int) -> list[float]:
    """Training tokens/s of each run against the first: the median over each run's steps
    after its first `skip` (warm-up) steps, divided by the first run's such median.

    `rates[i]` holds run i's tokens/s, one per step in order. Raises `ValueError` when a
    run has no step after `skip`."""
    medians = [statistics.median(r[skip:]) for r in rates]
    return [m / medians[0] for m in medians]


def run_on(device: torch.device, space, corpus, config: TrainConfig, out: Path) -> dict:
    """Train from scratch on `device` into `out`; tokens/s and losses from its metrics log."""
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    result = train(space, corpus, config, out, device=device, progress=True)
    wall = time.perf_counter() - started
    steps = [r for r in MetricsLog(out / METRICS_FILE).read() if r["kind"] == "train"]
    return {
        "device": str(device),
        "name": device_name(device),
        "tokens_per_s": [r["tokens_per_s"] for r in steps],
        "wall_s": wall,
        "train_largest": steps[-1]["loss_largest"],
        "train_smallest": steps[-1]["loss_smallest"],
        "val_largest": result.val_loss["largest"],
        "val_smallest": result.val_loss["smallest"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--space", help="search space file (default: the shipped space)")
    parser.add_argument("--data", help="corpus (default: the Python standard library's sources)")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--skip", type=int, default=5, help="warm-up steps left out of tok/s")
    parser.add_argument(
        "--devices", help="comma-separated, first is the reference (default: cpu, and cuda if any)"
    )
    parser.add_argument("--out", default="runs/bench_train_device", help="run folders go here")
    args = parser.parse_args()
    try:
        names = args.devices.split(",") if args.devices else ["cpu"]
        if not args.devices and torch.cuda.is_available():
            names.append("cuda")
        devices = [resolve_device(n.strip()) for n in names]
        space = load_space(args)
        corpus = load_corpus(args.data, progress=True)
    except NasError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.skip >= args.steps:
        print(
            f"error: --skip {args.skip} leaves no timed step of --steps {args.steps}",
            file=sys.stderr,
        )
        return 2
    config = TrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        seq_len=args.seq_len,
        eval_every=args.steps,
        checkpoint_every=args.steps,
    )
    print(
        f"nas train, space {space.name}, {args.steps} steps x {args.batch_size} x "
        f"{args.seq_len} tokens, sandwich of {2 + config.random_archs} archs, torch "
        f"{torch.__version__}; tok/s: median over steps {args.skip + 1}..{args.steps}"
    )
    runs = [run_on(d, space, corpus, config, Path(args.out) / d.type) for d in devices]
    header = (
        f"{'device':<7} {'tok/s':>9} {'x ref':>6} {'wall s':>7} {'train L':>8} {'train S':>8} "
        f"{'val L':>6} {'val S':>6}  name"
    )
    print(header)
    print("-" * len(header))
    ratios = speed_ratios([r["tokens_per_s"] for r in runs], args.skip)
    for r, ratio in zip(runs, ratios, strict=True):
        rate = statistics.median(r["tokens_per_s"][args.skip :])
        print(
            f"{r['device']:<7} {rate:>9,.0f} {ratio:>6.2f} {r['wall_s']:>7.1f} "
            f"{r['train_largest']:>8.3f} {r['train_smallest']:>8.3f} {r['val_largest']:>6.3f} "
            f"{r['val_smallest']:>6.3f}  {r['name']}"
        )
    print("losses in nats/token (L: largest arch, S: smallest); x ref: tok/s against the first")
    return 0


if __name__ == "__main__":
    sys.exit(main())
