"""Fine-tuning one re-rank candidate with the supernet trainer, and scoring it.

`finetune` trains an arch alone from its (sub-)supernet checkpoint through
`nas.supernet.training.train` (no second training loop) with `RerankConfig`'s recipe,
extracts it and scores it with `validation_loss` on the search's fixed batches, as the
search's Evaluator scores inherited weights (see rerank.py).
"""

from __future__ import annotations

import json
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from nas.core.errors import NasError
from nas.search_space import Arch
from nas.supernet.checkpoint import load_supernet, read_checkpoint
from nas.supernet.device import resolve_device
from nas.supernet.sandwich import cross_entropy
from nas.supernet.storage import CONFIG_FILE, WEIGHTS_FILE, save_model
from nas.supernet.training import METRICS_FILE, MetricsLog, TrainConfig, train


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


@torch.inference_mode()
def validation_loss(
    model: torch.nn.Module,
    inputs: np.ndarray,
    targets: np.ndarray,
    progress: bool = False,
    desc: str = "scoring",
) -> float:
    """Mean next-token cross-entropy (nats/token) of `model` ((B, T) tokens -> (B, T, V)
    logits) over fixed batches `inputs`, `targets` of shape (n_batches, B, T), each
    batch weighted by its tokens, in fp32 on the model's device: as the search's
    Evaluator computes inherited losses. `progress` shows a bar over the batches."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total = 0.0
    pairs = zip(inputs, targets, strict=True)
    try:
        for x, y in tqdm(
            pairs,
            desc,
            len(inputs),
            leave=False,
            disable=not progress,
            unit="batch",
            file=sys.stderr,
            dynamic_ncols=True,
            mininterval=0.5,
        ):
            x, y = torch.as_tensor(x).to(device), torch.as_tensor(y).to(device)  # (B, T)
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
