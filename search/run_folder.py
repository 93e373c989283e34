"""A search run is a folder: its manifest, study journal, outputs and extracted winner.

The manifest records the search's settings (so that `--resume` can refuse other ones),
its status and the seconds of each phase, rewritten atomically after every phase.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from nas.core.atomic import atomic_write_json
from nas.core.errors import NasError

from .settings import SearchConfig

FORMAT = "nas.search-run/1"
MANIFEST = "manifest.json"
JOURNAL = "study.journal"
STUDY_NAME = "nas-search"
BEST_DIR = "best"
RERANK_DIR = "rerank"


def new_run_dir(root: str | Path = "runs") -> Path:
    """A fresh, timestamped folder under `root` (runs/search-20261202-184500)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = Path(root) / f"search-{stamp}"
    n = 1
    while path.exists():
        n += 1
        path = Path(root) / f"search-{stamp}-{n}"
    return path


def latest_run_dir(root: str | Path = "runs") -> Path:
    """The newest search run under `root`; `NasError` when there is none."""
    runs = sorted(
        (p for p in Path(root).glob("search-*") if (p / MANIFEST).is_file()),
        key=lambda p: (p / MANIFEST).stat().st_mtime,
    )
    if not runs:
        raise NasError(f"--resume: no search run under {root}/; name one with --out DIR")
    return runs[-1]


class RunFolder:
    """The manifest of one search run, and where its files go."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.manifest: dict[str, Any] = {}

    @property
    def journal(self) -> Path:
        return self.path / JOURNAL

    @property
    def best(self) -> Path:
        return self.path / BEST_DIR

    @property
    def rerank(self) -> Path:
        return self.path / RERANK_DIR

    @property
    def started(self) -> bool:
        return bool(self.manifest)

    def check(self, config: SearchConfig, resume: bool) -> None:
        """`NasError` unless `config` may run here: a new search in a folder without one,
        or (`resume`) the search the folder holds, with its settings. Writes nothing."""
        file = self.path / MANIFEST
        if not file.is_file():
            if resume:
                raise NasError(f"{self.path}: no search to resume there; drop --resume")
            return
        if not resume:
            raise NasError(
                f"{self.path}: already holds a search; pass --resume to continue it, "
                "or choose another --out"
            )
        saved = SearchConfig.from_dict(self._read()["config"])
        diffs = saved.differences(config)
        if diffs:
            raise NasError(
                f"{self.path}: a resumed search keeps its settings; this run has "
                + ", ".join(diffs)
            )

    def _read(self) -> dict[str, Any]:
        file = self.path / MANIFEST
        try:
            manifest = json.loads(file.read_text())
            SearchConfig.from_dict(manifest["config"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise NasError(f"{file}: unreadable search manifest ({exc!r})") from None
        return manifest

    def start(self, config: SearchConfig, resume: bool, command: str, supernet_digest: str) -> None:
        """Claim the folder for `config` (new), or take it over again (`resume`, after
        `check`). A resumed search must search the same supernet's weights."""
        self.check(config, resume)
        if resume:
            self.manifest = self._read()
            if self.manifest.get("supernet_digest") not in (None, supernet_digest):
                raise NasError(
                    f"{self.path}: a resumed search keeps its supernet; this one holds other "
                    "weights than the search started with"
                )
            self.manifest["config"] = config.to_dict()  # e.g. more --trials
            self.manifest["resumes"] = self.manifest.get("resumes", 0) + 1
        else:
            self.path.mkdir(parents=True, exist_ok=True)
            self.manifest = {
                "format": FORMAT,
                "command": command,
                "config": config.to_dict(),
                "status": "running",
                "phases_s": {},
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
        self.manifest["supernet_digest"] = supernet_digest
        self.save()

    def record(self, **fields: Any) -> None:
        self.manifest.update(fields)
        self.save()

    def phase(self, name: str, seconds: float) -> None:
        phases = self.manifest.setdefault("phases_s", {})
        phases[name] = round(phases.get(name, 0.0) + seconds, 2)
        self.save()

    def save(self) -> None:
        self.manifest["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        atomic_write_json(self.path / MANIFEST, self.manifest)
