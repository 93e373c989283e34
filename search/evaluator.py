"""The search's quality objective: an arch's validation loss with inherited weights.

A search evaluates thousands of archs, in worker processes that may sit on other nodes.
Everything an evaluator needs therefore travels as one `EvalPayload` of numpy arrays and
JSON-able fields (put once in Ray's object store, read zero-copy on a node), never as a
path to the driver's disk:

- the supernet's weights: one state dict for a one-shot supernet, or one per sub-supernet
  of a few-shot one, keyed by the mixers of its split layers (`sub_key`);
- a fixed set of validation batches, the same for every trial, so losses compare.

`Evaluator(payload).loss(arch)` runs the arch through its (sub-)supernet on those batches.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nas.core.errors import CheckpointError
from nas.search_space import Arch, SearchSpace
from nas.supernet import Supernet
from nas.supernet.batches import eval_batches
from nas.supernet.checkpoint import Checkpoint, checkpoint_file, read_checkpoint
from nas.supernet.few_shot import FEW_SHOT_FILE, load_few_shot
from nas.supernet.sandwich import cross_entropy

ONE_SHOT_KEY = ""  # the key of a one-shot supernet's only state dict


def sub_key(arch: Arch, split_layers: tuple[int, ...]) -> str:
    """Which state dict of a payload runs `arch`: "" for a one-shot supernet, else the
    mixers of its split layers joined by commas (as few_shot.json names sub-supernets)."""
    if not split_layers:
        return ONE_SHOT_KEY
    return ",".join(arch.layers[i].mixer for i in split_layers)


@dataclass(frozen=True)
class SupernetSource:
    """A trained supernet as `nas train` leaves it: one checkpoint, or a few-shot folder."""

    path: Path  # what the user named (run folder, checkpoint file or few-shot folder)
    space: SearchSpace  # the space it was trained for
    ffn_per_mixer: bool  # its weight layout
    split_layers: tuple[int, ...]  # few-shot split layers; () for one-shot
    checkpoints: dict[str, Path]  # sub_key -> checkpoint file
    data: dict[str, Any]  # the corpus it was trained on, as its checkpoint recorded it
    config: dict[str, Any]  # its training config, as recorded
    digest: str  # the (first) checkpoint's digest: which weights these are

    def checkpoint_for(self, arch: Arch) -> Path:
        """The checkpoint file that holds `arch`'s weights; `CheckpointError` if none does."""
        if self.split_layers and arch.depth <= max(self.split_layers):
            raise CheckpointError(
                f"{self.path}: arch of depth {arch.depth} has no layer {max(self.split_layers)}, "
                "where this few-shot supernet is split"
            )
        key = sub_key(arch, self.split_layers)
        if key not in self.checkpoints:
            raise CheckpointError(
                f"{self.path}: no sub-supernet for mixers {key!r} at layers "
                f"{list(self.split_layers)}; train the few-shot run again with --resume"
            )
        return self.checkpoints[key]


def open_supernet(path: str | Path, space: SearchSpace | None = None) -> SupernetSource:
    """Read (and verify) the trained supernet at `path`: a `nas train` run folder or its
    checkpoint file, or a few-shot run folder.

    With `space`, the supernet must have been trained for it. Raises `CheckpointError`
    (one line naming the path) when it is missing, corrupt, unfinished or for another space.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise CheckpointError(
            f"{path}: no such supernet; pass a run folder or checkpoint of `nas train`, "
            "or a few-shot run folder"
        )
    if path.is_dir() and (path / FEW_SHOT_FILE).is_file():
        runs = load_few_shot(path)
        ckpts = {",".join(mixers): checkpoint_file(run) for mixers, run in runs.subs.items()}
        first = read_checkpoint(next(iter(ckpts.values())), space)
        for key, file in ckpts.items():
            if not file.is_file():
                raise CheckpointError(f"{file}: sub-supernet {key!r} has no checkpoint")
        return _source(path, first, runs.layers, ckpts)
    if path.is_dir() and not checkpoint_file(path).is_file():
        raise CheckpointError(
            f"{path}: holds no checkpoint.safetensors or few_shot.json; pass a run folder of "
            "`nas train`"
        )
    ckpt = read_checkpoint(path, space)
    return _source(path, ckpt, (), {ONE_SHOT_KEY: ckpt.path})


def _source(
    path: Path, ckpt: Checkpoint, layers: tuple[int, ...], ckpts: dict[str, Path]
) -> SupernetSource:
    return SupernetSource(
        path=path,
        space=ckpt.space,
        ffn_per_mixer=ckpt.ffn_per_mixer,
        split_layers=tuple(layers),
        checkpoints=ckpts,
        data=dict(ckpt.state.get("data", {})),
        config=dict(ckpt.state.get("config", {})),
        digest=ckpt.digest,
    )


@dataclass(frozen=True)
class EvalPayload:
    """What an evaluator needs, as numpy arrays and JSON-able fields (`ray.put`-able)."""

    space: dict[str, Any]  # SearchSpace.to_dict() of the supernet's space
    ffn_per_mixer: bool  # the supernet's weight layout
    split_layers: tuple[int, ...]  # few-shot split layers; () for one-shot
    states: dict[str, dict[str, np.ndarray]]  # sub_key -> supernet state dict
    inputs: np.ndarray  # (n_batches, B, T) int64 validation inputs
    targets: np.ndarray  # (n_batches, B, T) int64 next-token targets
    meta: dict[str, Any] = field(default_factory=dict)  # where it came from, for reports

    @property
    def tokens(self) -> int:
        """Validation tokens one evaluation scores."""
        return int(self.targets.size)


def validation_batches(
    tokens: np.ndarray, batch_size: int, seq_len: int, n_batches: int
) -> tuple[np.ndarray, np.ndarray]:
    """The fixed, evenly spaced validation windows of a split, stacked:
    (inputs, targets), each (n, B, T) int64. The same split always gives the same ones."""
    batches = eval_batches(tokens, batch_size, seq_len, n_batches)
    full = [b for b in batches if b[0].shape[0] == batch_size] or batches[:1]
    inputs = np.stack([b[0].numpy() for b in full])  # (n, B, T)
    targets = np.stack([b[1].numpy() for b in full])  # (n, B, T)
    return inputs, targets


def build_payload(source: SupernetSource, inputs: np.ndarray, targets: np.ndarray) -> EvalPayload:
    """The payload of `source`'s weights and the given validation batches."""
    states = {}
    for key, file in source.checkpoints.items():
        ckpt = read_checkpoint(file, source.space)
        states[key] = {name: t.numpy() for name, t in ckpt.model.items()}
    return EvalPayload(
        space=source.space.to_dict(),
        ffn_per_mixer=source.ffn_per_mixer,
        split_layers=source.split_layers,
        states=states,
        inputs=inputs,
        targets=targets,
        meta={"supernet": str(source.path), "digest": source.digest},
    )


def payload_from_net(net: Supernet, inputs: np.ndarray, targets: np.ndarray) -> EvalPayload:
    """A one-shot payload of an in-memory supernet (tests, benches)."""
    return EvalPayload(
        space=net.space.to_dict(),
        ffn_per_mixer=net.ffn_per_mixer,
        split_layers=(),
        states={ONE_SHOT_KEY: {k: v.detach().cpu().numpy() for k, v in net.state_dict().items()}},
        inputs=np.asarray(inputs, dtype=np.int64),
        targets=np.asarray(targets, dtype=np.int64),
    )


class Evaluator:
    """Scores archs with inherited weights on a payload's fixed validation batches (CPU)."""

    def __init__(self, payload: EvalPayload):
        self.payload = payload
        self.space = SearchSpace.from_dict(payload.space, source="payload space")
        self.nets: dict[str, Supernet] = {}
        for key, state in payload.states.items():
            net = Supernet(self.space, ffn_per_mixer=payload.ffn_per_mixer)
            # from_numpy shares the payload's memory (zero-copy from Ray's object store);
            # a read-only buffer only warns, and evaluation never writes the weights.
            tensors = {k: _as_tensor(v) for k, v in state.items()}
            net.load_state_dict(tensors, assign=True)
            self.nets[key] = net.eval()
        self.inputs = torch.from_numpy(np.ascontiguousarray(payload.inputs))
        self.targets = torch.from_numpy(np.ascontiguousarray(payload.targets))

    def net_for(self, arch: Arch) -> Supernet:
        key = sub_key(arch, self.payload.split_layers)
        if key not in self.nets:
            raise CheckpointError(f"no sub-supernet for mixers {key!r} in this supernet")
        return self.nets[key]

    @torch.inference_mode()
    def loss(self, arch: Arch) -> float:
        """Mean validation cross-entropy of `arch` (nats/token) over the fixed batches.

        Raises `ArchError` if `arch` is not in the space."""
        self.space.validate(arch)
        net = self.net_for(arch)
        total = 0.0
        for inputs, targets in zip(self.inputs, self.targets, strict=True):  # (B, T) each
            total += cross_entropy(net(inputs, arch), targets).item() * targets.numel()
        return total / self.targets.numel()


def _as_tensor(array: np.ndarray) -> torch.Tensor:
    """`array` as a tensor sharing its memory. Ray hands out read-only buffers, on which
    torch warns; evaluation never writes the weights, so the warning is silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(array)
