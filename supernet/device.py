"""Where training runs: CUDA with bf16 autocast when there is a GPU, the CPU in fp32 otherwise."""

from __future__ import annotations

import contextlib

import torch

from nas.core.errors import DeviceError


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` means CUDA when available, else the CPU. Raises `DeviceError` for an unusable name."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise DeviceError(f"device '{name}' requested but CUDA is not available here")
        return torch.device(name)
    raise DeviceError(f"unknown device '{name}'; use auto, cpu or cuda")


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA; a no-op elsewhere, so CPU training stays fp32 and exact."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
