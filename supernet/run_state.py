"""A training run in progress: its supernet, optimizer and random streams, and its counts.

`new_run` builds a run at step 0 from its settings (the seeded supernet, optimizer and
streams, and the archs it validates); `start_run` brings it to where it starts: its own
checkpoint when resumed, else the run it starts from (`init_from`, `branch_from`), or a
fresh folder. `Run.save_checkpoint` writes everything a resume needs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nas.search_space import Arch, SearchSpace

from .batches import BatchSampler, eval_batches
from .checkpoint import Checkpoint, checkpoint_path, read_checkpoint, restore, save_checkpoint
from .corpus import Corpus
from .evaluation import reference_archs
from .resume import check_branch
from .run_dir import METRICS_FILE, MetricsLog, data_ref
from .schedule import make_optimizer
from .supernet import Supernet
from .train_config import TrainConfig

Tensor = torch.Tensor


@dataclass
class Streams:
    """The run's random streams: which archs are sampled and where batches are cut."""

    archs: np.random.Generator
    batches: BatchSampler

    def state(self) -> dict[str, Any]:
        return {"arch_rng": self.archs.bit_generator.state, "batch_rng": self.batches.state()}

    def set_state(self, state: dict[str, Any]) -> None:
        self.archs.bit_generator.state = state["arch_rng"]
        self.batches.set_state(state["batch_rng"])


@dataclass
class Run:
    """A run in progress: what it trains, where it stands, and where it writes."""

    space: SearchSpace
    corpus: Corpus
    config: TrainConfig
    run_dir: Path
    device: torch.device
    family: list[Arch]  # trained at every step (and validated)
    pins: dict[int, str]  # {layer slot: mixer} every trained arch has
    net: Supernet
    optimizer: torch.optim.AdamW
    params: list[torch.nn.Parameter]  # listed once: walking the module tree costs per step
    streams: Streams
    refs: dict[str, Arch]  # validated at intervals
    val_batches: list[tuple[Tensor, Tensor]]
    metrics: MetricsLog
    usage: Counter[str] = field(default_factory=Counter)  # steps that trained each slot's mixer
    step: int = 0  # optimizer steps done
    # Which checkpoint the run started from, kept so that a resume can tell that source,
    # moved to another path (a few-shot folder moved whole), from another run.
    source_digest: str = ""

    @property
    def ckpt_file(self) -> Path:
        return checkpoint_path(self.run_dir)

    @property
    def tokens_per_step(self) -> int:
        return self.config.batch_size * self.config.seq_len

    def save_checkpoint(self) -> None:
        """Write the weights, optimizer, streams and counts at the current step."""
        state = {
            "step": self.step,
            "tokens": self.step * self.tokens_per_step,
            "config": self.config.to_dict(),
            "data": data_ref(self.corpus),
            "usage": dict(sorted(self.usage.items())),
            "source_digest": self.source_digest,
            **self.streams.state(),
        }
        save_checkpoint(self.ckpt_file, self.net, self.optimizer, state)


def new_run(
    space: SearchSpace,
    corpus: Corpus,
    config: TrainConfig,
    run_dir: Path,
    device: torch.device,
    family: list[Arch],
    pins: dict[int, str],
) -> Run:
    """A run at step 0: the seeded supernet, its optimizer and streams, what it validates."""
    net = Supernet(space, seed=config.seed, ffn_per_mixer=config.ffn_per_mixer)
    net = net.to(device).train()
    optimizer = make_optimizer(net, config)
    streams = Streams(
        archs=np.random.default_rng([config.seed, 1]),
        batches=BatchSampler(
            corpus.train, config.batch_size, config.seq_len, np.random.default_rng([config.seed, 2])
        ),
    )
    refs = reference_archs(space, config.reference_archs, pins) if config.sandwich else {}
    refs.update({f"family{i}": arch for i, arch in enumerate(family)})  # validated too
    return Run(
        space=space,
        corpus=corpus,
        config=config,
        run_dir=run_dir,
        device=device,
        family=family,
        pins=pins,
        net=net,
        optimizer=optimizer,
        params=list(net.parameters()),
        streams=streams,
        refs=refs,
        val_batches=eval_batches(
            corpus.val, config.batch_size, config.seq_len, config.eval_batches
        ),
        metrics=MetricsLog(run_dir / METRICS_FILE),
    )


def start_run(run: Run, ckpt: Checkpoint | None, say: Callable[[str], None]) -> None:
    """Bring `run` to where it starts: its own checkpoint `ckpt` (a resume), else the
    run it starts from (`init_from`, `branch_from`) or step 0 in a fresh folder."""
    config = run.config
    if ckpt is not None:
        run.source_digest = ckpt.state.get("source_digest", "")
        restore(ckpt, run.net, run.optimizer)
        run.streams.set_state(ckpt.state)
        run.usage.update(ckpt.state.get("usage", {}))
        run.step = ckpt.step
        run.metrics.truncate_after(run.step)
        say(f"resuming {run.ckpt_file} at step {run.step}")
        return
    if config.init_from:
        source = read_checkpoint(config.init_from, run.space)
        run.source_digest = source.digest
        restore(source, run.net)
        # Continue the source's streams, so that the new run draws batches it has not seen.
        run.streams.set_state(source.state)
    if config.branch_from:
        source = read_checkpoint(config.branch_from, run.space)
        run.source_digest = source.digest
        check_branch(source, config, run.corpus)
        restore(source, run.net, run.optimizer)
        run.streams.set_state(source.state)
        run.usage.update(source.state.get("usage", {}))
        run.step = source.step
    run.run_dir.mkdir(parents=True, exist_ok=True)
    run.metrics.path.unlink(missing_ok=True)
