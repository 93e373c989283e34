"""Training throughput: one subnet's step inside the supernet vs the same arch trained alone.

For each arch, two ways to take one training step (forward, cross-entropy, backward,
gradient clipping, AdamW step) on the same batch:
  - inside the supernet, with the trainer's optimizer and clipping: the forward slices the
    max-size weights, the gradients land in the max-size tensors, and AdamW (over all
    supernet parameters) updates those that received a gradient. It is the trainer's step
    for one arch simplified to what a static model can do alike: the logits of the arch's
    own exit only and cross-entropy against the targets, where the trainer's sandwich step
    also reads the earlier exits and, for students, mixes in distillation from the
    largest arch;
  - the arch extracted as a static model with its own AdamW, the same loss.
Steps are timed interleaved in one run (round-robin, alternating which goes first, median
of the rounds) so that machine noise hits both alike. Prints tokens/s and the ratio
supernet time / static time (target: 1.2 or less).

On --device cuda both run under bf16 autocast, as the trainer does, and each timed step
ends with a device synchronisation.

Threads default to torch's own default (the cores available). The README's figures were
measured on bench/spaces/wide.yaml (the former default space): pass --space for them.

Usage: python bench/bench_train_throughput.py [--rounds 15] [--batch-size 8] [--seq-len 128]
       [--threads N] [--space FILE] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time

import numpy as np
import torch

import nas
from nas import Arch, LayerArch
from nas.supernet.batches import BatchSampler
from nas.supernet.corpus import load_corpus
from nas.supernet.device import autocast, resolve_device
from nas.supernet.sandwich import cross_entropy
from nas.supernet.training import TrainConfig, make_optimizer


def bench_archs(space: nas.SearchSpace) -> dict[str, Arch]:
    """The smallest, the largest, an attention-free middle arch, and a sampled arch."""
    mid_d = space.d_model[len(space.d_model) // 2]
    mid_h = space.heads[len(space.heads) // 2]
    mid_f = space.ffn[len(space.ffn) // 2]
    depth = space.exits[len(space.exits) // 2]
    pattern = [m for m in ("ssm", "conv", "glu", "pool") if m in space.mixers] or [space.mixers[0]]
    layers = []
    for i in range(depth):
        mixer = pattern[i % len(pattern)]
        heads = mid_h if nas.search_space.MIXERS[mixer].uses_heads else None
        layers.append(LayerArch(mixer, heads, None, mid_f))
    archs = {
        "smallest": space.smallest(),
        "middle (ssm/conv/glu/pool)": space.validate(Arch(mid_d, tuple(layers))),
        "sampled (seed 0)": space.sample(seed=0),
        "largest": space.largest(),
    }
    return archs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--space", help="search space file (default: the shipped space)")
    parser.add_argument("--rounds", type=int, default=15, help="timed rounds per arch")
    parser.add_argument("--warmup", type=int, default=3, help="untimed rounds first")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (bf16 autocast)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    space = nas.SearchSpace.from_file(args.space) if args.space else nas.SearchSpace.default()
    corpus = load_corpus(None, progress=False)
    sampler = BatchSampler(corpus.train, args.batch_size, args.seq_len, np.random.default_rng(0))
    config = TrainConfig()
    net = nas.Supernet(space, seed=0).to(device).train()
    net_opt = make_optimizer(net, config)
    net_params = list(net.parameters())  # as the trainer does: listed once, not per step
    tokens = args.batch_size * args.seq_len

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def timed_step(params: list, forward, optimizer, x, y) -> float:
        sync()
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with autocast(device):
            logits = forward(x)
        cross_entropy(logits, y).backward()
        torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
        optimizer.step()
        sync()
        return time.perf_counter() - start

    where = (
        f"{torch.cuda.get_device_name(device)}, bf16 autocast"
        if device.type == "cuda"
        else f"{torch.get_num_threads()} CPU threads"
    )
    print(
        f"training step, batch {args.batch_size} x {args.seq_len} tokens, "
        f"{where}, torch {torch.__version__}, "
        f"median of {args.rounds} interleaved rounds"
    )
    header = f"{'arch':<28} {'params':>8} {'supernet tok/s':>15} {'static tok/s':>13} {'ratio':>6}"
    print(header)
    print("-" * len(header))
    for name, arch in bench_archs(space).items():
        static = net.extract(arch).to(device).train()
        static_opt = make_optimizer(static, config)
        static_params = list(static.parameters())
        runs = {"supernet": [], "static": []}
        for r in range(args.warmup + args.rounds):
            x, y = (t.to(device) for t in sampler.next())
            order = ["supernet", "static"] if r % 2 == 0 else ["static", "supernet"]
            for which in order:
                if which == "supernet":
                    t = timed_step(net_params, functools.partial(net, arch=arch), net_opt, x, y)
                else:
                    t = timed_step(static_params, static, static_opt, x, y)
                if r >= args.warmup:
                    runs[which].append(t)
        sup, sta = statistics.median(runs["supernet"]), statistics.median(runs["static"])
        print(
            f"{name:<28} {space.param_count(arch) / 1e6:>7.2f}M {tokens / sup:>15,.0f} "
            f"{tokens / sta:>13,.0f} {sup / sta:>6.2f}"
        )
    print("ratio = supernet step time / static step time (target <= 1.2)")


if __name__ == "__main__":
    main()
