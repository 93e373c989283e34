"""Re-ranking a shortlist: does fine-tuning each candidate pick a better winner?

1. Take a trained supernet (--supernet RUN: a `nas train` run folder, checkpoint or
   few-shot folder), or train one for --steps steps into OUT/supernet (resumed if there).
2. Shortlist as a search would: sample --pool archs of the space (seeded), score each
   with inherited weights on fixed validation batches (the search's Evaluator), and keep
   the --candidates K with the lowest loss.
3. Rank the K three ways, at each S of --rerank-steps:
   (a) inherited losses alone (no S);
   (b) fine-tuned: S steps of `nas.search.rerank` from each one's inherited weights;
   (c) from scratch: S steps of training alone from a fresh initialisation (the control
       that says whether the inherited weights help at all).
4. Reference: each candidate trained alone for --standalone-steps N steps (best of
   --standalone-lrs), as bench_weight_sharing.py's standalone runs (records kept in
   OUT/standalone and reused).
5. Print Kendall tau of each ranking against the reference, and the regret of its
   winner: the winner's standalone loss minus the best standalone loss among the K.
   Everything goes to OUT/results.json too.

--jobs N > 1 trains the standalone runs in N processes, then fine-tunes the candidates as
N Ray tasks on a local Ray started for it (N CPUs).

Usage: python bench/bench_rerank.py [--space FILE] [--data PATH] (--supernet RUN | --steps N)
       [--batch-size 8] [--seq-len 64] [--candidates 8] [--pool 32] [--rerank-steps 25,50,100]
       [--rerank-lr 0.001] [--standalone-steps 800] [--standalone-lrs 0.003]
       [--eval-batches 16] [--seed 0] [--out runs/bench_rerank] [--jobs 1]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch
from space_args import load_space
from standalone_runs import StandaloneRunner

from nas.core.atomic import atomic_write_json
from nas.core.errors import NasError
from nas.search.accuracy import kendall_tau
from nas.search.evaluator import Evaluator, build_payload, open_supernet, validation_batches
from nas.search.rerank import Candidate, RerankConfig, rerank
from nas.supernet.corpus import load_corpus
from nas.supernet.training import TrainConfig, train


def _int_list(text: str) -> tuple[int, ...]:
    values = tuple(int(v) for v in text.split(",") if v.strip())
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"need positive integers like 25,50, got {text!r}")
    return tuple(sorted(set(values)))


def _float_list(text: str) -> list[float]:
    values = [float(v) for v in text.split(",") if v.strip()]
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"need positive numbers like 0.001,0.003, got {text!r}")
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--space", help="search space file (default: the shipped space)")
    parser.add_argument("--data", help="corpus (default: Python's standard library sources)")
    parser.add_argument("--dtype", help="token dtype of a raw .bin corpus (e.g. uint16)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--supernet", help="a trained supernet: run folder, checkpoint, few-shot")
    source.add_argument("--steps", type=int, help="train a supernet for this many steps first")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--candidates", type=int, default=8, help="K: the shortlist's size")
    parser.add_argument("--pool", type=int, help="archs sampled to shortlist from (default 4K)")
    parser.add_argument("--rerank-steps", type=_int_list, default=(25, 50, 100))
    parser.add_argument("--rerank-lr", type=float, default=RerankConfig.lr)
    parser.add_argument("--standalone-steps", type=int, default=800)
    parser.add_argument("--standalone-lrs", type=_float_list, default=[3e-3])
    parser.add_argument("--eval-batches", type=int, default=16, help="fixed validation batches")
    parser.add_argument("--seed", type=int, default=0, help="supernet, pool and standalone seed")
    parser.add_argument("--out", default="runs/bench_rerank")
    parser.add_argument("--jobs", type=int, default=1)
    args = parser.parse_args()
    if args.candidates < 2 or (args.pool is not None and args.pool < args.candidates):
        parser.error("need --candidates >= 2 and --pool >= --candidates")
    if args.jobs < 1 or args.standalone_steps < 1 or (args.steps is not None and args.steps < 1):
        parser.error("--jobs, --steps and --standalone-steps must be 1 or more")
    out = Path(args.out)
    try:
        corpus = load_corpus(args.data, dtype=args.dtype)
        supernet = args.supernet
        if supernet is None:
            supernet = out / "supernet"
            space = load_space(args)
            config = TrainConfig(
                steps=args.steps,
                batch_size=args.batch_size,
                seq_len=args.seq_len,
                eval_every=max(1, args.steps // 4),
                checkpoint_every=max(1, args.steps // 8),
                seed=args.seed,
            )
            print(f"supernet: {args.steps} steps into {supernet}", flush=True)
            train(space, corpus, config, supernet, resume=True, progress=True)
        source = open_supernet(supernet)
    except NasError as exc:  # a bad space file, data path or supernet: one line, exit 2
        parser.error(str(exc))
    space = source.space
    inputs, targets = validation_batches(
        corpus.val, args.batch_size, args.seq_len, args.eval_batches
    )
    val_batches = [
        (torch.from_numpy(x), torch.from_numpy(y)) for x, y in zip(inputs, targets, strict=True)
    ]

    # 2. The shortlist: the K best of the pool by inherited loss.
    evaluator = Evaluator(build_payload(source, inputs, targets))
    pool = [
        a
        for a in space.sample_many(args.pool or 4 * args.candidates, seed=args.seed + 1)
        if not source.split_layers or a.depth > max(source.split_layers)
    ]
    inherited = {a: evaluator.loss(a) for a in dict.fromkeys(pool)}
    shortlist = sorted(inherited, key=inherited.__getitem__)[: args.candidates]
    names = [f"c{i}" for i in range(len(shortlist))]
    print(f"shortlist: the {len(shortlist)} best of {len(inherited)} sampled archs", flush=True)

    # 4. The reference, and 3(c) from scratch: trained alone, records reused by a rerun.
    context = {"space": space.fingerprint, "data": corpus.key, "eval": list(inputs.shape)}
    runner = StandaloneRunner(
        args.jobs, space, args.data, args.dtype, val_batches, context, torch.device("cpu")
    )
    base = TrainConfig(batch_size=args.batch_size, seq_len=args.seq_len, seed=args.seed)
    folder = out / "standalone"
    reference_jobs = {
        (name, lr): runner.submit(name, arch, _with(base, lr=lr), args.standalone_steps, folder)
        for name, arch in zip(names, shortlist, strict=True)
        for lr in args.standalone_lrs
    }
    scratch_lr = min(args.standalone_lrs)
    scratch_jobs = {
        (name, s): runner.submit(name, arch, _with(base, lr=scratch_lr), s, folder)
        for name, arch in zip(names, shortlist, strict=True)
        for s in args.rerank_steps
    }
    reference = [
        min(reference_jobs[name, lr].result()["val_loss"] for lr in args.standalone_lrs)
        for name in names
    ]
    scratch = {
        s: [scratch_jobs[name, s].result()["val_loss"] for name in names] for s in args.rerank_steps
    }
    runner.close()

    # 3(b): fine-tuned from the inherited weights, by the search's re-rank.
    candidates = [
        Candidate(arch, inherited[arch], source.checkpoint_for(arch)) for arch in shortlist
    ]
    finetuned, seconds, reused = {}, {}, {}
    ray_started = _start_ray(args.jobs)
    try:
        for s in args.rerank_steps:
            config = RerankConfig(
                steps=s, batch_size=args.batch_size, seq_len=args.seq_len, lr=args.rerank_lr
            )
            started = time.perf_counter()
            results = rerank(
                candidates, corpus, config, inputs, targets, out / f"rerank-{s}",
                workers=args.jobs if ray_started else 0,
            )  # fmt: skip
            seconds[s] = time.perf_counter() - started
            finetuned[s] = [r.finetuned_loss for r in results]
            reused[s] = sum(r.reused for r in results)
    finally:
        if ray_started:
            import ray

            ray.shutdown()

    # 5. The table.
    rankings = {"inherited": [inherited[a] for a in shortlist]}
    for s in args.rerank_steps:
        rankings[f"fine-tuned {s}"] = finetuned[s]
        rankings[f"from scratch {s}"] = scratch[s]
    best = min(reference)
    rows = {}
    print(
        f"\nK={len(shortlist)} candidates; reference: each trained alone for "
        f"{args.standalone_steps} steps (best of lr {args.standalone_lrs}), best loss {best:.4f}"
    )
    print(f"{'ranking':<22} {'tau':>7} {'winner':>7} {'regret':>8} {'regret %':>9}")
    for label, losses in rankings.items():
        tau = kendall_tau(losses, reference)
        winner = int(np.argmin(losses))
        regret = reference[winner] - best
        rows[label] = {"tau": tau, "winner": names[winner], "regret": regret, "losses": losses}
        print(
            f"{label:<22} {tau:>7.3f} {names[winner]:>7} {regret:>8.4f} "
            f"{100 * regret / best:>8.2f}%"
        )
    for s in args.rerank_steps:
        note = f" ({reused[s]} reused from {out / f'rerank-{s}'})" if reused[s] else ""
        print(f"re-rank of {s} steps: {seconds[s]:.1f} s for {len(shortlist)} candidates{note}")
    atomic_write_json(
        out / "results.json",
        {
            "supernet": str(supernet),
            "candidates": {n: a.to_dict() for n, a in zip(names, shortlist, strict=True)},
            "reference": dict(zip(names, reference, strict=True)),
            "standalone_steps": args.standalone_steps,
            "rankings": rows,
            "rerank_seconds": {str(s): t for s, t in seconds.items()},
        },
    )


def _with(config: TrainConfig, **changes) -> TrainConfig:
    return TrainConfig(**{**config.to_dict(), **changes})


def _start_ray(jobs: int) -> bool:
    """A local Ray of `jobs` CPUs for the fine-tunes; False (in-process) for 1 job."""
    if jobs < 2:
        return False
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a private, local cluster
    ray.init(num_cpus=jobs, include_dashboard=False, log_to_driver=False)
    return True


if __name__ == "__main__":
    main()
