"""Re-rank candidates as Ray tasks on nodes that share nothing with the driver's disk.

The source checkpoints' bytes and the training tokens travel through the object store
(put once, shared by every task); each task fine-tunes one candidate (finetune.py) and
returns the model's bytes, which the driver stores as it lands (rerank_results.py).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from nas.core.errors import NasError
from nas.search_space import Arch
from nas.supernet.corpus import Corpus

from .finetune import RerankConfig, finetune
from .rerank_results import Job


def finetune_shipped(
    source_bytes: bytes,
    arch_json: str,
    shipped: dict[str, Any],
    config: dict[str, Any],
    device: str,
    threads: int,
) -> dict[str, Any]:
    """`finetune` on a node that has none of the driver's files: the checkpoint arrives
    as bytes, the corpus as token arrays (`shipped`, through Ray's object store)."""
    with tempfile.TemporaryDirectory(prefix=".rerank-source-") as tmp:
        source = Path(tmp) / "source.safetensors"
        source.write_bytes(source_bytes)
        train_tokens, val_tokens = shipped["train"], shipped["val"]
        empty = np.zeros(0, dtype=train_tokens.dtype)
        corpus = Corpus(train_tokens, val_tokens, empty, shipped["vocab_size"], shipped["info"])
        data = {"corpus": corpus, "inputs": shipped["inputs"], "targets": shipped["targets"]}
        arch = Arch.from_json(arch_json)
        return finetune(source, arch, data, RerankConfig(**config), device, threads)


def run_on_ray(
    jobs: list[Job],
    corpus: Corpus,
    config: RerankConfig,
    inputs: np.ndarray,
    targets: np.ndarray,
    workers: int,
    threads: int,
    device: str,
    land: Callable[[Job, dict[str, Any]], None],
) -> None:
    """Run `jobs` as Ray tasks, at most `workers` at once, landing each as it finishes."""
    import ray

    if not ray.is_initialized():
        raise NasError(
            f"re-rank with {workers} workers needs a connected Ray cluster; connect first, "
            "or pass workers=0 to fine-tune in this process"
        )
    # Put once, shared by every task: the training split, as much of the validation split
    # as the trainer's own end-of-run check reads (one batch), the scoring batches, and
    # each source checkpoint's bytes.
    val = np.asarray(corpus.val[: config.batch_size * (config.seq_len + 1) + 1])
    info = {k: corpus.info.get(k) for k in ("source", "kind", "key", "dtype")}
    info["tokens"] = {"train": len(corpus.train), "val": len(val), "test": 0}
    shipped = ray.put(
        {
            "train": np.asarray(corpus.train),
            "val": val,
            "vocab_size": corpus.vocab_size,
            "info": info,
            "inputs": inputs,
            "targets": targets,
        }
    )
    sources = {path: ray.put(path.read_bytes()) for path in dict.fromkeys(j.source for j in jobs)}
    remote = ray.remote(finetune_shipped).options(
        num_cpus=threads, num_gpus=1 if device.startswith("cuda") else 0, max_retries=1
    )
    pending = list(jobs)
    running: dict[Any, Job] = {}
    try:
        while pending or running:  # each pass lands one task: len(jobs) passes at most
            while pending and len(running) < workers:
                job = pending.pop(0)
                args = (job.cand.arch.to_json(), shipped, config.to_dict(), device, threads)
                running[remote.remote(sources[job.source], *args)] = job
            [ready], _ = ray.wait(list(running), num_returns=1)
            land(running.pop(ready), ray.get(ready))
    finally:
        for ref in running:  # a failure: the others' work would not be stored
            ray.cancel(ref)
