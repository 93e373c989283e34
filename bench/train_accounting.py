"""How much training each arch's own weights got in a supernet run: the bench's accounting.

The bench compares an arch's inherited weights with the same arch trained alone on the
tokens its weights saw inside the supernet (`exposure_steps`, from the per-slot usage
counts the trainer keeps in its checkpoints), and reports what a few-shot supernet cost
in forward+backward passes (`logged_passes`, from the run's metrics.jsonl).

Bench scripts import it by plain name (`from train_accounting import exposure_steps`),
as bench/ is first on their sys.path.
"""

from __future__ import annotations

from pathlib import Path

from nas.search_space import Arch
from nas.supernet.arch_sampling import usage_key
from nas.supernet.run_dir import METRICS_FILE, MetricsLog


def exposure_steps(
    arch: Arch, usage: dict[str, int], steps: int, ffn_per_mixer: bool = False
) -> float:
    """How many of a run's `steps` trained `arch`'s own weights, averaged over its layers.

    A layer's count is the number of steps in which some arch of the sandwich ran that
    layer slot's mixer (at any width; `usage` comes from a checkpoint's state). A skip
    layer owns no mixer weights and counts every step, as do the shared embedding, FFN
    and exit weights, which some arch trains at every step. The largest and smallest
    archs, run at every step, have exposure `steps`; a middle arch built on one mixer
    has only the steps in which that mixer was sampled at its layers. With
    `ffn_per_mixer` a skip layer has an FFN of its own, and counts its own steps too.
    """
    counts = [
        steps
        if layer.mixer == "skip" and not ffn_per_mixer
        else usage.get(usage_key(i, layer.mixer), 0)
        for i, layer in enumerate(arch.layers)
    ]
    return sum(counts) / len(counts)


def logged_passes(run_dir: str | Path) -> int | None:
    """Forward+backward passes of an arch on a batch over the run's steps, as its
    metrics.jsonl logged them (repeats merged); None if some step predates that log."""
    steps = [r for r in MetricsLog(Path(run_dir) / METRICS_FILE).read() if r["kind"] == "train"]
    if not all("passes" in r for r in steps):
        return None
    return sum(r["passes"] for r in steps)
