"""Search efficiency: the best feasible loss each sampler finds with N evaluations, vs random.

Every sampler runs the search's own driver (search/driver.py: the same encoding, latency
constraint and evaluation count) over the same supernet, profile and validation batches,
with one shared memo of evaluations, so a given arch always scores the same and the
samplers differ only in which archs they choose. Random search is Optuna's RandomSampler
on the same encoding (every choice uniform, as `SearchSpace.sample` draws), run with N
and with 4N evaluations. Reported: the median over seeds of the best feasible inherited
loss, and whether each sampler with N reaches random with 4N.

    python bench/bench_search_efficiency.py --budget 10ms --trials 50 --seeds 3
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import torch

from nas.search.budget import parse_budget
from nas.search.driver import StudySettings, enqueue_first, make_sampler, run_study
from nas.search.evaluator import Evaluator, build_payload, validation_batches
from nas.search.pipeline import largest_feasible, resolve_profile, resolve_supernet
from nas.search.settings import SearchConfig
from nas.search.workers import EvalResult
from nas.search_space import Arch


class MemoPool:
    """Evaluates in-process, remembering every arch's loss (shared by all runs)."""

    size = 1

    def __init__(self, evaluator: Evaluator, memo: dict[str, float]):
        self.evaluator, self.memo, self.queue = evaluator, memo, []
        self.evaluations = 0  # real evaluations (memo misses)

    def submit(self, key: int, arch: Arch) -> None:
        self.queue.append((key, arch))

    def pending(self) -> int:
        return len(self.queue)

    def wait(self, timeout: float | None = None) -> list[EvalResult]:
        key, arch = self.queue.pop(0)
        if arch.id not in self.memo:
            self.memo[arch.id] = self.evaluator.loss(arch)
            self.evaluations += 1
        return [EvalResult(key, arch, self.memo[arch.id], "", "local", "memo", 0.0, 1)]

    def close(self) -> None:
        pass


def best_loss(study: optuna.Study) -> float:
    losses = [t.values[0] for t in study.trials if t.user_attrs.get("evaluated")]
    return min(losses)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--budget", default="10ms")
    p.add_argument("--supernet", default="", help="run folder (default: the cached default)")
    p.add_argument("--profile", default="", help="profile file (default: the cached quick one)")
    p.add_argument("--trials", type=int, default=50, metavar="N")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--samplers", default="tpe,nsga2")
    p.add_argument("--val-batches", type=int, default=2)
    p.add_argument("--seq-len", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="torch threads for evaluation")
    p.add_argument("--out", default="runs/bench/search_efficiency")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    config = SearchConfig(
        budget_ms=parse_budget(args.budget),
        supernet=args.supernet,
        profile=args.profile,
        seq_len=args.seq_len,
        val_batches=args.val_batches,
    )
    say = lambda m: print(m, file=sys.stderr)  # noqa: E731
    source, corpus = resolve_supernet(config, True, say)
    space = source.space
    profile, _, _ = resolve_profile(config, space, say)
    seq_len = args.seq_len or space.max_seq_len
    inputs, targets = validation_batches(
        corpus.val, config.val_batch_size, seq_len, args.val_batches
    )
    evaluator = Evaluator(build_payload(source, inputs, targets))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    memo_file = out / f"memo-{source.digest[:12]}-{seq_len}-{args.val_batches}.json"
    memo: dict[str, float] = json.loads(memo_file.read_text()) if memo_file.is_file() else {}
    pool = MemoPool(evaluator, memo)
    predict = lambda a: float(profile.predict([a])[0])  # noqa: E731
    runs = [(s, args.trials) for s in args.samplers.split(",")]
    runs += [("random", args.trials), ("random", 4 * args.trials)]
    results: dict[str, list[float]] = {}
    started = time.perf_counter()
    for name, n in runs:
        label = f"{name} N={n}"
        for seed in range(args.seeds):
            study = optuna.create_study(
                directions=["minimize", "minimize"], sampler=make_sampler(name, seed)
            )
            if name != "random":  # the search seeds its study with the extremes
                first = largest_feasible(space, profile.predict, config.budget_ms)
                enqueue_first(study, space, [a for a in (first, space.smallest()) if a])
            settings = StudySettings(n, config.budget_ms, name, seed)
            run_study(study, space, predict, pool, settings)
            results.setdefault(label, []).append(best_loss(study))
            memo_file.write_text(json.dumps(memo))
            print(f"{label} seed {seed}: best {results[label][-1]:.4f}", file=sys.stderr)
    random_4n = float(np.median(results[f"random N={4 * args.trials}"]))
    rows = []
    for label, values in results.items():
        median = float(np.median(values))
        rows.append(
            {
                "run": label,
                "median_best_loss": median,
                "per_seed": values,
                "vs_random_4N": median - random_4n,
                "meets_target": median <= random_4n,
            }
        )
    summary = {
        "budget_ms": config.budget_ms,
        "trials": args.trials,
        "seeds": args.seeds,
        "distinct_archs_evaluated": len(memo),
        "seconds": time.perf_counter() - started,
        "rows": rows,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"budget {config.budget_ms:g} ms, N = {args.trials}, median over {args.seeds} seeds")
    print(f"{'run':<18} {'median best loss':>17} {'- random 4N':>12}  per seed")
    for r in rows:
        seeds = ", ".join(f"{v:.4f}" for v in r["per_seed"])
        print(f"{r['run']:<18} {r['median_best_loss']:>17.4f} {r['vs_random_4N']:>+12.4f}  {seeds}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
