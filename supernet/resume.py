"""Which runs a training run may continue: resume, branch and start-from checks.

A resumed run keeps its settings and data; a branch (`branch_from`) keeps its source's
settings but for more pins. Sources (`init_from`, `branch_from`) are compared by the
absolute path of their checkpoint file, and a moved source is recognised by the digest
of the checkpoint the run started from. Every refusal is one `CheckpointError` line
that names what differs.
"""

from __future__ import annotations

from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from nas.core.errors import CheckpointError
from nas.search_space import Arch, SearchSpace

from .checkpoint import Checkpoint, checkpoint_file, checkpoint_path, read_checkpoint
from .corpus import Corpus
from .train_config import TrainConfig


def checkpoint_to_resume(
    run_dir: Path, space: SearchSpace, corpus: Corpus, config: TrainConfig, resume: bool
) -> Checkpoint | None:
    """The checkpoint `run_dir` holds, to continue with `config` on `corpus`; None when it
    holds none (a new run). `config` must have its sources resolved (`resolved_sources`).

    Raises `CheckpointError` when a checkpoint is there and `resume` is False, when it is
    unusable or for another space, or when it was trained with other settings or data.
    """
    ckpt_file = checkpoint_path(run_dir)
    if not ckpt_file.exists():
        return None
    if not resume:
        raise CheckpointError(
            f"{run_dir}: already holds a checkpoint; pass --resume to continue it, "
            f"or choose another --out"
        )
    ckpt = read_checkpoint(ckpt_file, space)
    saved = resolved_sources(TrainConfig.from_dict(ckpt.state.get("config", {})))
    if saved != config and not moved_sources(saved, config, ckpt):
        raise CheckpointError(f"{ckpt_file}: {config_diff(saved, config)}")
    check_same_data(ckpt, corpus)
    return ckpt


def check_branch(source: Checkpoint, config: TrainConfig, corpus: Corpus) -> None:
    """Raise `CheckpointError` unless `config` may branch `source`: its settings but for
    more pins, on the same data, with steps left to run."""
    saved = resolved_sources(TrainConfig.from_dict(source.state.get("config", {})))
    own = replace(saved, pinned_mixers=config.pinned_mixers, branch_from=config.branch_from)
    problem = ""
    if own != config:
        given = replace(config, pinned_mixers=saved.pinned_mixers, branch_from=saved.branch_from)
        problem = (
            f"a branch keeps its source's settings: {differences(saved, given)}; drop those flags"
        )
    elif not set(saved.pinned_mixers) <= set(config.pinned_mixers):
        problem = f"a branch keeps the pins {list(saved.pinned_mixers)} of its source"
    elif source.step >= config.steps:
        problem = (
            f"it finished its {config.steps} steps, so no schedule is left to branch; stop "
            f"the source early with --stop-at, or start from its weights with --init-from"
        )
    if problem:
        raise CheckpointError(f"{source.path}: {problem}")
    check_same_data(source, corpus)


def check_same_data(ckpt: Checkpoint, corpus: Corpus) -> None:
    """Raise `CheckpointError` unless `ckpt` was trained on `corpus`."""
    if ckpt.state.get("data", {}).get("key") != corpus.key:
        raise CheckpointError(
            f"{ckpt.path}: was trained on other data than {corpus.info['source']}"
        )


def resolved_sources(config: TrainConfig) -> TrainConfig:
    """`config` with the runs it starts from (`init_from`, `branch_from`) named by the
    absolute path of their checkpoint file: a rerun from another directory, or naming the
    run folder where the first run named its file, is the same run and resumes."""

    def resolved(source: str) -> str:
        if not source:
            return ""
        return str(checkpoint_file(Path(source).expanduser().resolve()))

    return replace(
        config, init_from=resolved(config.init_from), branch_from=resolved(config.branch_from)
    )


def moved_sources(saved: TrainConfig, given: TrainConfig, ckpt: Checkpoint) -> bool:
    """Whether `given` is the resumed run's config `saved` with its source at another path:
    the same settings and kind of source, and the source given is the very checkpoint the
    run started from (the digest it recorded), so a moved run folder resumes."""
    recorded = ckpt.state.get("source_digest")
    source = given.init_from or given.branch_from
    same_kind = (bool(saved.init_from), bool(saved.branch_from)) == (
        bool(given.init_from),
        bool(given.branch_from),
    )
    if not (recorded and source and same_kind):
        return False
    if replace(given, init_from=saved.init_from, branch_from=saved.branch_from) != saved:
        return False
    try:
        return read_checkpoint(source).digest == recorded
    except CheckpointError:
        return False


def config_diff(saved: TrainConfig, given: TrainConfig) -> str:
    return "a resumed run keeps its settings; this run has " + differences(saved, given)


def differences(saved: TrainConfig, given: TrainConfig) -> str:
    """'name saved (given other), ...' for each setting in which `given` differs."""

    def show(name: str, value: Any) -> str:
        if name == "family":  # arch ids, not pages of JSON
            return "[" + ", ".join(Arch.from_json(text).id for text in value) + "]"
        return str(value)

    diffs = [
        f"{f.name} {show(f.name, getattr(saved, f.name))} "
        f"(given {show(f.name, getattr(given, f.name))})"
        for f in fields(TrainConfig)
        if getattr(saved, f.name) != getattr(given, f.name)
    ]
    return ", ".join(diffs)
