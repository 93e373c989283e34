"""`nas eval DIR`: validation loss, perplexity, bits per byte, parameters, FLOPs and latency
of a saved model, or of every member of a family; a table, or one JSON object."""

from __future__ import annotations

import argparse
import json
import math

from nas.search.model_eval import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_BATCHES,
    EvalReport,
    ModelEval,
    evaluate_folder,
)

COLUMNS = ("name", "params", "FLOPs", "val loss", "ppl", "bpb", "latency ms")


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "eval",
        help="evaluate a saved model or every member of a family (loss, bpb, FLOPs, latency)",
        description="Validation loss (nats/token), perplexity and bits per byte on a corpus's "
        "validation split, parameters, FLOPs and the measured latency on this device, for a "
        "model folder or every member of a family folder.",
    )
    parser.add_argument("dir", metavar="DIR", help="a model folder or a family folder")
    parser.add_argument(
        "--data",
        metavar="PATH",
        help="a text file, a folder of text files, a .npy token array, or a .bin token array "
        "with --tokens-dtype (default: the Python standard library's sources, byte-level)",
    )
    parser.add_argument("--tokens-dtype", metavar="DTYPE", help="dtype of a raw .bin token array")
    parser.add_argument(
        "--batches",
        type=int,
        default=DEFAULT_BATCHES,
        metavar="N",
        help=f"validation batches (default {DEFAULT_BATCHES})",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_BATCH_SIZE,
        metavar="B",
        help=f"windows per validation batch (default {DEFAULT_BATCH_SIZE})",
    )
    parser.add_argument(
        "--seq-len",
        type=int,
        default=None,
        metavar="T",
        help="tokens per window, and of the latency's input (default: the model's max)",
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="(default cpu)")
    parser.add_argument(
        "--threads", type=int, default=0, help="CPU threads (default 0 = all available cores)"
    )
    parser.add_argument("--no-latency", action="store_true", help="skip the latency measurement")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=cmd_eval)


def cmd_eval(args: argparse.Namespace) -> int:
    report = evaluate_folder(
        args.dir,
        args.data,
        tokens_dtype=args.tokens_dtype,
        seq_len=args.seq_len,
        batch_size=args.batch_size,
        n_batches=args.batches,
        device=args.device,
        threads=args.threads,
        latency=not args.no_latency,
        progress=not args.no_progress,
    )
    if args.json:
        print(json.dumps(_json_safe(report.to_dict()), indent=2))
        return 0
    print("\n".join(report_lines(report)))
    return 0


def report_lines(report: EvalReport) -> list[str]:
    """The console report: what was measured and how, then one table row per model."""
    data = report.data.to_dict()
    what = "family" if report.kind == "family" else "model"
    lines = [
        f"{what}: {report.path}",
        f"data: {data['source']}, validation split ({data['split_tokens']:,} tokens): "
        f"{data['windows']} evenly spaced windows of {data['seq_len']} tokens = "
        f"{data['tokens']:,} tokens scored",
    ]
    if report.data.bytes_per_token is None:
        lines.append("bpb: not defined for a token-array corpus (its bytes per token are unknown)")
    else:
        lines.append("loss in nats/token; ppl = exp(loss); bpb = loss / ln 2 (one byte per token)")
    workload = report.workload
    lines.append(f"FLOPs: one forward pass at batch 1 x {workload.seq_len} tokens (multiply-adds)")
    if report.measure is None:
        lines.append("latency: not measured (--no-latency)")
    else:
        runs = report.measure.runs_for(workload.device)
        lines.append(f"latency: {workload}; median of {runs} runs after warm-up")
    rows = [_row(m) for m in report.models]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(COLUMNS)]
    lines.append("")
    lines.append(_format(COLUMNS, widths))
    lines.append(_format(tuple("-" * w for w in widths), widths))
    lines.extend(_format(r, widths) for r in rows)
    flagged = [m.name for m in report.models if m.latency is not None and m.latency.contended]
    if flagged:
        lines.append(f"* measured while the machine was busy (may read high): {', '.join(flagged)}")
    return lines


def _row(m: ModelEval) -> tuple[str, ...]:
    latency = "-"
    if m.latency is not None:
        latency = f"{m.latency.median_ms:.3f}" + ("*" if m.latency.contended else "")
    return (
        m.name,
        _si(m.params),
        _si(m.flops),
        f"{m.val_loss:.4f}",
        f"{m.perplexity:.3f}",
        "-" if m.bpb is None else f"{m.bpb:.4f}",
        latency,
    )


def _format(cells: tuple[str, ...], widths: list[int]) -> str:
    # Name left-aligned, numbers right-aligned.
    out = [cells[0].ljust(widths[0])] + [
        c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)
    ]
    return "  ".join(out).rstrip()


def _si(n: int) -> str:
    """12_345_678 -> '12.35M'."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(n)


def _json_safe(value):
    """Strict JSON: an infinite perplexity becomes null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value
