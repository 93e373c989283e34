"""Extraction for deployment: what `nas extract` writes, from a search run or an arch.

One model: the arch's weights (the search's fine-tuned winner, a re-ranked candidate's
fine-tuned weights, or the supernet's inherited ones) saved with `nas.save`, and the
figures its model card reports: parameters, FLOPs, validation loss on the search's own
batches, predicted latency (the search's profile, drift-scaled as the search scaled it)
and latency measured now on this device.

A family: several members cut from ONE set of supernet weights and stored once
(supernet/family.py). Members cannot each keep a separate fine-tune, so `finetune_steps`
trains the shared weights on all members together with the trainer (`family`,
`sandwich=False`), and the family stays nested.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from nas.core.errors import CheckpointError, NasError
from nas.search_space import Arch, SearchSpace
from nas.supernet.checkpoint import load_supernet
from nas.supernet.corpus import Corpus
from nas.supernet.device import resolve_device
from nas.supernet.static import StaticModel
from nas.supernet.storage import load_model
from nas.supernet.supernet import Supernet
from nas.supernet.training import train

from .budget import format_ms
from .evaluator import SupernetSource
from .fingerprint import Workload
from .flops import analytic_flops
from .measure import Measurer
from .model_eval import eval_measure_config, validation_loss
from .profile import Profile
from .rerank import RerankConfig

Say = Callable[[str], None]


@dataclass
class Scoring:
    """How an extracted model is scored: the search's batches, profile and workload."""

    inputs: np.ndarray  # (n, B, T) int64 validation inputs, the search's own
    targets: np.ndarray  # (n, B, T) int64 next-token targets
    workload: Workload  # batch, tokens, device, threads and mode latencies are for
    profile: Profile | None = None  # predicts latency; None: no prediction
    drift_scale: float = 1.0  # the factor the search scaled its predictions by
    measure: bool = True  # measure each model on this device now

    @property
    def tokens(self) -> int:
        return int(self.targets.size)


@dataclass
class Extracted:
    """A model to ship and what its card says about it."""

    name: str  # the member's name in a family; the arch id for one model
    arch: Arch
    model: StaticModel
    weights: str  # where its weights came from, in words
    info: dict[str, Any] = field(default_factory=dict)  # params, flops, val_loss, latencies


def score(space: SearchSpace, item: Extracted, scoring: Scoring) -> Extracted:
    """Fill `item.info` with its parameters, FLOPs, validation loss and latencies."""
    arch, workload = item.arch, scoring.workload
    info = item.info
    info["params"] = sum(p.numel() for p in item.model.parameters())
    info["flops"] = analytic_flops(space, arch, workload.batch, workload.seq_len)
    info["val_loss"] = validation_loss(item.model, scoring.inputs, scoring.targets)
    info["val_tokens"] = scoring.tokens
    info["predicted_ms"] = (
        float(scoring.profile.predict([arch])[0]) * scoring.drift_scale
        if scoring.profile is not None
        else None
    )
    info["measured_ms"] = None
    if scoring.measure:
        config = eval_measure_config(workload.device)
        measured = Measurer(workload, config).measure_model(item.model)
        info["measured_ms"] = measured.median_ms
        info["measured_rel_iqr"] = measured.rel_iqr
    info["workload"] = str(workload)
    return item


def inherited(source: SupernetSource, arch: Arch, name: str | None = None) -> Extracted:
    """`arch` with the supernet's weights (its sub-supernet's, for a few-shot one)."""
    net = load_supernet(source.checkpoint_for(arch))
    return Extracted(name or arch.id, arch, net.extract(arch).eval(), "inherited (supernet)")


def saved(folder: Path, arch: Arch, weights: str, name: str | None = None) -> Extracted:
    """A model the search saved (best/ or a re-ranked candidate); it must be `arch`."""
    model = load_model(folder)
    if model.arch != arch:
        raise CheckpointError(
            f"{folder}: holds arch {model.arch.id}, not {arch.id}; the search run was changed"
        )
    return Extracted(name or arch.id, arch, model.eval(), weights)


# ------------------------------------------------------------------ families
@dataclass
class FamilyPlan:
    """The members of a family, by name, and the one supernet they all come from."""

    members: dict[str, Arch]
    checkpoint: Path  # the (sub-)supernet checkpoint every member is cut from
    notes: list[str] = field(default_factory=list)  # what the console says about the picks


def plan_family(source: SupernetSource, members: dict[str, Arch]) -> FamilyPlan:
    """Check that every member is cut from the same weights; `NasError` otherwise."""
    if not members:
        raise NasError("a family needs at least one member; pass --budgets or --archs")
    files = {name: source.checkpoint_for(arch) for name, arch in members.items()}
    if len(set(files.values())) > 1:
        detail = ", ".join(f"{n}: {f.parent.name}" for n, f in files.items())
        raise NasError(
            f"{source.path}: the members come from different few-shot sub-supernets ({detail}); "
            "a family shares one set of weights: pick members whose split layers use the "
            "same mixers"
        )
    return FamilyPlan(dict(members), next(iter(files.values())))


def unique_members(named: Sequence[tuple[str, Arch]]) -> tuple[dict[str, Arch], list[str]]:
    """Drop members whose arch an earlier one already is; the notes say which."""
    members: dict[str, Arch] = {}
    notes = []
    for name, arch in named:
        twin = next((n for n, a in members.items() if a == arch), None)
        if twin is not None:
            notes.append(f"{name}: the same arch as {twin} ({arch.id}); kept once, as {twin}")
            continue
        if name in members:
            raise NasError(f"member name {name!r} repeats; give each member once")
        members[name] = arch
    return members, notes


def budget_members(
    budgets: Sequence[float], pick: Callable[[float], Arch], search_budget_ms: float
) -> tuple[list[tuple[str, Arch]], list[str]]:
    """One member per budget, named by it ("5ms"), each the pick of the search's front."""
    named, notes = [], []
    for budget in sorted(budgets):
        if budget > search_budget_ms:
            notes.append(
                f"{format_ms(budget)}: above the search's own budget "
                f"({format_ms(search_budget_ms)}), so picked from its front within that; "
                "search with the largest budget to fill a family"
            )
        named.append((f"{budget:g}ms", pick(budget)))
    return named, notes


def finetune_family(
    plan: FamilyPlan,
    corpus: Corpus,
    steps: int,
    batch_size: int,
    seq_len: int,
    scratch: Path,
    device: str = "cpu",
    progress: bool = True,
) -> Supernet:
    """Train the shared weights on every member together for `steps` steps (the trainer
    with `family` = the members and `sandwich=False`, the re-rank's recipe otherwise) and
    return the supernet they are then cut from. Its run folder is temporary (`scratch`)."""
    archs = list(plan.members.values())
    recipe = RerankConfig(steps=steps, batch_size=batch_size, seq_len=seq_len)
    source = load_supernet(plan.checkpoint)
    config = replace(
        recipe.train_config(archs[0], plan.checkpoint, source.ffn_per_mixer),
        family=tuple(a.to_json() for a in archs),
    )
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".family-finetune-", dir=scratch) as tmp:
        run = train(
            source.space,
            corpus,
            config,
            Path(tmp) / "run",
            device=resolve_device(device),
            progress=progress,
        )
        return load_supernet(run.checkpoint)
