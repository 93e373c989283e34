"""Saving and loading extracted models: safetensors weights plus a JSON config, no pickle."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from nas.core.atomic import atomic_write_bytes, atomic_write_json
from nas.core.errors import ArchError, CheckpointError

from .static import FORMAT, StaticModel

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


def save_model(model: StaticModel, directory: str | Path) -> Path:
    """Write `model` to `directory` as model.safetensors + config.json (each atomically).

    The weights are written first, so a config on disk always describes complete weights.
    """
    if not isinstance(model, StaticModel):
        raise TypeError(
            f"nas.save expects an extracted model (net.extract(arch)), got {type(model).__name__}"
        )
    directory = Path(directory)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    atomic_write_bytes(directory / WEIGHTS_FILE, save(tensors, metadata={"format": FORMAT}))
    atomic_write_json(directory / CONFIG_FILE, model.config())
    return directory


def load_model(directory: str | Path, device: str | torch.device = "cpu") -> StaticModel:
    """Rebuild a model saved by `save_model`, without the supernet and without pickle.

    Raises `CheckpointError` (one line naming the file and the problem) when the folder,
    config or weights are missing, truncated, corrupted or disagree with each other.
    """
    directory = Path(directory)
    config_path, weights_path = directory / CONFIG_FILE, directory / WEIGHTS_FILE
    for path in (config_path, weights_path):
        if not path.is_file():
            raise CheckpointError(f"{path}: not found; pass a folder written by `nas.save`")
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CheckpointError(f"{config_path}: not valid JSON (truncated or corrupted)") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise CheckpointError(f"{config_path}: not a nas model config (expected format {FORMAT})")
    try:
        model = StaticModel.from_config(config)
    except (ArchError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{config_path}: invalid config ({exc})") from None
    try:
        tensors = load_file(str(weights_path), device=str(device))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{weights_path}: unreadable safetensors file ({exc})") from None
    expected = model.state_dict()
    problems = sorted(set(expected) ^ set(tensors))
    if problems:
        raise CheckpointError(
            f"{weights_path}: weights do not match {CONFIG_FILE} (mismatched names: "
            f"{problems[:4]}{' ...' if len(problems) > 4 else ''})"
        )
    for name, tensor in tensors.items():
        if tensor.shape != expected[name].shape:
            raise CheckpointError(
                f"{weights_path}: '{name}' has shape {tuple(tensor.shape)}, config needs "
                f"{tuple(expected[name].shape)}"
            )
    model.load_state_dict(tensors)
    return model.to(device).eval()
