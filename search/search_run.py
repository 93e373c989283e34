"""Reading a finished search run: its manifest, its Pareto front and its winner.

`nas extract --run RUN` builds on what `nas search` left in RUN: the front
(pareto.json, ranked by predicted latency, fastest first), the winner (best/, fine-tuned,
and the manifest's "winner"), each re-ranked candidate's fine-tuned model
(rerank/<arch id>/), the supernet it searched and the profile its latencies came from.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nas.core.errors import ArchError, BudgetError, NasError
from nas.search_space import Arch, SearchSpace

from .budget import format_ms
from .report import PARETO_JSON
from .rerank import RESULT_FILE
from .run_folder import BEST_DIR, FORMAT, MANIFEST, RERANK_DIR
from .settings import SearchConfig


@dataclass(frozen=True)
class FrontEntry:
    """One member of a search's front, as pareto.json records it."""

    rank: int  # 1 = the fastest member
    arch: Arch
    loss: float  # inherited validation loss (nats/token) on the search's batches
    finetuned_loss: float | None  # after the re-rank's fine-tune, where re-ranked
    predicted_ms: float  # predicted latency on the search's device (drift-scaled)
    measured_ms: float | None  # measured by the search's verification, where measured
    params: int
    flops: int


class SearchRun:
    """A finished `nas search` run folder, read and checked."""

    def __init__(self, path: str | Path):
        self.path = Path(path).expanduser()
        manifest_file = self.path / MANIFEST
        if not manifest_file.is_file():
            raise NasError(
                f"{self.path}: not a search run (no {MANIFEST}); pass the folder `nas search` "
                "wrote (its --out)"
            )
        self.manifest = _read_json(manifest_file)
        if not isinstance(self.manifest, dict) or self.manifest.get("format") != FORMAT:
            raise NasError(f"{manifest_file}: not a nas search manifest (expected {FORMAT})")
        if self.manifest.get("status") != "complete":
            raise NasError(
                f"{self.path}: the search did not finish (status "
                f"{self.manifest.get('status', 'unknown')}); rerun it with `nas search --resume "
                f"--out {self.path}`"
            )
        try:
            self.space = SearchSpace.from_dict(self.manifest["space"], source=str(manifest_file))
            self.config = SearchConfig(**self.manifest["config"])
        except (KeyError, TypeError) as exc:
            raise NasError(f"{manifest_file}: incomplete manifest ({exc})") from None
        self.front = self._read_front()

    @property
    def supernet(self) -> str:
        """The supernet the search scored archs with (as the manifest recorded it)."""
        return str(self.manifest.get("supernet", ""))

    @property
    def supernet_digest(self) -> str:
        return str(self.manifest.get("supernet_digest", ""))

    @property
    def profile(self) -> str:
        return str(self.manifest.get("profile", ""))

    @property
    def drift_scale(self) -> float:
        """The factor the search scaled its predictions by for host drift (1: none)."""
        return float((self.manifest.get("drift") or {}).get("scale", 1.0))

    @property
    def seq_len(self) -> int:
        return self.config.seq_len or self.space.max_seq_len

    @property
    def command(self) -> str:
        return str(self.manifest.get("command", "nas search"))

    def winner(self) -> dict[str, Any]:
        """The manifest's winner (arch, losses, latencies); `NasError` when it has none."""
        winner = self.manifest.get("winner")
        if not winner:
            raise NasError(
                f"{self.path}: the search picked no winner (nothing verified within budget); "
                "pass --rank N to extract a member of its front"
            )
        return winner

    def winner_dir(self) -> Path | None:
        """best/: the winner as the search saved it (fine-tuned unless --no-finetune)."""
        best = self.path / BEST_DIR
        return best if (best / "config.json").is_file() else None

    def entry(self, rank: int) -> FrontEntry:
        """The front's member of rank `rank` (1 = fastest)."""
        if not 1 <= rank <= len(self.front):
            raise NasError(
                f"--rank {rank}: the front of {self.path} has {len(self.front)} members; "
                f"pass 1 to {len(self.front)}"
            )
        return self.front[rank - 1]

    def entry_for(self, arch: Arch) -> FrontEntry | None:
        return next((e for e in self.front if e.arch == arch), None)

    def finetuned_dir(self, arch: Arch) -> Path | None:
        """The re-rank's fine-tuned model of `arch`, if the search re-ranked it."""
        folder = self.path / RERANK_DIR / arch.id
        done = (folder / RESULT_FILE).is_file() and (folder / "config.json").is_file()
        return folder if done else None

    def pick(self, budget_ms: float) -> FrontEntry:
        """The front member with the lowest inherited loss whose predicted latency (the
        search's own feasibility test, drift-scaled) is within `budget_ms`. The search's
        measurements cover only its few verified candidates, and on a busy host they
        scatter; predictions rank the whole front on one scale."""
        fitting = [e for e in self.front if e.predicted_ms <= budget_ms]
        if not fitting:
            fastest = min(self.front, key=lambda e: e.predicted_ms)
            raise BudgetError(
                f"no member of the front of {self.path} fits {format_ms(budget_ms)}: the "
                f"fastest ({fastest.arch.id}) is predicted at {format_ms(fastest.predicted_ms)}; "
                "give a larger budget"
            )
        return min(fitting, key=lambda e: e.loss)

    def _read_front(self) -> list[FrontEntry]:
        file = self.path / PARETO_JSON
        if not file.is_file():
            raise NasError(f"{self.path}: no {PARETO_JSON}; the search did not write its front")
        rows = _read_json(file)
        if not isinstance(rows, list) or not rows:
            raise NasError(f"{file}: an empty front; rerun the search with more --trials")
        entries = []
        for row in rows:
            try:
                arch = self.space.validate(Arch.from_dict(row["arch"], source=str(file)))
                entries.append(
                    FrontEntry(
                        rank=int(row["rank"]),
                        arch=arch,
                        loss=float(row["loss"]),
                        finetuned_loss=_float_or_none(row.get("finetuned_loss")),
                        predicted_ms=float(row["predicted_ms"]),
                        measured_ms=_float_or_none(row.get("measured_ms")),
                        params=int(row["params"]),
                        flops=int(row["flops"]),
                    )
                )
            except (KeyError, TypeError, ValueError, ArchError) as exc:
                raise NasError(f"{file}: a malformed front row ({exc})") from None
        return sorted(entries, key=lambda e: e.rank)


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)


def _read_json(file: Path) -> Any:
    try:
        return json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise NasError(f"{file}: not valid JSON (truncated or corrupted)") from None
