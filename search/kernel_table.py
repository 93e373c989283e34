"""The kernel table: every op of a space timed in isolation, through the deployed code.

An entry is one part of an extracted model's forward pass at one width: the embedding,
one block (a mixer choice, or an FFN width), or the exit head. Each is timed by calling
the `StaticModel` method that `StaticModel.forward` itself is made of (`embed_tokens`,
`run_blocks`, `read_out`; see `timed_part`), so the table holds no second copy of the
forward's wiring: change the forward and the table measures the change.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from nas.search_space import Arch, LayerArch, SearchSpace
from nas.supernet import StaticModel

from .measure import (
    MeasureConfig,
    Measurement,
    Measurer,
    fastest_calm,
    random_model,
    retry_disturbed,
)
from .predictor import KernelTable, mixer_options
from .profile_config import Step

KINDS = ("embed", "mixer", "ffn", "exit")  # what a kernel-table entry times


def kernel_plan(space: SearchSpace) -> list[tuple[str, int, Any]]:
    """The entries of the kernel table, in measuring order: (kind, d_model, choice)."""
    plan: list[tuple[str, int, Any]] = []
    for d in space.d_model:
        plan.append(("embed", d, None))
        plan.extend(("mixer", d, key) for key in mixer_options(space) if key[0] != "skip")
        plan.extend(("ffn", d, f) for f in space.ffn if f > 0)
        plan.append(("exit", d, None))
    return plan


def measure_kernel_table(
    space: SearchSpace,
    measurer: Measurer,
    config: MeasureConfig,
    seed: int = 0,
    step: Step | None = None,
    instances: int = 4,
    passes: int = 1,
) -> tuple[KernelTable, list[dict[str, Any]]]:
    """Measure every op of `space` in isolation, through the extracted model's own modules.

    Each op is cut out of extracted models (seeded random weights) and run by the very
    method of `StaticModel` that its forward pass runs (`timed_part`), on a fixed input.
    One timed call runs `instances` copies of the op with their own weights (blocks
    chained, as a model chains them) and the entry is its time / `instances`: a single
    small op's latency depends on where its weights happen to lie in memory by 10-40%
    on a 2-core CPU, and several copies average that out, as the layers of a real model
    do. Every entry is measured once in each of `passes` passes (each in its own random
    order) and the fastest undisturbed measurement is kept (see `measure.fastest_calm`).
    """
    options = mixer_options(space)
    n_d = len(space.d_model)
    table = KernelTable(
        embed_ms=np.zeros(n_d),
        exit_ms=np.zeros(n_d),
        mixer_ms=np.zeros((n_d, len(options) + 1)),
        ffn_ms=np.zeros((n_d, len(space.ffn) + 1)),
    )
    records: list[dict[str, Any]] = []
    # In a seeded random order: when the machine drifts (a slow spell on a shared host),
    # the entries it hits are scattered over widths and mixers instead of forming a block
    # that would bias every arch of one width alike; the correction averages them out.
    plan = kernel_plan(space)

    def measure_entry(k: int) -> Measurement:
        kind, d, choice = plan[k]
        fn = entry_call(kind, layer_of(kind, choice), space, d, measurer, instances, seed)
        return measurer.measure(fn, config)

    tries: list[list[Measurement]] = [[] for _ in plan]
    for p in range(passes):
        order = np.random.default_rng([seed, 4, p] if p else [seed, 4]).permutation(len(plan))
        for k in order.tolist():
            tries[k].append(measure_entry(k))
            if step:
                step(f"kernel {plan[k][0]} d{plan[k][1]}")
    done = [fastest_calm(t) for t in tries]
    for (kind, d, choice), m in zip(plan, retry_disturbed(done, measure_entry), strict=True):
        i = space.d_model.index(d)
        layer = layer_of(kind, choice)
        ms = m.median_ms / instances
        if kind == "embed":
            table.embed_ms[i] = ms
            label = f"embed d{d}"
        elif kind == "exit":
            table.exit_ms[i] = ms
            label = f"exit d{d}"
        elif kind == "mixer":
            table.mixer_ms[i, options.index(choice)] = ms
            label = f"{layer.mixer} d{d} h{layer.heads} w{layer.window}"
        else:
            table.ffn_ms[i, space.ffn.index(choice)] = ms
            label = f"ffn d{d} f{choice}"
        records.append({"op": label, "instances": instances, **_record(m), "median_ms": ms})
    return table, records


def layer_of(kind: str, choice: Any) -> LayerArch:
    """The one-layer arch choice whose block (or ends) a kernel-table entry times."""
    if kind == "mixer":
        return LayerArch(choice[0], choice[1], choice[2], 0)
    return LayerArch("skip", None, None, choice if kind == "ffn" else 0)


def timed_part(kind: str, model: StaticModel) -> Callable[[torch.Tensor], torch.Tensor]:
    """The part of `model`'s forward pass that an entry of `kind` (one of KINDS) times.

    These are the methods `StaticModel.forward` is composed of, not copies of them:
    "embed" (B, T) tokens -> (B, T, d); "mixer" and "ffn" (B, T, d) -> (B, T, d) through
    every block; "exit" (B, T, d) -> (B, T, V) logits. Raises `ValueError` for another kind.
    """
    if kind == "embed":
        return model.embed_tokens
    if kind in ("mixer", "ffn"):
        return model.run_blocks
    if kind == "exit":
        return model.read_out
    raise ValueError(f"unknown kernel-table entry kind {kind!r}; valid kinds are {KINDS}")


def entry_call(
    kind: str,
    layer: LayerArch,
    space: SearchSpace,
    d: int,
    measurer: Measurer,
    instances: int,
    seed: int,
) -> Callable[[], list[torch.Tensor]]:
    """One timed call of an entry: `instances` copies of an op, each run by `timed_part`.

    Blocks (a mixer or an FFN) run chained in one model of `instances` identical layers
    (seeded `seed`), as in a model, on `measurer.hidden(d, seed)`; it returns [its (B, T, d)
    output]. Embeddings (on the workload's tokens) and exit heads (on that hidden input)
    of `instances` separate one-layer models (seeded `seed`, `seed` + 1, ...) run in turn;
    it returns each one's output.
    """
    x = measurer.hidden(d, seed)  # (B, T, d)
    if kind in ("mixer", "ffn"):
        model = measurer.prepare(random_model(space, Arch(d, (layer,) * instances), seed))
        chain = timed_part(kind, model)
        return lambda: [chain(x)]  # (B, T, d)
    models = [
        measurer.prepare(random_model(space, Arch(d, (layer,)), seed + j)) for j in range(instances)
    ]
    parts = [timed_part(kind, m) for m in models]
    # Embeddings read the tokens; exit heads the hidden states a last block would hand on.
    inputs = measurer.tokens_for(space.vocab_size) if kind == "embed" else x  # (B, T) | (B, T, d)
    return lambda: [part(inputs) for part in parts]  # each (B, T, d) or (B, T, V)


def _record(m: Measurement) -> dict[str, Any]:
    return {
        k: m.to_dict()[k]
        for k in (
            "median_ms",
            "rel_iqr",
            "runs",
            "inner",
            "attempts",
            "noisy",
            "contended",
            "foreign_cores",
            "slowdown",
        )
    }
