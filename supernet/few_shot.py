"""Few-shot supernets (Zhao et al. 2021): one sub-supernet per mixer combination of some layers.

One-shot weight sharing makes every arch's weights also serve every other mixer
combination, so a layer's mixer does little when the layers after it cannot count on it.
A few-shot supernet splits the space on some layers' mixers: after a one-shot phase, one
sub-supernet per combination of their mixers continues from the one-shot weights (the
trainer with `pinned_mixers`), training only the archs with those mixers there. An arch
is then read from the sub-supernet of its own mixers (`FewShotRuns.sub_for`).

With `config.steps` S and a split at step S1, the one-shot phase runs S1 steps and each
sub-supernet S - S1 more, so every arch's weights see as many batches as in an S-step
one-shot run; k combinations cost (k - 1) (S - S1) extra steps. S1 = 0 trains the
sub-supernets from scratch.

By default the one-shot phase is an S1-step run of its own schedule, and each
sub-supernet starts a new one from its weights (`init_from`). With `branch`, the one-shot
phase is the first S1 steps of an S-step run, and each sub-supernet branches it
(`TrainConfig.branch_from`): optimizer state, warmup and cosine go on from step S1.

A few-shot run is a folder: few_shot.json (what was split, and where each sub-supernet
is), one_shot/ and one run folder per sub-supernet, each an ordinary `nas train` run.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from nas.core.atomic import atomic_write_json
from nas.core.errors import CheckpointError, NasError
from nas.search_space import Arch, SearchSpace

from .corpus import Corpus
from .training import TrainConfig, train, usage_key

FEW_SHOT_FILE = "few_shot.json"
ONE_SHOT_DIR = "one_shot"

# A phase's config: `config` for a run of `steps` steps (the bench also rescales its
# validation and checkpoint intervals to the phase).
PhaseConfig = Callable[[TrainConfig, int], TrainConfig]


@dataclass(frozen=True)
class FewShotRuns:
    """The run folders of one few-shot split."""

    layers: tuple[int, ...]  # the split layers' slots (0-based)
    one_shot: Path | None  # the one-shot phase (None for a split at step 0)
    subs: dict[tuple[str, ...], Path]  # {its mixers, one per split layer: sub-supernet}

    def sub_for(self, arch: Arch) -> Path:
        """The run folder of the sub-supernet that trained `arch`'s mixers at the split
        layers; `NasError` when `arch` is too shallow to reach them, `CheckpointError`
        (naming the combination and the few-shot folder) when no sub-supernet trained
        that combination, e.g. an arch of another space than the one split."""
        if arch.depth <= max(self.layers):
            raise NasError(
                f"arch of depth {arch.depth} has no layer {max(self.layers)}, where this "
                f"few-shot supernet is split; every arch of its space must reach it"
            )
        mixers = tuple(arch.layers[i].mixer for i in self.layers)
        if mixers not in self.subs:
            # Every sub-supernet sits in the few-shot folder, so its parent names that folder.
            folder = next(iter(self.subs.values())).parent if self.subs else "few-shot run"
            held = sorted(",".join(m) for m in self.subs)
            raise CheckpointError(
                f"{folder}: no sub-supernet for mixers {','.join(mixers)!r} at layers "
                f"{list(self.layers)} (it holds {held}); use an arch of the space it was "
                "trained on, or train a few-shot run that splits on these mixers"
            )
        return self.subs[mixers]


def check_split(space: SearchSpace, layers: tuple[int, ...], split_at: int, steps: int) -> None:
    """`NasError` naming the problem unless `layers` are distinct slots every arch of
    `space` has and 0 <= `split_at` < `steps`."""
    shallowest = space.exits[0]
    if not layers or len(set(layers)) != len(layers):
        raise NasError(f"few-shot layers {list(layers)}: need distinct layer slots, e.g. 1 or 0,1")
    if not all(0 <= i < shallowest for i in layers):
        raise NasError(
            f"few-shot layers {list(layers)}: need layer slots every arch has, "
            f"0 to {shallowest - 1} in space {space.name!r} (its shallowest exit is {shallowest})"
        )
    if not 0 <= split_at < steps:
        raise NasError(f"few-shot split at step {split_at}: need 0 to {steps - 1} (steps - 1)")


def train_few_shot(
    space: SearchSpace,
    corpus: Corpus,
    config: TrainConfig,
    layers: tuple[int, ...],
    split_at: int,
    out: str | Path,
    *,
    device: str | torch.device = "auto",
    resume: bool = False,
    branch: bool = False,
    lr: float | None = None,
    phase: PhaseConfig | None = None,
    progress: bool = True,
    on_event: Callable[[str], None] | None = None,
) -> FewShotRuns:
    """Train the one-shot phase (`split_at` steps) and one sub-supernet per combination of
    the mixers of `layers` (`config.steps` - `split_at` steps each) into `out`; return
    their run folders.

    With `resume`, continue the few-shot run in `out` (its split must be this one); without
    it, `out` must not hold one. `lr` is the sub-supernets' peak lr (default: the one-shot
    phase's; their folders carry it, so runs at another lr sit beside the default's); not
    with `branch`, which keeps the source's schedule. Raises `NasError` for a bad split or
    a clash with `out`, and what `train` raises.
    """
    layers = tuple(layers)
    check_split(space, layers, split_at, config.steps)
    if branch and lr is not None:
        raise NasError("a branch keeps its source's lr; give no sub-supernet lr with branch")
    if lr is not None and not lr > 0:
        raise NasError(f"sub-supernet lr must be > 0, got {lr}")
    phase = phase or (lambda c, steps: replace(c, steps=steps))
    say = on_event or (lambda msg: None)
    out = Path(out)
    branch = branch and split_at > 0
    split = {"layers": list(layers), "split_at": split_at, "branched": branch}
    _claim(out, split, resume)
    start, one_shot = "", None
    if split_at > 0:
        one_shot = out / ONE_SHOT_DIR
        say(f"few-shot: one-shot phase, {split_at} steps; {one_shot}")
        first = phase(config, config.steps if branch else split_at)
        train(
            space,
            corpus,
            first,
            one_shot,
            resume=True,
            device=device,
            progress=progress,
            stop_after=split_at,
        )
        start = str(one_shot)
    subs = {}
    for mixers in itertools.product(space.mixers, repeat=len(layers)):
        chosen = list(zip(layers, mixers, strict=True))
        pins = tuple(usage_key(i, m) for i, m in chosen)
        name = "-".join(f"layer{i}_{m}" for i, m in chosen)
        run = subs[mixers] = out / (name if lr is None else f"{name}-lr{lr:g}")
        if branch:
            sub = replace(phase(config, config.steps), pinned_mixers=pins, branch_from=start)
        else:
            sub = replace(
                phase(config, config.steps - split_at),
                pinned_mixers=pins,
                init_from=start,
                lr=config.lr if lr is None else lr,
            )
        say(
            f"few-shot: sub-supernet {' '.join(pins)}, {config.steps - split_at} steps"
            + (f" from the one-shot phase; {run}" if start else f"; {run}")
        )
        train(space, corpus, sub, run, resume=True, device=device, progress=progress)
    runs = FewShotRuns(layers, one_shot, subs)
    atomic_write_json(out / FEW_SHOT_FILE, {**split, **_folders(runs, out), "status": "complete"})
    return runs


def load_few_shot(out: str | Path) -> FewShotRuns:
    """The runs of the few-shot supernet in folder `out`; `CheckpointError` naming the
    problem when it holds none, an unfinished one or an unreadable one."""
    out = Path(out)
    file = out / FEW_SHOT_FILE
    if not file.is_file():
        raise CheckpointError(
            f"{out}: no {FEW_SHOT_FILE}; not a few-shot run (train one with nas train --few-shot)"
        )
    record = _read_record(file)
    if record.get("status") != "complete":
        raise CheckpointError(f"{out}: the few-shot run has not finished; --resume completes it")
    try:
        one_shot = record["one_shot"]
        return FewShotRuns(
            tuple(record["layers"]),
            None if one_shot is None else out / one_shot,
            {tuple(k.split(",")): out / v for k, v in record["subs"].items()},
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{file}: unreadable ({exc!r})") from None


def _claim(out: Path, split: dict, resume: bool) -> None:
    """Record the split in `out` before training (so that a rerun can check it), or check
    it against the one recorded there; `NasError` for a clash."""
    file = out / FEW_SHOT_FILE
    if file.exists():
        if not resume:
            raise NasError(
                f"{out}: already holds a few-shot run; pass --resume to continue it, "
                f"or choose another --out"
            )
        saved = {k: _read_record(file).get(k) for k in split}
        if saved != split:
            raise NasError(
                f"{out}: its few-shot split is {saved}, not {split}; resume it with its "
                f"own, or choose another --out"
            )
        return
    if out.exists() and any(out.iterdir()) and not resume:
        raise NasError(f"{out}: not empty; choose another --out for a few-shot run")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(file, {**split, "status": "running"})


def _read_record(file: Path) -> dict:
    """The JSON object in few_shot.json `file`; `CheckpointError` when it is unreadable."""
    try:
        record = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{file}: unreadable ({exc!r})") from None
    if not isinstance(record, dict):
        raise CheckpointError(f"{file}: unreadable (not a JSON object)")
    return record


def _folders(runs: FewShotRuns, out: Path) -> dict:
    """The run folders of `runs`, relative to `out`, for few_shot.json."""
    return {
        "one_shot": None if runs.one_shot is None else runs.one_shot.name,
        "subs": {",".join(mixers): run.name for mixers, run in runs.subs.items()},
    }
