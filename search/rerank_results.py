"""A re-rank's candidates and results, and the results it stores and reads back.

Each fine-tuned candidate is stored under OUT/<arch id>/: the model (`nas.save` format)
and result.json, written atomically, result.json last, so a result.json on disk always
describes a complete model. A stored result is reused only when it matches the call
(`result_key`: the arch, the fine-tune settings and the source checkpoint's digest).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nas.core.atomic import atomic_write_bytes, atomic_write_json
from nas.core.errors import ArchError, NasError
from nas.search_space import Arch
from nas.supernet.checkpoint import checkpoint_file, read_checkpoint
from nas.supernet.storage import CONFIG_FILE, WEIGHTS_FILE

from .finetune import RerankConfig

RESULT_FILE = "result.json"
RESULT_FORMAT = "nas.rerank-result/1"


@dataclass(frozen=True)
class Candidate:
    """One arch of the shortlist."""

    arch: Arch
    inherited_loss: float  # its search loss (nats/token) with the supernet's weights
    source: Path  # the checkpoint (file or run folder) it inherits from: its sub-supernet's


@dataclass(frozen=True)
class RerankResult:
    """A fine-tuned candidate."""

    arch: Arch
    inherited_loss: float  # nats/token on the search's validation batches, as given
    finetuned_loss: float  # nats/token on the same batches after fine-tuning
    model_dir: Path  # the fine-tuned model, `nas.load(model_dir)`
    seconds: float  # wall time of its fine-tune (training and scoring)
    node: str  # host that fine-tuned it
    steps: int  # fine-tuning steps
    train_losses: tuple[float, ...] = ()  # its training loss at each step (nats/token)
    reused: bool = False  # read back from an earlier call's result, not trained now


def check_batches(inputs: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The validation batches as int64 arrays of one (n_batches, B, T) shape; `NasError`
    otherwise."""
    inputs, targets = np.asarray(inputs, dtype=np.int64), np.asarray(targets, dtype=np.int64)
    if inputs.shape != targets.shape or inputs.ndim != 3 or inputs.size == 0:
        raise NasError(
            f"re-rank: validation inputs and targets must be one (n_batches, B, T) shape, got "
            f"{inputs.shape} and {targets.shape}"
        )
    return inputs, targets


def resolved(source: str | Path) -> Path:
    """The checkpoint file of `source` (a file or a run folder), as an absolute path."""
    return checkpoint_file(Path(source).expanduser().resolve())


@dataclass(frozen=True)
class Job:
    """A candidate to fine-tune."""

    index: int  # its position among the candidates
    cand: Candidate
    source: Path  # its checkpoint file, resolved
    key: dict[str, Any]  # the fields of its result.json that say which re-rank it is


def source_digests(candidates: Sequence[Candidate]) -> dict[Path, str]:
    """{resolved checkpoint file: digest} of every source, each read and verified once.
    Raises `ArchError` for a candidate outside its source's space."""
    digests: dict[Path, str] = {}
    spaces = {}
    for cand in candidates:
        path = resolved(cand.source)
        if path not in digests:
            ckpt = read_checkpoint(path)
            digests[path], spaces[path] = ckpt.digest, ckpt.space
        try:
            spaces[path].validate(cand.arch)
        except ArchError as exc:
            raise ArchError(f"re-rank candidate {cand.arch.id}: {exc}") from None
    return digests


def result_key(cand: Candidate, config: RerankConfig, digest: str) -> dict[str, Any]:
    """What makes a stored result this call's: the arch, the settings and the weights it
    starts from (by digest, so a moved source still matches and a retrained one does not)."""
    return {
        "format": RESULT_FORMAT,
        "arch": cand.arch.to_dict(),
        "config": config.to_dict(),
        "source_digest": digest,
    }


def store(folder: Path, job: Job, outcome: dict[str, Any]) -> RerankResult:
    """Write a landed candidate: weights, then the model's config, then result.json, each
    atomically, so a result.json on disk always describes a complete model."""
    atomic_write_bytes(folder / WEIGHTS_FILE, outcome["weights"])
    atomic_write_json(folder / CONFIG_FILE, outcome["config"])
    record = {
        **job.key,
        "arch_id": job.cand.arch.id,
        "inherited_loss": job.cand.inherited_loss,
        "finetuned_loss": outcome["finetuned_loss"],
        "train_losses": outcome["train_losses"],
        "steps": job.key["config"]["steps"],
        "seconds": outcome["seconds"],
        "node": outcome["node"],
        "source": str(job.cand.source),
    }
    atomic_write_json(folder / RESULT_FILE, record)
    return _result(folder, record, reused=False)


def read_result(folder: Path, key: dict[str, Any]) -> RerankResult | None:
    """The stored result in `folder` if it is complete and matches `key`, else None."""
    try:
        record = json.loads((folder / RESULT_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if not isinstance(record, dict) or any(record.get(k) != v for k, v in key.items()):
        return None
    if not all((folder / name).is_file() for name in (WEIGHTS_FILE, CONFIG_FILE)):
        return None
    try:
        return _result(folder, record, reused=True)
    except (KeyError, TypeError, ValueError, NasError):
        return None


def _result(folder: Path, record: dict[str, Any], reused: bool) -> RerankResult:
    return RerankResult(
        arch=Arch.from_dict(record["arch"], source=str(folder / RESULT_FILE)),
        inherited_loss=float(record["inherited_loss"]),
        finetuned_loss=float(record["finetuned_loss"]),
        model_dir=folder,
        seconds=float(record["seconds"]),
        node=str(record["node"]),
        steps=int(record["steps"]),
        train_losses=tuple(float(x) for x in record.get("train_losses", ())),
        reused=reused,
    )
