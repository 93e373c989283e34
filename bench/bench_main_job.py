"""The main job end to end: `nas search --budget 10ms` from nothing, then from the cache.

Runs the real CLI twice in subprocesses, against a fresh cache folder (so the first run
builds the corpus cache, trains the default supernet and builds the quick profile) and
then again with everything cached, and prints each phase's seconds from the runs'
manifests side by side, with the totals against the targets (10 minutes from nothing,
60 s from the cache) and the winner of each run.

    python bench/bench_main_job.py                       # the default: --budget 10ms
    python bench/bench_main_job.py --cache runs/bench/cache --keep-cache
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

PHASES = ("supernet", "profile", "drift", "search", "rerank", "verify", "extract", "report")
TARGETS_S = {"from nothing": 600.0, "from the cache": 60.0}


def run_once(label: str, args: argparse.Namespace, cache: Path, out: Path) -> dict:
    command = [str(Path(sys.executable).with_name("nas")), "search", "--budget", args.budget]
    command += ["--out", str(out), "--json", "--no-progress", *args.extra]
    env = {**os.environ, "NAS_CACHE_DIR": str(cache)}
    started = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"{label}: nas search failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    manifest = json.loads((out / "manifest.json").read_text())
    return {
        "label": label,
        "wall_s": wall,
        "phases_s": manifest.get("phases_s", {}),
        "summary": json.loads(proc.stdout),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--budget", default="10ms")
    p.add_argument("--cache", default="runs/bench/main_job/cache", help="fresh cache folder")
    p.add_argument("--out", default="runs/bench/main_job")
    p.add_argument("--keep-cache", action="store_true", help="do not empty --cache first")
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--skip-baselines", action="store_true", help="skip fine-tuning the baseline archs"
    )
    p.add_argument("--random-seed", type=int, default=0, help="seed of the random baseline")
    p.add_argument("extra", nargs="*", help="more `nas search` flags, after --")
    args = p.parse_args(argv)
    cache, out = Path(args.cache), Path(args.out)
    if cache.exists() and not args.keep_cache:
        shutil.rmtree(cache)
    cache.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    runs = [
        run_once("from nothing", args, cache, out / f"{stamp}-cold"),
        run_once("from the cache", args, cache, out / f"{stamp}-warm"),
    ]
    if args.json:
        print(json.dumps(runs, indent=2))
        return 0
    print(f"nas search --budget {args.budget} {' '.join(args.extra)}".rstrip())
    print(f"{'phase (s)':<12}" + "".join(f"{r['label']:>18}" for r in runs))
    for phase in PHASES:
        print(f"{phase:<12}" + "".join(f"{r['phases_s'].get(phase, 0.0):>18.1f}" for r in runs))
    print(f"{'total':<12}" + "".join(f"{sum(r['phases_s'].values()):>18.1f}" for r in runs))
    print(f"{'wall':<12}" + "".join(f"{r['wall_s']:>18.1f}" for r in runs))
    for r in runs:
        target = TARGETS_S[r["label"]]
        w = r["summary"].get("winner") or {}
        print(
            f"{r['label']}: {r['wall_s']:.0f} s wall (target <= {target:.0f} s: "
            f"{'met' if r['wall_s'] <= target else 'MISSED'}); winner {w.get('arch_id')} "
            f"fine-tuned loss {w.get('finetuned_loss')}, measured {w.get('measured_ms')} ms"
        )
    print(f"cached / from nothing: {runs[1]['wall_s'] / runs[0]['wall_s']:.3f}")
    if not args.skip_baselines:
        baselines(runs[1]["summary"], args, cache)
    return 0


def baselines(summary: dict, args: argparse.Namespace, cache: Path) -> None:
    """Is the winner degenerate? Its fine-tuned loss against the smallest arch and the best
    of random feasible archs found with the search's evaluation budget, each fine-tuned
    exactly as the re-rank fine-tunes (same steps, batches and recipe)."""
    os.environ["NAS_CACHE_DIR"] = str(cache)
    from nas.search.evaluator import Evaluator, build_payload, open_supernet, validation_batches
    from nas.search.pipeline import resolve_profile, resolve_supernet
    from nas.search.rerank import Candidate, RerankConfig, rerank
    from nas.search.settings import SearchConfig
    from nas.search_space import Arch

    manifest = json.loads((Path(summary["paths"]["run_dir"]) / "manifest.json").read_text())
    config = SearchConfig.from_dict(manifest["config"])
    source, corpus = resolve_supernet(config, False, lambda m: None)
    source = open_supernet(source.path)
    space = source.space
    profile, _, _ = resolve_profile(config, space, lambda m: None)
    scale = (manifest.get("drift") or {}).get("scale", 1.0)
    seq_len = config.seq_len or space.max_seq_len
    inputs, targets = validation_batches(
        corpus.val, config.val_batch_size, seq_len, config.val_batches
    )
    evaluator = Evaluator(build_payload(source, inputs, targets))
    rng = np.random.default_rng(args.random_seed)
    scored: dict[Arch, float] = {}
    for _ in range(100 * config.evaluations):  # bounded: feasible archs are a good share
        if len(scored) == config.evaluations:
            break
        arch = space.sample(rng=rng)
        if arch not in scored and profile.predict([arch])[0] * scale <= config.budget_ms:
            scored[arch] = evaluator.loss(arch)
    best_random = min(scored, key=scored.get)
    smallest = space.smallest()
    picks = {"smallest arch": smallest, f"best of {len(scored)} random feasible": best_random}
    candidates = [
        Candidate(arch, evaluator.loss(arch), source.checkpoint_for(arch))
        for arch in dict.fromkeys(picks.values())
    ]
    tuned = rerank(
        candidates,
        corpus,
        RerankConfig(
            steps=config.rerank_steps, batch_size=config.rerank_batch_size, seq_len=seq_len
        ),
        inputs,
        targets,
        Path(args.out) / "baselines",
    )
    by_arch = {r.arch: r for r in tuned}
    winner = summary["winner"]
    print(f"\nwinner vs baselines, fine-tuned {config.rerank_steps} steps each (nats/token):")
    print(f"{'arch':<34} {'inherited':>10} {'fine-tuned':>11}")
    print(
        f"{'search winner ' + winner['arch_id']:<34} {winner['inherited_loss']:>10.4f} "
        f"{winner['finetuned_loss']:>11.4f}"
    )
    for label, arch in picks.items():
        r = by_arch[arch]
        print(f"{label + ' ' + arch.id:<34} {r.inherited_loss:>10.4f} {r.finetuned_loss:>11.4f}")
    for label, arch in picks.items():
        ratio = winner["finetuned_loss"] / by_arch[arch].finetuned_loss
        print(f"winner / {label}: {ratio:.3f} ({'beats it' if ratio < 1 else 'does NOT beat it'})")


if __name__ == "__main__":
    sys.exit(main())
