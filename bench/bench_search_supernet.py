"""Which supernet should the main job train? Trainer settings side by side, at its budget.

Trains the default space's supernet under several settings of the trainer, on the default
corpus at the search's sequence length, and scores the same archs (the smallest, the
largest and N sampled ones) with inherited weights on the search's validation batches.
A supernet that leaves the 2-skip-layer smallest arch (a bigram model) ahead of most
archs makes every search degenerate: it would pick the smallest. Printed per setting: the
training time, the smallest arch's loss, the best and median sampled loss, how many
sampled archs beat the smallest, and Spearman's ρ between parameters and loss.

    python bench/bench_search_supernet.py                         # every setting below
    python bench/bench_search_supernet.py --settings default,fair --archs 24
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from nas.search.default_supernet import search_train_config
from nas.search.evaluator import Evaluator, build_payload, open_supernet, validation_batches
from nas.search_space import SearchSpace
from nas.supernet.corpus import load_corpus
from nas.supernet.training import METRICS_FILE, MetricsLog, TrainConfig, train


def settings(space: SearchSpace) -> dict[str, TrainConfig]:
    """The trainer settings compared: the main job's default and its alternatives."""
    base = search_train_config(space)
    return {
        "default": base,  # batch 1 x 1024, 600 steps
        "batch4": replace(base, batch_size=4, steps=base.steps // 4),  # same tokens, 1/4 steps
        "batch2": replace(base, batch_size=2, steps=base.steps // 2),
        # Fair sampling runs every mixer at every layer each step: 10 passes against 4, so
        # it gets 4/10 of the steps in about the same time.
        "fair": replace(base, fair=True, steps=base.steps * 4 // 10),
    }


def train_seconds(run: Path, config: TrainConfig) -> float:
    """Seconds the run's steps took, as its metrics log recorded them."""
    tokens = config.batch_size * config.seq_len
    steps = [r for r in MetricsLog(run / METRICS_FILE).read() if r.get("kind") == "train"]
    return sum(tokens / r["tokens_per_s"] for r in steps)


def spearman(x: list[float], y: list[float]) -> float:
    rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
    return float(np.corrcoef(rx, ry)[0, 1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--settings", default="default,batch4,batch2,fair")
    p.add_argument("--archs", type=int, default=24, help="sampled archs scored")
    p.add_argument("--val-batches", type=int, default=2)
    p.add_argument("--out", default="runs/bench/search_supernet")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    space = SearchSpace.default()
    corpus = load_corpus(None)
    configs = settings(space)
    unknown = set(args.settings.split(",")) - set(configs)
    if unknown:
        sys.exit(f"unknown settings {sorted(unknown)}; choose from {sorted(configs)}")
    inputs, targets = validation_batches(corpus.val, 4, space.max_seq_len, args.val_batches)
    archs = [space.smallest(), space.largest(), *space.sample_many(args.archs, seed=1)]
    rows = []
    for name in args.settings.split(","):
        config = configs[name]
        run = Path(args.out) / name
        result = train(space, corpus, config, run, resume=True, progress=True)
        seconds = train_seconds(run, config)  # from its log: a rerun reuses the run
        torch.set_num_threads(2)
        evaluator = Evaluator(build_payload(open_supernet(run), inputs, targets))
        losses = [evaluator.loss(a) for a in archs]
        smallest, sampled = losses[0], losses[2:]
        rows.append(
            {
                "setting": name,
                "steps": config.steps,
                "batch": config.batch_size,
                "tokens": result.tokens,
                "train_s": seconds,
                "smallest": smallest,
                "largest": losses[1],
                "best_sampled": min(sampled),
                "median_sampled": float(np.median(sampled)),
                "beat_smallest": sum(v < smallest for v in sampled),
                "spearman_params_loss": spearman([space.param_count(a) for a in archs], losses),
            }
        )
        print(json.dumps(rows[-1]), file=sys.stderr)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(
        f"default space, {args.archs} sampled archs + the extremes, inherited loss "
        f"(nats/token) on {args.val_batches} x 4 x {space.max_seq_len} validation tokens"
    )
    head = f"{'setting':<9} {'steps':>6} {'batch':>5} {'tokens':>8} {'train s':>8} "
    head += f"{'smallest':>9} {'largest':>8} {'best':>7} {'median':>7} {'beat sm.':>8} {'rho':>6}"
    print(head)
    for r in rows:
        print(
            f"{r['setting']:<9} {r['steps']:>6} {r['batch']:>5} {r['tokens']:>8,} "
            f"{r['train_s']:>8.0f} {r['smallest']:>9.4f} {r['largest']:>8.4f} "
            f"{r['best_sampled']:>7.4f} {r['median_sampled']:>7.4f} "
            f"{r['beat_smallest']:>5}/{args.archs:<2} {r['spearman_params_loss']:>6.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
