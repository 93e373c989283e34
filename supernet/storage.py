"""Saving and loading extracted models: safetensors weights plus a JSON config, no pickle.

The config records the SHA-256 of the weights file, so a truncated, corrupted or swapped
weights file is refused on load instead of silently giving another model.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save

from nas.core.atomic import atomic_write_bytes, atomic_write_json
from nas.core.errors import ArchError, CheckpointError

from .mixers import MIXER_SPECS
from .static import FORMAT, StaticModel

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
DIGEST_KEY = "weights_sha256"  # config.json: hex SHA-256 of model.safetensors' bytes


def save_model(model: StaticModel, directory: str | Path) -> Path:
    """Write `model` to `directory` as model.safetensors + config.json (each atomically).

    The weights are written first, so a config on disk always describes complete weights;
    the config records their SHA-256 (`DIGEST_KEY`), which `load_model` checks.
    """
    if not isinstance(model, StaticModel):
        raise TypeError(
            f"nas.save expects an extracted model (net.extract(arch)), got {type(model).__name__}"
        )
    directory = Path(directory)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    data = save(tensors, metadata={"format": FORMAT})
    atomic_write_bytes(directory / WEIGHTS_FILE, data)
    atomic_write_json(
        directory / CONFIG_FILE, {**model.config(), DIGEST_KEY: hashlib.sha256(data).hexdigest()}
    )
    return directory


def load_model(directory: str | Path, device: str | torch.device = "cpu") -> StaticModel:
    """Rebuild a model saved by `save_model`, without the supernet and without pickle.

    Raises `CheckpointError` (one line naming the file and the problem) when the folder,
    config or weights are missing, truncated, corrupted or disagree with each other, when
    the weights do not match the digest in the config (or it records none), and when the
    config names a mixer this version does not know.
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
    check_mixers(config.get("arch"), config_path)
    try:
        model = StaticModel.from_config(config)
    except (ArchError, KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{config_path}: invalid config ({exc})") from None
    digest = config.get(DIGEST_KEY)
    if not isinstance(digest, str):
        raise CheckpointError(
            f"{config_path}: records no weights digest ('{DIGEST_KEY}'); re-extract the "
            "model with this version of nas"
        )
    try:
        data = weights_path.read_bytes()
        tensors = load(data)
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{weights_path}: unreadable safetensors file ({exc})") from None
    if hashlib.sha256(data).hexdigest() != digest:
        raise CheckpointError(
            f"{weights_path}: weights do not match the digest in {CONFIG_FILE} "
            "(truncated or tampered); re-extract the model"
        )
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


def check_mixers(arch: Any, source: str | Path) -> None:
    """Raise `CheckpointError` if the arch dict `arch` (as saved) names an unknown mixer.

    Checked before a model is built so the line names the mixer and the valid ones, e.g.
    for a model saved by a newer version of nas. Malformed archs are left to `Arch`.
    """
    layers = arch.get("layers") if isinstance(arch, dict) else None
    for i, layer in enumerate(layers if isinstance(layers, list) else []):
        mixer = layer.get("mixer") if isinstance(layer, dict) else None
        if isinstance(mixer, str) and mixer not in MIXER_SPECS:
            raise CheckpointError(
                f"{source}: layer {i} uses unknown mixer '{mixer}'; valid mixers are "
                f"{', '.join(MIXER_SPECS)} (saved by another version of nas?)"
            )
