"""`nas search --budget 10ms`: the best subnetwork within a latency budget on this device."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from nas.search.budget import parse_budget
from nas.search.run_folder import latest_run_dir, new_run_dir
from nas.search.settings import SearchConfig

_DEFAULTS = SearchConfig(budget_ms=1.0)


def register(sub: argparse._SubParsersAction) -> None:
    d = _DEFAULTS
    p = sub.add_parser(
        "search",
        help="search the supernet for the best subnetwork within a latency budget",
        description="Search the supernet for the most accurate subnetwork whose latency on "
        "this device fits --budget: Optuna over inherited losses on Ray workers, the best "
        "candidates re-ranked by a short fine-tune and measured on the device, the winner "
        "extracted with its fine-tuned weights into RUN/best. With no --supernet it trains "
        "(and caches) the default supernet, and builds the device profile if it is missing.",
    )
    p.add_argument(
        "--budget",
        required=True,
        metavar="LATENCY",
        help="latency budget of one forward pass, e.g. 10ms, 2.5ms, 500us, 0.01s",
    )
    p.add_argument(
        "--supernet",
        metavar="RUN",
        help="a run folder or checkpoint of `nas train`, or a few-shot run folder "
        "(default: the cached default supernet, trained on first use)",
    )
    p.add_argument(
        "--space", metavar="FILE", help="space of the supernet to train (default: shipped)"
    )
    p.add_argument(
        "--data",
        metavar="PATH",
        help="corpus whose validation split scores archs (default: the supernet's own)",
    )
    p.add_argument("--tokens-dtype", metavar="DTYPE", help="dtype of a raw .bin token array")
    w = p.add_argument_group("workload the latency is for (as `nas profile` takes it)")
    w.add_argument("--device", default=d.device, help="cpu or cuda (default cpu)")
    w.add_argument("--batch", type=int, default=d.batch, help="sequences per forward (1)")
    w.add_argument("--seq-len", type=int, default=0, help="tokens per sequence (the space's max)")
    w.add_argument("--threads", type=int, default=0, help="CPU threads (0 = all available)")
    w.add_argument("--mode", default=d.mode, help="eager, or graph (CUDA-graph replay)")
    w.add_argument("--profile", metavar="FILE", help="a profile file instead of the cached one")
    w.add_argument(
        "--full-profile",
        action="store_true",
        help="build a missing profile with the full protocol of `nas profile` (~10 min) "
        "instead of the quick one",
    )
    s = p.add_argument_group("search")
    s.add_argument(
        "--trials",
        type=int,
        default=d.evaluations,
        metavar="N",
        help=f"distinct feasible archs to evaluate ({d.evaluations})",
    )
    s.add_argument("--sampler", default=d.sampler, help=f"tpe, nsga2 or random ({d.sampler})")
    s.add_argument("--seed", type=int, default=d.seed, help=f"sampler seed ({d.seed})")
    s.add_argument(
        "--rerank",
        type=int,
        default=d.rerank,
        metavar="K",
        help=f"best candidates fine-tuned to pick the winner; 0 = none ({d.rerank})",
    )
    s.add_argument(
        "--rerank-steps",
        type=int,
        default=d.rerank_steps,
        metavar="S",
        help=f"fine-tuning steps per candidate ({d.rerank_steps})",
    )
    s.add_argument(
        "--no-finetune",
        action="store_true",
        help="ship the winner with inherited weights (not recommended)",
    )
    s.add_argument(
        "--verify",
        type=int,
        default=d.verify,
        metavar="N",
        help="candidates measured on the device (default: those re-ranked, at least 3)",
    )
    r = p.add_argument_group("distribution and storage")
    r.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="evaluation workers (default: the CPUs available); 0 = in-process, no Ray",
    )
    r.add_argument(
        "--address",
        metavar="ADDR",
        help="join an existing Ray cluster: auto or HOST:PORT (default: start a local one)",
    )
    r.add_argument(
        "--storage",
        metavar="URL",
        help="Optuna storage URL, e.g. postgresql://... (default: RUN/study.journal)",
    )
    p.add_argument("--out", metavar="DIR", help="run folder (default: runs/search-TIMESTAMP)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the search in --out (default: the newest under runs/)",
    )
    p.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_search)


def config_from_args(args: argparse.Namespace) -> SearchConfig:
    return SearchConfig(
        budget_ms=parse_budget(args.budget),
        supernet=args.supernet or "",
        space=args.space or "",
        data=args.data or "",
        tokens_dtype=args.tokens_dtype or "",
        device=args.device,
        batch=args.batch,
        seq_len=args.seq_len,
        threads=args.threads,
        mode=args.mode,
        profile=args.profile or "",
        quick_profile=not args.full_profile,
        evaluations=args.trials,
        sampler=args.sampler,
        seed=args.seed,
        rerank=args.rerank,
        rerank_steps=args.rerank_steps,
        finetune=not args.no_finetune,
        verify=args.verify,
        workers=-2 if args.workers is None else args.workers,
        address=args.address or "",
        storage=args.storage or "",
    )


def cmd_search(args: argparse.Namespace) -> int:
    from nas.search.pipeline import run_search  # optuna, ray: loaded only for a search

    config = config_from_args(args)
    if args.out:
        run_dir = Path(args.out)
    elif args.resume:
        run_dir = latest_run_dir()
    else:
        run_dir = new_run_dir()

    def say(message: str) -> None:
        print(f"nas: {message}", file=sys.stderr, flush=True)

    say(f"run folder: {run_dir}")
    result = run_search(
        config,
        run_dir,
        resume=args.resume,
        progress=not args.no_progress,
        say=say,
        command="nas " + shlex.join(sys.argv[1:] if sys.argv[1:] else ["search"]),
    )
    if args.json:
        print(json.dumps(result.summary, indent=2))
        return 0
    print(result.front_table)
    for line in result.lines:
        print(line)
    return 0
