"""What a training run writes beside its checkpoint: the manifest and the metrics log.

A run folder holds `manifest.json` (what the run is: space, data, settings, device,
reference archs, status and step), `metrics.jsonl` (one JSON record per training step and
per validation) and `checkpoint.safetensors` (`checkpoint.py`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from nas.core.atomic import atomic_write_text
from nas.search_space import Arch, SearchSpace

from .checkpoint import checkpoint_path
from .corpus import Corpus
from .train_config import TrainConfig

RUN_FORMAT = "nas.train-run/1"
MANIFEST_FILE = "manifest.json"
METRICS_FILE = "metrics.jsonl"


class MetricsLog:
    """Append-only JSONL of training and validation records, one JSON object per line."""

    def __init__(self, path: Path):
        self.path = path

    def append(self, record: dict[str, Any]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
            f.flush()

    def read(self) -> list[dict[str, Any]]:
        """Every complete record; a line torn by a kill is skipped."""
        if not self.path.is_file():
            return []
        records = []
        for line in self.path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return records

    def truncate_after(self, step: int) -> None:
        """Drop records past `step` (written after the checkpoint a resumed run starts from)."""
        kept = [r for r in self.read() if r.get("step", 0) <= step]
        atomic_write_text(self.path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))


def read_manifest(run_dir: str | Path) -> dict[str, Any] | None:
    """The run folder's manifest, or None when it has none (or an unreadable one)."""
    try:
        return json.loads((Path(run_dir) / MANIFEST_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def data_ref(corpus: Corpus) -> dict[str, Any]:
    """Which data a run trains on, as its checkpoint and manifest record it."""
    return {k: corpus.info.get(k) for k in ("source", "kind", "key", "dtype")}


def run_manifest(
    space: SearchSpace,
    corpus: Corpus,
    config: TrainConfig,
    device: torch.device,
    refs: dict[str, Arch],
    step: int,
    status: str,
) -> dict[str, Any]:
    """The manifest of a run at `step` with `status` ("running", "stopped", "complete")."""
    return {
        "format": RUN_FORMAT,
        "command": "train",
        "status": status,
        "step": step,
        "checkpoint": checkpoint_path(".").name,
        "metrics": METRICS_FILE,
        "space": space.to_dict(),
        "fingerprint": space.fingerprint,
        "config": config.to_dict(),
        "data": {**data_ref(corpus), "tokens": corpus.info.get("tokens")},
        "device": str(device),
        "torch": torch.__version__,
        "reference_archs": {name: arch.to_dict() for name, arch in refs.items()},
        "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
