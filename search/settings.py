"""`SearchConfig`: everything one `nas search` is asked to do, checked once, kept with its run."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from nas.core.errors import NasError

SAMPLERS = ("tpe", "nsga2", "random")  # Optuna samplers a search may use

# Settings a resumed search must keep: changing any of them would make the study's trials
# mean something else (another budget, other weights, another device).
IDENTITY = (
    "budget_ms",
    "device",
    "batch",
    "seq_len",
    "threads",
    "mode",
    "sampler",
    "seed",
    "val_batches",
    "val_batch_size",
)


@dataclass(frozen=True)
class SearchConfig:
    """One search. Sizes and counts are per run; latencies in ms."""

    budget_ms: float  # hard constraint on latency, ms
    supernet: str = ""  # run folder / checkpoint of `nas train`, or few-shot folder; "" = default
    space: str = ""  # space file for a supernet trained here ("" = the shipped default)
    data: str = ""  # corpus for validation (and re-rank); "" = the supernet's own
    tokens_dtype: str = ""  # dtype of a raw .bin token array
    device: str = "cpu"  # the workload a latency is for: device, batch, tokens, threads, mode
    batch: int = 1
    seq_len: int = 0  # 0 = the space's max_seq_len
    threads: int = 0  # 0 = all available cores
    mode: str = "eager"
    profile: str = ""  # a profile file to use instead of the cached one ("" = cached/built)
    quick_profile: bool = True  # build a missing profile with the quick protocol
    evaluations: int = 100  # distinct feasible archs to score with inherited weights
    sampler: str = "tpe"  # Optuna sampler (see driver.SAMPLERS)
    seed: int = 0
    val_batches: int = 2  # fixed validation batches every trial is scored on
    val_batch_size: int = 4  # sequences per validation batch
    rerank: int = 4  # K best feasible candidates fine-tuned to pick the winner (0 = none)
    rerank_steps: int = 15  # S fine-tuning steps per candidate (bench_rerank: docs/search.md)
    rerank_batch_size: int = 2  # sequences per fine-tuning step
    finetune: bool = True  # ship the winner fine-tuned (False: inherited weights)
    verify: int = 0  # candidates measured on the device (0 = those re-ranked, at least 3)
    verify_passes: int = 2  # measurements of each, interleaved; the median decides
    drift_archs: int = 3  # profile archs re-timed before the search to detect host drift
    workers: int = -2  # evaluators; 0 = in-process without Ray; -2 = the CPUs available
    address: str = ""  # Ray cluster to join ("auto" or HOST:PORT); "" = start a local one
    storage: str = ""  # Optuna storage URL; "" = a journal file in the run folder

    def __post_init__(self) -> None:
        problems = []
        if not self.budget_ms > 0:
            problems.append(f"budget must be > 0 ms, got {self.budget_ms}")
        if self.evaluations < 1:
            problems.append(f"--trials must be >= 1, got {self.evaluations}")
        if self.workers < 0 and self.workers != -2:
            problems.append(
                f"--workers must be 0 (in-process) or more, got {self.workers}; "
                "leave it out for one per CPU"
            )
        for name in ("rerank", "verify", "drift_archs"):
            if getattr(self, name) < 0:
                problems.append(
                    f"--{name.replace('_', '-')} must be >= 0, got {getattr(self, name)}"
                )
        for name in ("rerank_steps", "rerank_batch_size", "val_batches", "val_batch_size"):
            if getattr(self, name) < 1:
                problems.append(
                    f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}"
                )
        if self.verify_passes < 2:
            problems.append("--verify-passes must be >= 2: one pass cannot show the spread")
        if self.sampler not in SAMPLERS:
            problems.append(f"--sampler {self.sampler!r}: valid samplers are {', '.join(SAMPLERS)}")
        if problems:
            raise NasError("search: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SearchConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def differences(self, other: SearchConfig) -> list[str]:
        """'name saved (given other)' for each identity setting in which `other` differs."""
        return [
            f"{name} {getattr(self, name)} (given {getattr(other, name)})"
            for name in IDENTITY
            if getattr(self, name) != getattr(other, name)
        ]
