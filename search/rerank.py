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
"""

from __future__ import annotations

import json
import platform
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nas.core.atomic import atomic_write_bytes, atomic_write_json
from nas.core.errors import ArchError, NasError
from nas.search.accuracy import kendall_tau
from nas.search_space import Arch
from nas.supernet.checkpoint import checkpoint_file, load_supernet, read_checkpoint
from nas.supernet.corpus import Corpus
from nas.supernet.device import resolve_device
from nas.supernet.sandwich import cross_entropy
from nas.supernet.storage import CONFIG_FILE, WEIGHTS_FILE, save_model
from nas.supernet.training import METRICS_FILE, MetricsLog, TrainConfig, train

RESULT_FILE = "result.json"
RESULT_FORMAT = "nas.rerank-result/1"


@dataclass(frozen=True)
class RerankConfig:
    """How each candidate is fine-tuned. The defaults are the recipe that
    bench/bench_weight_sharing.py --finetune-steps measured (README: 50-100 steps of it
    raised tau among random archs from 0.52 to 0.58-0.64): a constant lr of 1e-3, about a
    third of the trainer's peak 3e-3 (the weights are trained already, and the fresh
    AdamW moments make its first steps large), no weight decay, the arch's own exit."""

    steps: int = 100  # optimizer steps per candidate
    batch_size: int = 8  # sequences per step, B
    seq_len: int = 64  # tokens per sequence, T (<= the space's max_seq_len)
    lr: float = 1e-3  # learning rate (peak, if warmup_steps or min_lr_ratio < 1)
    min_lr_ratio: float = 1.0  # cosine floor as a share of lr; 1: constant
    warmup_steps: int = 0  # linear warmup steps
    weight_decay: float = 0.0  # AdamW decay; 0 also leaves every unused weight as it was
    # Weight of each earlier exit's loss (the arch's own: 1). The candidate is scored, and
    # shipped, at its own exit, so by default no step is spent on the others.
    early_exit_weight: float = 0.0

    def __post_init__(self) -> None:
        problems = []
        for name in ("steps", "batch_size", "seq_len"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.warmup_steps < 0:
            problems.append(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if not self.lr > 0:
            problems.append(f"lr must be > 0, got {self.lr}")
        for name in ("min_lr_ratio", "weight_decay", "early_exit_weight"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                problems.append(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if problems:
            raise NasError("re-rank config: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def train_config(self, arch: Arch, source: Path, ffn_per_mixer: bool) -> TrainConfig:
        """The trainer's config that fine-tunes `arch` alone from checkpoint `source`."""
        return TrainConfig(
            steps=self.steps,
            batch_size=self.batch_size,
            seq_len=self.seq_len,
            lr=self.lr,
            min_lr_ratio=self.min_lr_ratio,
            warmup_steps=self.warmup_steps,
            weight_decay=self.weight_decay,
            early_exit_weight=self.early_exit_weight,
            family=(arch.to_json(),),
            sandwich=False,
            init_from=str(source),
            ffn_per_mixer=ffn_per_mixer,  # the source's weight layout
            reference_archs=0,
            eval_batches=1,  # the trainer's own validation: the score is computed apart
            eval_every=self.steps,
            checkpoint_every=self.steps,
        )


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
    inputs, targets = _check_batches(val_inputs, val_targets)
    digests = _source_digests(candidates)
    results: list[RerankResult | None] = [None] * len(candidates)
    jobs = []
    for i, cand in enumerate(candidates):
        source = _resolved(cand.source)
        job = _Job(i, cand, source, _result_key(cand, config, digests[source]))
        results[i] = _read_result(out_dir / cand.arch.id, job.key)
        if results[i] is None:
            jobs.append(job)
        elif progress is not None:
            progress(results[i])

    def land(job: _Job, outcome: dict[str, Any]) -> None:
        results[job.index] = _store(out_dir / job.cand.arch.id, job, outcome)
        if progress is not None:
            progress(results[job.index])

    if jobs and workers == 0:
        for job in jobs:
            data = {"corpus": corpus, "inputs": inputs, "targets": targets}
            land(job, finetune(job.source, job.cand.arch, data, config, device, threads, out_dir))
    elif jobs:
        _run_on_ray(jobs, corpus, config, inputs, targets, workers, threads, device, land)
    return [r for r in results if r is not None]


def rerank_tau(results: Iterable[RerankResult]) -> float:
    """Kendall tau between the inherited and the fine-tuned losses of `results`: how far
    fine-tuning kept the search's order of its shortlist (1: unchanged; nan under 2)."""
    results = list(results)
    return kendall_tau([r.inherited_loss for r in results], [r.finetuned_loss for r in results])


@torch.inference_mode()
def validation_loss(model: torch.nn.Module, inputs: np.ndarray, targets: np.ndarray) -> float:
    """Mean next-token cross-entropy (nats/token) of `model` ((B, T) tokens -> (B, T, V)
    logits) over fixed batches `inputs`, `targets` of shape (n_batches, B, T), in fp32 on
    the model's device, computed as the search's Evaluator computes inherited losses."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total = 0.0
    try:
        for x, y in zip(inputs, targets, strict=True):  # (B, T) each
            x, y = torch.as_tensor(x).to(device), torch.as_tensor(y).to(device)
            total += cross_entropy(model(x), y).item() * y.numel()
    finally:
        model.train(was_training)
    return total / targets.size


def finetune(
    source: Path,
    arch: Arch,
    data: dict[str, Any],
    config: RerankConfig,
    device: str = "cpu",
    threads: int = 1,
    scratch: Path | None = None,
) -> dict[str, Any]:
    """Fine-tune `arch` from checkpoint file `source` with the trainer, in a temporary run
    folder (under `scratch`, else the system's temp folder), and score it.

    `data` holds "corpus" (a `Corpus`), "inputs" and "targets" ((n_batches, B, T) int64).
    Returns {"weights": model.safetensors bytes, "config": the model's config.json,
    "finetuned_loss", "train_losses", "seconds", "node"}: what the driver stores.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    started = time.perf_counter()
    try:
        if scratch is not None:
            scratch.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".finetune-", dir=scratch) as tmp:
            ckpt = read_checkpoint(source)
            space, run_config = ckpt.space, config.train_config(arch, source, ckpt.ffn_per_mixer)
            del ckpt  # train() reads it again; its tensors need not be held twice
            run = train(
                space,
                data["corpus"],
                run_config,
                Path(tmp) / "run",
                device=resolve_device(device),
                progress=False,
            )
            records = MetricsLog(run.run_dir / METRICS_FILE).read()
            losses = [r["loss_family"][0] for r in records if r.get("kind") == "train"]
            model = load_supernet(run.checkpoint).extract(arch).eval()  # on the CPU, fp32
            loss = validation_loss(model, data["inputs"], data["targets"])
            save_model(model, Path(tmp) / "model")
            weights = (Path(tmp) / "model" / WEIGHTS_FILE).read_bytes()
            model_config = json.loads((Path(tmp) / "model" / CONFIG_FILE).read_text())
    finally:
        torch.set_num_threads(before)
    return {
        "weights": weights,
        "config": model_config,
        "finetuned_loss": loss,
        "train_losses": losses,
        "seconds": time.perf_counter() - started,
        "node": platform.node(),
    }


# --------------------------------------------------------------------- Ray
def _finetune_shipped(
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


def _run_on_ray(
    jobs: list[_Job],
    corpus: Corpus,
    config: RerankConfig,
    inputs: np.ndarray,
    targets: np.ndarray,
    workers: int,
    threads: int,
    device: str,
    land: Callable[[_Job, dict[str, Any]], None],
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
    remote = ray.remote(_finetune_shipped).options(
        num_cpus=threads, num_gpus=1 if device.startswith("cuda") else 0, max_retries=1
    )
    pending = list(jobs)
    running: dict[Any, _Job] = {}
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


# --------------------------------------------------------------------- stored results
def _check_batches(inputs: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    inputs, targets = np.asarray(inputs, dtype=np.int64), np.asarray(targets, dtype=np.int64)
    if inputs.shape != targets.shape or inputs.ndim != 3 or inputs.size == 0:
        raise NasError(
            f"re-rank: validation inputs and targets must be one (n_batches, B, T) shape, got "
            f"{inputs.shape} and {targets.shape}"
        )
    return inputs, targets


def _resolved(source: str | Path) -> Path:
    return checkpoint_file(Path(source).expanduser().resolve())


@dataclass(frozen=True)
class _Job:
    """A candidate to fine-tune."""

    index: int  # its position among the candidates
    cand: Candidate
    source: Path  # its checkpoint file, resolved
    key: dict[str, Any]  # the fields of its result.json that say which re-rank it is


def _source_digests(candidates: Sequence[Candidate]) -> dict[Path, str]:
    """{resolved checkpoint file: digest} of every source, each read and verified once.
    Raises `ArchError` for a candidate outside its source's space."""
    digests: dict[Path, str] = {}
    spaces = {}
    for cand in candidates:
        path = _resolved(cand.source)
        if path not in digests:
            ckpt = read_checkpoint(path)
            digests[path], spaces[path] = ckpt.digest, ckpt.space
        try:
            spaces[path].validate(cand.arch)
        except ArchError as exc:
            raise ArchError(f"re-rank candidate {cand.arch.id}: {exc}") from None
    return digests


def _result_key(cand: Candidate, config: RerankConfig, digest: str) -> dict[str, Any]:
    """What makes a stored result this call's: the arch, the settings and the weights it
    starts from (by digest, so a moved source still matches and a retrained one does not)."""
    return {
        "format": RESULT_FORMAT,
        "arch": cand.arch.to_dict(),
        "config": config.to_dict(),
        "source_digest": digest,
    }


def _store(folder: Path, job: _Job, outcome: dict[str, Any]) -> RerankResult:
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


def _read_result(folder: Path, key: dict[str, Any]) -> RerankResult | None:
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


__all__ = [
    "Candidate",
    "RerankConfig",
    "RerankResult",
    "finetune",
    "rerank",
    "rerank_tau",
    "validation_loss",
]
