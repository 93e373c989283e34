"""A family of three members extracted from one search run: one artifact against three.

    python bench/bench_family.py --run RUN [--budgets 1ms,3ms,10ms] [--finetune 0]

RUN is a finished `nas search` (e.g. the README's `nas search --budget 10ms`). The bench
extracts a family with `nas extract --budgets` (the library call behind it), then each
member alone as `nas extract --rank` would save it, and prints, side by side: the family
artifact's size against the sum of its members' own files, each member's validation loss
and latency measured on this device, and whether every member loaded from the family
computes exactly what the member extracted alone computes.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

import nas
from nas.search.budget import parse_budget
from nas.search.deploy import ExtractRequest, run_extract
from nas.search.evaluator import open_supernet
from nas.search.extract import inherited
from nas.search.search_run import SearchRun
from nas.supernet.storage import WEIGHTS_FILE, save_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", required=True, help="a finished `nas search` run folder")
    parser.add_argument("--budgets", default="1ms,3ms,10ms", help="one member per budget")
    parser.add_argument("--finetune", type=int, default=0, help="family fine-tune steps")
    parser.add_argument("--out", help="family folder (default: a temporary one)")
    args = parser.parse_args()
    budgets = tuple(parse_budget(b) for b in args.budgets.split(","))
    with tempfile.TemporaryDirectory(prefix="bench-family-") as tmp:
        out = Path(args.out) if args.out else Path(tmp) / "family"
        request = ExtractRequest(
            out=out,
            run=args.run,
            budgets=budgets,
            family=True,
            finetune_steps=args.finetune,
            force=True,
            command=f"python bench/bench_family.py --run {args.run} --budgets {args.budgets}",
        )
        result = run_extract(request, say=print, progress=True)
        family = result.family
        # Each member saved alone, from the same weights, as `nas extract` saves one model
        # (after a family fine-tune, from the fine-tuned weights the family holds).
        run = SearchRun(args.run)
        source = open_supernet(run.supernet, run.space)
        apart_bytes = 0
        tokens = torch.randint(0, 256, (1, 64), generator=torch.Generator().manual_seed(0))
        print()
        print(
            f"{'member':<10} {'arch':<12} {'params':>9} {'val loss':>9} {'measured ms':>12} "
            f"{'equal alone':>11}"
        )
        for item in result.items:
            alone_dir = Path(tmp) / f"alone-{item.name}"
            alone = item.model if args.finetune else inherited(source, item.arch).model
            save_model(alone, alone_dir)
            apart_bytes += (alone_dir / WEIGHTS_FILE).stat().st_size
            from_family = nas.load(out, member=item.name)
            same = torch.equal(from_family(tokens), nas.load(alone_dir)(tokens))
            measured = item.info.get("measured_ms")
            print(
                f"{item.name:<10} {item.arch.id:<12} {item.info['params']:>9,} "
                f"{item.info['val_loss']:>9.4f} "
                f"{'-' if measured is None else f'{measured:.3f}':>12} {str(same):>11}"
            )
        union = (out / "family.safetensors").stat().st_size
        print()
        print(f"family artifact: {union / 1e6:.3f} MB ({family['union_params']:,} params)")
        print(f"members saved apart: {apart_bytes / 1e6:.3f} MB ({family['sum_params']:,} params)")
        print(
            f"ratio family/apart: {union / apart_bytes:.3f} (bytes), "
            f"{family['union_params'] / family['sum_params']:.3f} (params)"
        )
        for note in result.notes:
            print(f"note: {note}")


if __name__ == "__main__":
    main()
