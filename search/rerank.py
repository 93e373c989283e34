"""Re-ranking a search's shortlist: fine-tune each candidate from its inherited weights.

Inherited losses rank mixer combinations poorly (README, "Weight sharing"); a short
fine-tune of each candidate alone ranks them better. After the search, the best K
feasible candidates are each trained for `RerankConfig.steps` steps by the supernet
trainer itself (`nas.supernet.training.train` with `init_from` the candidate's
(sub-)supernet checkpoint, `family` the candidate and `sandwich=False`: no second
training loop), then extracted and scored on the search's own fixed validation batches,
so fine-tuned and inherited losses compare.

Candidates run as Ray tasks (`workers` > 0, Ray already connected by the caller) or one
after another in this process (`workers` = 0), through the same function. A task needs
nothing from the driver's disk: the source checkpoint's bytes and the training tokens
travel through the object store (put once, shared by every task), and the task returns
the fine-tuned model's bytes. The driver stores each result as it lands, under
OUT/<arch id>/: the model (`nas.save` format) and result.json, written atomically, last;
a rerun skips every candidate whose result.json is complete and matches.

The fine-tune is finetune.py, the Ray tasks rerank_ray.py, the stored results
rerank_results.py; this module runs a re-rank and re-exports their public names.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nas.core.errors import NasError
from nas.search.accuracy import kendall_tau
from nas.supernet.corpus import Corpus

from .finetune import RerankConfig, finetune, validation_loss
from .rerank_ray import run_on_ray
from .rerank_results import (
    RESULT_FILE,
    RESULT_FORMAT,
    Candidate,
    Job,
    RerankResult,
    check_batches,
    read_result,
    resolved,
    result_key,
    source_digests,
    store,
)


def rerank(
    candidates: Sequence[Candidate],
    corpus: Corpus,
    config: RerankConfig,
    val_inputs: np.ndarray,
    val_targets: np.ndarray,
    out_dir: str | Path,
    *,
    workers: int = 0,
    threads: int = 1,
    device: str = "cpu",
    progress: Callable[[RerankResult], None] | None = None,
) -> list[RerankResult]:
    """Fine-tune each candidate and score it; results in the candidates' order.

    Each candidate trains `config.steps` steps from `candidate.source` on `corpus`'s
    training split (continuing the source's batch stream, so every candidate of one
    source sees the same batches), then its extracted model is scored on `val_inputs`
    and `val_targets` ((n_batches, B, T) int64, the search's fixed batches) on the CPU
    in fp32, as the search's Evaluator scores inherited weights. `out_dir`/<arch id>/
    receives the model (model.safetensors + config.json) and result.json as each
    candidate lands; a candidate whose result.json there matches this call (arch,
    config, source checkpoint's digest) is not trained again but returned with
    `reused` True. `progress` is called with each result as it lands.

    `workers` > 0 runs up to that many candidates at once as Ray tasks of `threads` CPUs
    (and one GPU each when `device` is cuda) on the cluster the caller connected; 0 runs
    them one after another here. `threads` is torch's thread count per fine-tune.

    Raises `NasError` for repeated archs, `workers` > 0 without a connected Ray, or a
    bad `config`; `ArchError` for an arch not in its source's space; `CheckpointError`
    for an unreadable source; `DataError` for a corpus too small for `config.seq_len`.
    """
    out_dir = Path(out_dir)
    ids = [c.arch.id for c in candidates]
    if len(set(ids)) != len(ids):
        raise NasError("re-rank: candidate archs repeat; pass each arch once")
    if workers < 0 or threads < 1:
        raise NasError(f"re-rank: need workers >= 0 and threads >= 1, got {workers}, {threads}")
    inputs, targets = check_batches(val_inputs, val_targets)
    digests = source_digests(candidates)
    results: list[RerankResult | None] = [None] * len(candidates)
    jobs = []
    for i, cand in enumerate(candidates):
        source = resolved(cand.source)
        job = Job(i, cand, source, result_key(cand, config, digests[source]))
        results[i] = read_result(out_dir / cand.arch.id, job.key)
        if results[i] is None:
            jobs.append(job)
        elif progress is not None:
            progress(results[i])

    def land(job: Job, outcome: dict[str, Any]) -> None:
        results[job.index] = store(out_dir / job.cand.arch.id, job, outcome)
        if progress is not None:
            progress(results[job.index])

    if jobs and workers == 0:
        for job in jobs:
            data = {"corpus": corpus, "inputs": inputs, "targets": targets}
            land(job, finetune(job.source, job.cand.arch, data, config, device, threads, out_dir))
    elif jobs:
        run_on_ray(jobs, corpus, config, inputs, targets, workers, threads, device, land)
    return [r for r in results if r is not None]


def rerank_tau(results: Iterable[RerankResult]) -> float:
    """Kendall tau between the inherited and the fine-tuned losses of `results`: how far
    fine-tuning kept the search's order of its shortlist (1: unchanged; nan under 2)."""
    results = list(results)
    return kendall_tau([r.inherited_loss for r in results], [r.finetuned_loss for r in results])


__all__ = [
    "RESULT_FILE",
    "RESULT_FORMAT",
    "Candidate",
    "RerankConfig",
    "RerankResult",
    "finetune",
    "rerank",
    "rerank_tau",
    "validation_loss",
]
