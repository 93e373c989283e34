"""ONNX Runtime against eager PyTorch for one extracted model on this CPU, in one run.

    python bench/bench_onnx.py [--model DIR | --arch ARCH] [--seq-len 1024] [--threads N]
                               [--rounds 30] [--seed 0] [--space FILE]

The model is a saved one (`--model DIR`, read with `nas.load`), or an arch of the space
(`--arch`: a JSON file or inline JSON) extracted from a seeded supernet, or by default the
median-size arch (by parameters) of 9 drawn with `--seed` from the space (the default
space unless `--space`). Its weights are then the untrained supernet's, which does not
change the time of either runtime.

The model is exported with `nas.supernet.export.export_onnx` (dynamic batch and
sequence, its parity line is printed), then both runtimes run batch 1 x `--seq-len`
tokens with the same number of threads, timed in interleaved rounds (one call of each per
round, so machine noise hits both alike), and the medians and their ratio are printed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

import nas
from nas import Arch, SearchSpace


def _model(args: argparse.Namespace) -> tuple[nas.StaticModel, str]:
    """The model to time, and a line saying where it came from."""
    if args.model:
        return nas.load(args.model), f"saved model {args.model}"
    space = SearchSpace.from_file(args.space) if args.space else SearchSpace.default()
    where = f"space {args.space or 'default'}, untrained supernet seed {args.seed}"
    if args.arch:
        text = args.arch if args.arch.lstrip().startswith("{") else Path(args.arch).read_text()
        arch = space.validate(Arch.from_dict(json.loads(text), source="--arch"))
    else:
        drawn = sorted(space.sample_many(9, seed=args.seed), key=space.param_count)
        arch = drawn[len(drawn) // 2]
        where += f", median-size of 9 archs drawn with seed {args.seed}"
    return nas.Supernet(space, seed=args.seed).extract(arch).eval(), where


def time_interleaved(fns: dict[str, Callable[[], object]], rounds: int) -> dict[str, list[float]]:
    """ms of each call of each fn, round-robin, after at least 3 calls or 1 s of warm-up each."""
    for fn in fns.values():
        start, calls = time.perf_counter(), 0
        while calls < 3 or time.perf_counter() - start < 1.0:
            fn()
            calls += 1
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            samples[name].append((time.perf_counter() - t0) * 1e3)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--model", help="a saved model folder (nas.save / nas extract)")
    source.add_argument("--arch", help="an arch of the space: a JSON file or inline JSON")
    parser.add_argument("--space", help="space file for --arch or the drawn arch (default space)")
    parser.add_argument("--seed", type=int, default=0, help="arch draw and supernet seed")
    parser.add_argument("--seq-len", type=int, default=1024, help="tokens per call (batch 1)")
    parser.add_argument(
        "--threads", type=int, default=torch.get_num_threads(), help="threads of both runtimes"
    )
    parser.add_argument("--rounds", type=int, default=30, help="interleaved timed rounds")
    args = parser.parse_args()

    try:
        import onnxruntime as ort

        from nas.supernet.export import export_onnx
    except ImportError:
        raise SystemExit('bench_onnx needs the onnx extra: pip install -e ".[onnx]"') from None
    torch.set_num_threads(args.threads)
    try:
        model, where = _model(args)
    except nas.NasError as exc:
        raise SystemExit(f"bench_onnx: {exc}") from None
    if not 1 <= args.seq_len <= model.consts.max_seq_len:
        raise SystemExit(f"--seq-len must be 1..{model.consts.max_seq_len} for this model")
    params = sum(p.numel() for p in model.parameters())

    with tempfile.TemporaryDirectory(prefix="bench-onnx-") as tmp:
        path = Path(tmp) / "model.onnx"
        t0 = time.perf_counter()
        check = export_onnx(model, path)
        export_s = time.perf_counter() - t0
        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        size_mb = path.stat().st_size / 1e6

        tokens = torch.randint(
            0,
            model.consts.vocab_size,
            (1, args.seq_len),
            generator=torch.Generator().manual_seed(0),
        )
        feed = {"tokens": tokens.numpy()}

        def eager() -> object:
            with torch.inference_mode():
                return model(tokens)

        def onnxruntime() -> object:
            return session.run(None, feed)

        samples = time_interleaved({"eager": eager, "ort": onnxruntime}, args.rounds)

    med = {name: statistics.median(s) for name, s in samples.items()}
    spread = {name: statistics.quantiles(s, n=10) for name, s in samples.items()}
    print(
        f"torch {torch.__version__}, onnxruntime {ort.__version__}, {args.threads} threads, "
        f"batch 1 x {args.seq_len} tokens, {args.rounds} interleaved rounds"
    )
    print(f"model: {model.arch} ({params / 1e6:.2f}M params; {where})")
    print(f"{check.line()}  [export {export_s:.1f} s, model.onnx {size_mb:.1f} MB]")
    for name, label in (("eager", "eager PyTorch"), ("ort", "ONNX Runtime (CPU)")):
        p10, p90 = spread[name][0], spread[name][-1]
        print(f"  {label:<20}{med[name]:9.2f} ms median  (p10 {p10:.2f}, p90 {p90:.2f})")
    ratio = med["ort"] / med["eager"]
    print(
        f"  ort / eager = {ratio:.3f}   eager / ort = {1 / ratio:.2f}x (speed-up of ONNX Runtime)"
    )


if __name__ == "__main__":
    main()
