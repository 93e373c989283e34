"""Evaluation throughput: in-process vs Ray pools of 1 and 2 workers, and Ray's overhead.

The same archs are scored on the same payload (a freshly initialised supernet of the
space and fixed random-token batches: evaluation latency does not depend on training) by
`InProcessPool` and by `RayPool` with each worker count, fed as the search driver feeds
them (one arch in flight per worker, refilled as results come), and again with
`prefetch` 1 (a second arch waits at each actor, hiding the round trip to the driver;
rows "+1"). Actor start-up and one warm-up evaluation per worker are not timed.
Reported per pool: archs/s, the mean in-worker evaluation time, and the dispatch
overhead: pool time per evaluation (wall x workers / archs) minus the in-worker time, as
a % of the in-worker time.
Targets (2 cores): 2 workers >= 1.7x the archs/s of 1 worker; overhead <= 2%, judged
on the prefetch rows when --prefetch 1 (the default) includes them.

    python bench/bench_ray_scaling.py [--space FILE] [--archs 32] [--batches 4]
        [--batch-size 4] [--seq-len 128] [--workers 1,2] [--prefetch 0,1] [--seed 0] [--json]

Tiny check (under a minute): --archs 6 --batches 2 --seq-len 16 with a tiny space file.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import time
from pathlib import Path

import numpy as np
import torch

from nas.search.evaluator import EvalPayload, payload_from_net
from nas.search.workers import EvalResult, InProcessPool, RayPool
from nas.search_space import Arch, SearchSpace
from nas.supernet import Supernet

TARGET_RATIO = 1.7  # archs/s of 2 workers over 1 worker, at least
TARGET_OVERHEAD = 2.0  # dispatch overhead, % of an evaluation, at most


def make_payload(space: SearchSpace, batches: int, batch_size: int, seq_len: int, seed: int):
    """A fresh supernet of `space` and `batches` fixed (batch_size, seq_len) token batches."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, space.vocab_size, size=(batches, batch_size, seq_len + 1))
    return payload_from_net(Supernet(space, seed=seed), tokens[..., :-1], tokens[..., 1:])


def drive(pool, archs: list[Arch], timeout_s: float = 3600.0) -> tuple[list[EvalResult], float]:
    """Feed `archs` to `pool` as the search driver does (at most `pool.size` in flight);
    (results in key order, wall seconds)."""
    results: dict[int, EvalResult] = {}
    todo = list(enumerate(archs))
    in_flight = 0
    start = time.perf_counter()
    deadline = time.monotonic() + timeout_s
    while todo or in_flight:
        while todo and in_flight < max(1, pool.size):
            pool.submit(*todo.pop(0))
            in_flight += 1
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"{len(archs) - len(results)} evaluations still pending")
        for result in pool.wait(timeout=left):
            results[result.key] = result
            in_flight -= 1
    wall = time.perf_counter() - start
    return [results[k] for k in sorted(results)], wall


def measure(
    name: str, pool, workers: int, warmup: list[Arch], archs: list[Arch], prefetch: int = 0
) -> dict:
    """Warm `pool` up (one evaluation per worker, untimed), then time `archs` on it."""
    drive(pool, warmup[:workers])
    results, wall = drive(pool, archs)
    failed = [r for r in results if r.loss is None]
    if failed:
        raise RuntimeError(f"{name}: {len(failed)} evaluation(s) failed: {failed[0].error}")
    in_worker = sum(r.seconds for r in results) / len(results)
    per_eval = wall * workers / len(results)  # each worker slot's share of the wall time
    return {
        "pool": name,
        "workers": workers,
        "prefetch": prefetch,
        "archs_per_s": len(results) / wall,
        "wall_s": wall,
        "eval_ms": in_worker * 1e3,
        "overhead_ms": (per_eval - in_worker) * 1e3,
        "overhead_pct": 100.0 * (per_eval - in_worker) / in_worker,
        "nodes": sorted({r.node for r in results}),
        "losses": [r.loss for r in results],
    }


def ensure_auth_token() -> None:
    """Token auth (Ray's default) without writing ~/.ray: a token for this run only,
    unless the user chose a mode or a token already."""
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    has_token = any(k in os.environ for k in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"))
    if not has_token and not (Path.home() / ".ray" / "auth_token").is_file():
        os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)


def table(rows: list[dict]) -> str:
    lines = [
        f"{'pool':<14} {'archs/s':>9} {'eval ms':>9} {'overhead ms':>12} {'overhead %':>11}",
    ]
    for r in rows:
        lines.append(
            f"{r['pool']:<14} {r['archs_per_s']:>9.2f} {r['eval_ms']:>9.2f} "
            f"{r['overhead_ms']:>12.3f} {r['overhead_pct']:>10.2f}%"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--space", default="", help="space file (default: the shipped default)")
    p.add_argument("--archs", type=int, default=32, metavar="N", help="timed archs per pool")
    p.add_argument("--batches", type=int, default=4, metavar="N", help="validation batches")
    p.add_argument("--batch-size", type=int, default=4, metavar="B")
    p.add_argument("--seq-len", type=int, default=128, metavar="T", help="capped at the space's")
    p.add_argument("--workers", default="1,2", help="Ray worker counts to compare")
    p.add_argument("--prefetch", default="0,1", help="RayPool prefetch values to compare")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object instead")
    args = p.parse_args(argv)
    counts = sorted({int(w) for w in args.workers.split(",")})
    prefetches = sorted({int(x) for x in args.prefetch.split(",")})
    if args.archs < 1 or args.batches < 1 or args.batch_size < 1 or min(counts) < 1:
        p.error("--archs, --batches, --batch-size and --workers must be >= 1")
    if min(prefetches) < 0:
        p.error("--prefetch must be >= 0")

    space = SearchSpace.from_file(args.space) if args.space else SearchSpace.default()
    seq_len = min(args.seq_len, space.max_seq_len)
    payload: EvalPayload = make_payload(space, args.batches, args.batch_size, seq_len, args.seed)
    archs = space.sample_many(args.archs, seed=args.seed)
    warmup = space.sample_many(max(counts), seed=args.seed + 1)
    say = (lambda m: print(m, file=sys.stderr)) if args.json else print  # noqa: E731
    say(
        f"space {space.name}: {args.archs} archs, {args.batches} batch(es) of "
        f"{args.batch_size} x {seq_len} tokens, 1 torch thread per worker"
    )

    torch.set_num_threads(1)  # as each Ray worker: the comparison is per core
    rows = [measure("in-process", InProcessPool(payload), 1, warmup, archs)]

    ensure_auth_token()
    from nas.search.ray_cluster import connect_ray

    with connect_ray(None, max(counts)):
        for prefetch in prefetches:
            for workers in counts:
                pool = RayPool(payload, workers, threads_per_worker=1, prefetch=prefetch)
                name = f"ray x{workers}" + (f" +{prefetch}" if prefetch else "")
                try:
                    pool.worker_stats(timeout=120)  # wait until every actor has started
                    rows.append(measure(name, pool, workers, warmup, archs, prefetch))
                finally:
                    pool.close()

    reference = np.array(rows[0]["losses"])
    drift = max(float(np.max(np.abs(np.array(r["losses"]) - reference))) for r in rows)
    judged = max(prefetches)  # the configuration the targets are judged on
    by_workers = {r["workers"]: r for r in rows[1:] if r["prefetch"] == judged}
    ratio = None
    if 1 in by_workers and 2 in by_workers:
        ratio = by_workers[2]["archs_per_s"] / by_workers[1]["archs_per_s"]
    ray_overhead = max(r["overhead_pct"] for r in by_workers.values())
    summary = {
        "space": space.name,
        "archs": args.archs,
        "batches": args.batches,
        "batch_size": args.batch_size,
        "seq_len": seq_len,
        "cores": os.cpu_count(),
        "rows": [{k: v for k, v in r.items() if k != "losses"} for r in rows],
        "judged_prefetch": judged,
        "ratio_2_over_1": ratio,
        "max_loss_difference": drift,
        "targets": {
            "ratio_min": TARGET_RATIO,
            "ratio_met": ratio is not None and ratio >= TARGET_RATIO,
            "overhead_max_pct": TARGET_OVERHEAD,
            "overhead_met": ray_overhead <= TARGET_OVERHEAD,
        },
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(table(rows))
    if ratio is not None:
        verdict = "met" if ratio >= TARGET_RATIO else "NOT met"
        print(
            f"ray x2 / ray x1 archs/s, prefetch {judged}: {ratio:.2f}x "
            f"(target >= {TARGET_RATIO}x: {verdict})"
        )
    verdict = "met" if ray_overhead <= TARGET_OVERHEAD else "NOT met"
    target = f"target <= {TARGET_OVERHEAD}%: {verdict}"
    print(f"worst Ray dispatch overhead, prefetch {judged}: {ray_overhead:.2f}% ({target})")
    print(f"largest loss difference between pools: {drift:.2e} nats/token")
    return 0


if __name__ == "__main__":
    sys.exit(main())
