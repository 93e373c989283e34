"""What `nas eval` reports for a saved model, or for every member of a family.

For each model: validation loss (nats/token, the mean over fixed, evenly spaced windows of
a corpus's validation split, scored as the search scores archs), perplexity (exp of the
loss), bits per byte (byte-level corpora only), parameters, FLOPs of one forward pass at
batch 1 x the sequence length, and a short latency measurement on this device (batch 1,
by the project's one measurement protocol, with fewer runs and no pauses for a busy
machine: seconds per model, not minutes).

A family is evaluated one member at a time: each member is built, scored and dropped
before the next one is loaded, so memory holds one member at most.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from nas.core.errors import CheckpointError, DataError, WorkloadError
from nas.supernet import StaticModel, load_model
from nas.supernet.corpus import Corpus, load_corpus
from nas.supernet.family import FAMILY_FILE, is_family, load_family
from nas.supernet.storage import CONFIG_FILE, WEIGHTS_FILE

from .evaluator import validation_batches
from .finetune import validation_loss
from .fingerprint import Workload
from .flops import count_flops
from .measure import MeasureConfig, Measurement, Measurer, torch_threads

DEFAULT_BATCHES = 8  # validation batches scored per model
DEFAULT_BATCH_SIZE = 8  # windows per validation batch
PROGRESS_MIN_BATCHES = 8  # a per-model bar over batches from this many batches on
# The short measurement: the protocol's warm-up and median, fewer samples, one retry for
# noise and no pauses for a busy machine (a disturbed result is flagged `contended`).
EVAL_RUNS = {"cpu": 20, "cuda": 50}


def eval_measure_config(device: str) -> MeasureConfig:
    """The short latency measurement `nas eval` makes of each model (a few seconds)."""
    return MeasureConfig(
        runs=EVAL_RUNS[device], warmup_iters=5, warmup_s=0.25, max_attempts=2, max_waits=0
    )


# ------------------------------------------------------------------ what to evaluate
@dataclass(frozen=True)
class EvalTarget:
    """A model folder (one member) or a family folder (several), loaded one at a time."""

    path: Path  # the folder the user named
    kind: str  # "model" or "family"
    names: list[str]  # member names; a lone model's is its folder name
    load: Callable[[str], StaticModel]  # name -> the member's model, on the CPU, eval mode
    info: Callable[[str], dict[str, Any]]  # name -> what the folder records about it


def open_target(path: str | Path) -> EvalTarget:
    """The model or family saved at `path`.

    Raises `CheckpointError` (one line naming what was expected) when `path` is neither a
    model folder (config.json + model.safetensors) nor a family folder; loading a member
    raises it for unreadable or inconsistent files.
    """
    path = Path(path).expanduser()
    expected = (
        f"expected a model folder ({CONFIG_FILE} + {WEIGHTS_FILE}, as `nas extract` or "
        f"`nas.save` writes) or a family folder ({FAMILY_FILE}, as `nas extract --budgets` writes)"
    )
    if not path.is_dir():
        what = "not a folder" if path.exists() else "no such folder"
        raise CheckpointError(f"{path}: {what}; {expected}")
    if is_family(path):
        family = load_family(path)
        return EvalTarget(
            path,
            "family",
            list(family.names),
            lambda name: family.model(name, device="cpu").eval(),
            lambda name: dict(family.info(name)),
        )
    if not (path / CONFIG_FILE).is_file():
        raise CheckpointError(f"{path}: not a model folder; {expected}")
    return EvalTarget(
        path,
        "model",
        [path.resolve().name],
        lambda _name: load_model(path, device="cpu"),
        lambda _name: {},
    )


def check_seq_len(model: StaticModel, seq_len: int, name: str) -> None:
    """`WorkloadError` unless 1 <= `seq_len` <= the model's max_seq_len."""
    limit = model.consts.max_seq_len
    if seq_len < 1 or seq_len > limit:
        raise WorkloadError(
            f"--seq-len {seq_len} is outside 1..{limit}, the max_seq_len of model '{name}'; "
            f"pass --seq-len {limit} or less"
        )


def check_vocab(model: StaticModel, corpus: Corpus, name: str) -> None:
    """`DataError` when the corpus holds token ids the model has no embedding for."""
    if corpus.vocab_size > model.consts.vocab_size:
        raise DataError(
            f"{corpus.info.get('source')}: token ids reach {corpus.vocab_size - 1}, but model "
            f"'{name}' has a vocabulary of {model.consts.vocab_size}; pass a corpus of its "
            "tokenization with --data"
        )


# ------------------------------------------------------------------ validation data
@dataclass(frozen=True)
class ValidationSet:
    """Fixed validation windows of one corpus, the same for every model scored on them."""

    inputs: np.ndarray  # (n_batches, B, T) int64 tokens
    targets: np.ndarray  # (n_batches, B, T) int64 next-token targets
    source: str  # the corpus, as its info names it
    kind: str  # "text" (byte-level) or "tokens" (a token array)
    split_tokens: int  # tokens in the whole validation split
    bytes_per_token: float | None  # 1.0 for byte-level text; None when unknown

    @property
    def tokens(self) -> int:
        """Tokens scored (targets), n_batches x B x T."""
        return int(self.targets.size)

    def to_dict(self) -> dict[str, Any]:
        n, batch, seq_len = self.targets.shape
        return {
            "source": self.source,
            "kind": self.kind,
            "split": "val",
            "split_tokens": self.split_tokens,
            "batches": int(n),
            "batch_size": int(batch),
            "seq_len": int(seq_len),
            "windows": int(n * batch),
            "tokens": self.tokens,
            "bytes_per_token": self.bytes_per_token,
        }


def validation_set(corpus: Corpus, seq_len: int, batch_size: int, n_batches: int) -> ValidationSet:
    """Up to `n_batches` x `batch_size` evenly spaced windows of `seq_len` tokens from the
    corpus's validation split (full batches only, as the search takes them).

    Raises `DataError` when the split is shorter than one window.
    """
    if batch_size < 1 or n_batches < 1:
        raise WorkloadError(
            f"--batches and --batch-size must be positive, got {n_batches} and {batch_size}"
        )
    inputs, targets = validation_batches(corpus.val, batch_size, seq_len, n_batches)
    kind = str(corpus.info.get("kind", "text"))
    return ValidationSet(
        inputs=inputs,
        targets=targets,
        source=str(corpus.info.get("source")),
        kind=kind,
        split_tokens=len(corpus.val),
        # Byte-level text: one token per byte. A token array records no bytes per token.
        bytes_per_token=1.0 if kind == "text" else None,
    )


# ------------------------------------------------------------------ metrics
def perplexity(loss: float) -> float:
    """exp(loss) for a loss in nats/token; inf where it overflows."""
    try:
        return math.exp(loss)
    except OverflowError:
        return math.inf


def bits_per_byte(loss: float, bytes_per_token: float | None) -> float | None:
    """Bits per byte of a loss in nats/token: loss / ln 2 / bytes per token.

    None when the bytes per token are unknown (a pre-tokenized corpus).
    """
    if bytes_per_token is None:
        return None
    return loss / math.log(2) / bytes_per_token


@dataclass(frozen=True)
class ModelEval:
    """One model's row of `nas eval`."""

    name: str  # member name (a lone model: its folder name)
    arch_id: str  # the arch's id
    params: int  # parameters of the model alone
    flops: int  # multiply-adds of one forward pass at batch 1 x seq_len
    val_loss: float  # nats/token
    perplexity: float  # exp(val_loss)
    bpb: float | None  # bits per byte; None for a token corpus
    latency: Measurement | None  # batch 1 x seq_len on this device; None with --no-latency
    recorded: dict[str, Any] = field(default_factory=dict)  # what the family file says

    def to_dict(self) -> dict[str, Any]:
        out = {
            "name": self.name,
            "arch_id": self.arch_id,
            "params": self.params,
            "flops": self.flops,
            "val_loss": self.val_loss,
            "perplexity": self.perplexity,
            "bpb": self.bpb,
            "latency_ms": self.latency.median_ms if self.latency else None,
            "latency": self.latency.to_dict() if self.latency else None,
        }
        if self.recorded:
            out["recorded"] = self.recorded
        return out


def evaluate_model(
    name: str,
    model: StaticModel,
    data: ValidationSet,
    workload: Workload,
    measurer: Measurer | None = None,
    progress: bool = False,
) -> ModelEval:
    """Score `model` (on the CPU as loaded) on `data`, on `workload`'s device and threads.

    `measurer` (for `workload` with batch 1) times it; None skips the latency.
    """
    seq_len = int(data.inputs.shape[-1])
    check_seq_len(model, seq_len, name)
    params = sum(p.numel() for p in model.parameters())
    with torch_threads(workload.threads):
        with torch.no_grad():  # fvcore traces the model; counted on the CPU
            flops = count_flops(model, torch.zeros(1, seq_len, dtype=torch.long))
        loss = validation_loss(
            model.to(workload.device),
            data.inputs,
            data.targets,
            progress=progress and len(data.inputs) >= PROGRESS_MIN_BATCHES,
            desc=f"scoring {name}",
        )
    latency = measurer.measure_model(model) if measurer is not None else None
    return ModelEval(
        name=name,
        arch_id=model.arch.id,
        params=int(params),
        flops=int(flops),
        val_loss=loss,
        perplexity=perplexity(loss),
        bpb=bits_per_byte(loss, data.bytes_per_token),
        latency=latency,
    )


@dataclass(frozen=True)
class EvalReport:
    """Everything `nas eval` prints: the data, the workload and one row per model."""

    path: Path  # the folder evaluated
    kind: str  # "model" or "family"
    data: ValidationSet
    workload: Workload  # device and threads; batch 1 x seq_len for the latency
    measure: MeasureConfig | None  # the latency protocol used; None with latency off
    models: list[ModelEval]

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "kind": self.kind,
            "data": self.data.to_dict(),
            "workload": self.workload.to_dict(),
            "latency_protocol": self.measure.to_dict() if self.measure else None,
            "models": [m.to_dict() for m in self.models],
        }


def evaluate_folder(
    path: str | Path,
    data: str | Path | None = None,
    *,
    tokens_dtype: str | None = None,
    seq_len: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    n_batches: int = DEFAULT_BATCHES,
    device: str = "cpu",
    threads: int = 0,
    latency: bool = True,
    progress: bool = False,
) -> EvalReport:
    """Evaluate the model, or every member of the family, saved at `path`.

    `data` is a corpus path as `load_corpus` takes it (None: the default corpus);
    `seq_len` defaults to the (first) model's max_seq_len. Bad input raises a `NasError`
    before any scoring starts: `CheckpointError` for a folder that is not a model or family,
    `DataError` for a missing or unusable corpus, `WorkloadError` for a sequence length
    beyond the model's max, `DeviceError` for a device this machine lacks.
    """
    target = open_target(path)
    first: StaticModel | None = target.load(target.names[0])
    seq_len = first.consts.max_seq_len if seq_len is None else seq_len
    check_seq_len(first, seq_len, target.names[0])
    workload = Workload(device=device, batch=1, seq_len=seq_len, threads=threads)
    workload.check_available()
    corpus = load_corpus(data, dtype=tokens_dtype, progress=progress)
    check_vocab(first, corpus, target.names[0])
    valset = validation_set(corpus, seq_len, batch_size, n_batches)
    config = eval_measure_config(device) if latency else None
    measurer = Measurer(workload, config) if latency else None
    rows = []
    with tqdm(
        total=len(target.names),
        desc="members",
        unit="model",
        file=sys.stderr,
        disable=not progress or len(target.names) < 2,
        leave=False,
        dynamic_ncols=True,
    ) as bar:
        for name in target.names:
            model = first if first is not None else target.load(name)
            first = None  # dropped with `model` below: one member in memory at a time
            check_vocab(model, corpus, name)
            row = evaluate_model(name, model, valset, workload, measurer, progress)
            del model
            recorded = {k: v for k, v in target.info(name).items() if k != "arch"}
            rows.append(replace(row, recorded=recorded))
            bar.update(1)
    return EvalReport(target.path, target.kind, valset, workload, config, rows)
