"""Durable supernet checkpoints: one safetensors file, written atomically, loaded without pickle.

A checkpoint is a single `checkpoint.safetensors` holding
- the supernet's weights as `model.<name>` tensors,
- the optimizer's per-parameter state as `optim.<param name>.<key>` tensors,
- in the safetensors header (string metadata): the format, the space (JSON) and its
  fingerprint, the optimizer's hyper-parameters and scalar state (JSON), the training
  state (step, RNG states as JSON-able numpy bit-generator states, config), and a SHA-256
  digest of all of the above.

One file replaced by temp file + fsync + rename means a `kill -9` at any moment leaves
either the previous checkpoint or the new one, both complete. The digest turns silent
corruption (of tensor bytes or metadata) into a clear `CheckpointError`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from nas.core.atomic import atomic_write_with
from nas.core.errors import CheckpointError, NasError
from nas.search_space import SearchSpace

from .supernet import Supernet

# Format 2 stores the embedding and exit heads in width chunks (params.ElasticParams).
FORMAT = "nas.supernet-checkpoint/2"
CHECKPOINT_FILE = "checkpoint.safetensors"
_MODEL, _OPTIM = "model.", "optim."


@dataclass
class Checkpoint:
    """What a checkpoint file holds, read and verified (tensors on the CPU)."""

    path: Path  # the file it was read from
    space: SearchSpace  # the space the supernet was trained for
    model: dict[str, torch.Tensor]  # supernet state dict
    optim_tensors: dict[str, torch.Tensor]  # "<param name>.<key>" -> optimizer state tensor
    optim_meta: dict[str, Any]  # param groups (hyper-parameters, param names), scalar state
    state: dict[str, Any]  # training state: step, RNG states, config, ...
    digest: str = ""  # SHA-256 of its contents, verified on reading: which checkpoint it is

    @property
    def step(self) -> int:
        return int(self.state.get("step", 0))

    @property
    def ffn_per_mixer(self) -> bool:
        """The supernet's weight layout (`Supernet(ffn_per_mixer=...)`), from its config."""
        return bool(self.state.get("config", {}).get("ffn_per_mixer", False))


def checkpoint_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / CHECKPOINT_FILE


def checkpoint_file(path: str | Path) -> Path:
    """The checkpoint file `path` names: a run folder's checkpoint, else `path` itself."""
    path = Path(path)
    return checkpoint_path(path) if path.is_dir() else path


def save_checkpoint(
    path: str | Path,
    net: Supernet,
    optimizer: torch.optim.Optimizer | None,
    state: dict[str, Any],
) -> Path:
    """Write `net`, `optimizer` and the JSON-able `state` to `path` atomically."""
    names = {id(p): n for n, p in net.named_parameters()}
    tensors = {_MODEL + k: _cpu(v) for k, v in net.state_dict().items()}
    optim_meta: dict[str, Any] = {"param_groups": [], "scalars": {}}
    if optimizer is not None:
        sd = optimizer.state_dict()
        index_to_name = {}
        for group, saved in zip(optimizer.param_groups, sd["param_groups"], strict=True):
            group_names = [names[id(p)] for p in group["params"]]
            index_to_name.update(zip(saved["params"], group_names, strict=True))
            hyper = {k: v for k, v in saved.items() if k != "params"}
            optim_meta["param_groups"].append({**hyper, "param_names": group_names})
        for index, entry in sd["state"].items():
            name = index_to_name[index]
            for key, value in entry.items():
                if torch.is_tensor(value):
                    tensors[f"{_OPTIM}{name}.{key}"] = _cpu(value)
                else:
                    optim_meta["scalars"].setdefault(name, {})[key] = value
    metadata = {
        "format": FORMAT,
        "fingerprint": net.space.fingerprint,
        "space": json.dumps(net.space.to_dict(), sort_keys=True),
        "optimizer": json.dumps(optim_meta, sort_keys=True),
        "state": json.dumps(state, sort_keys=True),
    }
    metadata["digest"] = _digest(tensors, metadata)
    path = Path(path)
    # safetensors streams to a file name itself: serialising to bytes first is slower.
    atomic_write_with(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))
    return path


def read_checkpoint(path: str | Path, space: SearchSpace | None = None) -> Checkpoint:
    """Read and verify a checkpoint file.

    With `space`, also check that the checkpoint was trained for it (same fingerprint).
    Raises `CheckpointError`, one line naming the file, when it is missing, truncated,
    corrupted, not a supernet checkpoint, or for another space.
    """
    path = checkpoint_file(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        header = _header(path)
        tensors = load_file(str(path))
    except (SafetensorError, ValueError, OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(
            f"{path}: truncated or corrupted checkpoint ({_one_line(exc)})"
        ) from None
    meta = header.get("__metadata__") or {}
    if meta.get("format") != FORMAT:
        found = meta.get("format")
        if isinstance(found, str) and found.startswith("nas.supernet-checkpoint/"):
            raise CheckpointError(
                f"{path}: checkpoint format {found} is from another version of nas "
                f"(this one reads {FORMAT}); retrain with this version, or use the one that "
                "wrote it"
            )
        raise CheckpointError(f"{path}: not a nas supernet checkpoint (expected format {FORMAT})")
    if meta.get("digest") != _digest(tensors, {k: v for k, v in meta.items() if k != "digest"}):
        raise CheckpointError(f"{path}: corrupted checkpoint (contents do not match its digest)")
    try:
        stored_space = SearchSpace.from_dict(json.loads(meta["space"]), source="checkpoint space")
        optim_meta = json.loads(meta["optimizer"])
        state = json.loads(meta["state"])
    except (KeyError, TypeError, json.JSONDecodeError, NasError) as exc:
        raise CheckpointError(f"{path}: corrupted checkpoint metadata ({_one_line(exc)})") from None
    if stored_space.fingerprint != meta.get("fingerprint"):
        raise CheckpointError(
            f"{path}: corrupted checkpoint (space does not match its fingerprint)"
        )
    if space is not None and space.fingerprint != stored_space.fingerprint:
        raise CheckpointError(
            f"{path}: trained for another search space (fingerprint {stored_space.fingerprint}, "
            f"this space has {space.fingerprint})"
        )
    return Checkpoint(
        path=path,
        space=stored_space,
        model={k[len(_MODEL) :]: v for k, v in tensors.items() if k.startswith(_MODEL)},
        optim_tensors={k[len(_OPTIM) :]: v for k, v in tensors.items() if k.startswith(_OPTIM)},
        optim_meta=optim_meta,
        state=state,
        digest=meta["digest"],
    )


def restore(
    ckpt: Checkpoint, net: Supernet, optimizer: torch.optim.Optimizer | None = None
) -> None:
    """Load `ckpt`'s weights into `net` (and its state into `optimizer`), exactly.

    Raises `CheckpointError` when the tensors do not fit (names or shapes).
    """
    expected = net.state_dict()
    mismatched = sorted(set(expected) ^ set(ckpt.model))
    mismatched += [
        k for k in expected if k in ckpt.model and ckpt.model[k].shape != expected[k].shape
    ]
    if mismatched:
        hint = ""
        if ckpt.ffn_per_mixer != net.ffn_per_mixer:
            hint = f"; it was trained with{'' if ckpt.ffn_per_mixer else 'out'} --ffn-per-mixer"
        raise CheckpointError(
            f"{ckpt.path}: weights do not fit this supernet (e.g. '{mismatched[0]}'){hint}"
        )
    net.load_state_dict(ckpt.model)
    if optimizer is not None:
        optimizer.load_state_dict(_optimizer_state(ckpt, net, optimizer))


def load_supernet(path: str | Path, device: str | torch.device = "cpu") -> Supernet:
    """The trained supernet stored at `path` (a checkpoint file or a run folder), in eval mode."""
    ckpt = read_checkpoint(path)
    net = Supernet(ckpt.space, ffn_per_mixer=ckpt.ffn_per_mixer)
    restore(ckpt, net)
    return net.to(device).eval()


def _optimizer_state(ckpt: Checkpoint, net: Supernet, optimizer: torch.optim.Optimizer) -> dict:
    names = {id(p): n for n, p in net.named_parameters()}
    saved_groups = ckpt.optim_meta.get("param_groups", [])
    current = [[names[id(p)] for p in g["params"]] for g in optimizer.param_groups]
    if [g.get("param_names") for g in saved_groups] != current:
        raise CheckpointError(f"{ckpt.path}: optimizer state does not fit this supernet")
    groups, index = [], {}
    for group in saved_groups:
        hyper = {k: v for k, v in group.items() if k != "param_names"}
        if "betas" in hyper:
            hyper["betas"] = tuple(hyper["betas"])  # JSON turned the tuple into a list
        ids = []
        for name in group["param_names"]:
            index[name] = len(index)
            ids.append(index[name])
        groups.append({**hyper, "params": ids})
    state: dict[int, dict[str, Any]] = {}
    for key, tensor in ckpt.optim_tensors.items():
        name, _, field = key.rpartition(".")
        if name not in index:
            raise CheckpointError(f"{ckpt.path}: optimizer state for unknown parameter '{name}'")
        state.setdefault(index[name], {})[field] = tensor
    for name, scalars in ckpt.optim_meta.get("scalars", {}).items():
        if name not in index:
            raise CheckpointError(f"{ckpt.path}: optimizer state for unknown parameter '{name}'")
        state.setdefault(index[name], {}).update(scalars)
    return {"state": state, "param_groups": groups}


def _cpu(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to("cpu").contiguous()


def _digest(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> str:
    """SHA-256 over the metadata strings and every tensor's name, dtype, shape and bytes."""
    h = hashlib.sha256(json.dumps(metadata, sort_keys=True).encode())
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())  # no copy: hashed in place
    return h.hexdigest()


def _header(path: Path) -> dict[str, Any]:
    # safetensors layout: 8-byte little-endian header length, then the JSON header.
    with open(path, "rb") as f:
        size = int.from_bytes(f.read(8), "little")
        if size > path.stat().st_size:
            raise ValueError("header length exceeds the file")
        header = json.loads(f.read(size))
    if not isinstance(header, dict):
        raise ValueError("header is not a JSON object")  # noqa: TRY004 (a file-format error)
    return header


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200]
