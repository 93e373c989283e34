"""The workload a latency is measured for, and the fingerprint of the device measuring it.

A latency only means something for one device, one software stack and one workload. A
`Workload` names the workload (device, batch, sequence length, threads, dtype, mode);
`environment` records everything about the machine that changes a timing (CPU model,
cores, torch version, GPU name and driver). `device_fingerprint` hashes the two, so a
profile measured under one fingerprint is never reused under another.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
from dataclasses import asdict, dataclass
from typing import Any

import torch

from nas.core.errors import DeviceError, WorkloadError

DEVICES = ("cpu", "cuda")
MODES = ("eager", "graph")  # graph = CUDA-graph replay, a separate target from eager
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not every platform has affinity masks
        return os.cpu_count() or 1


@dataclass(frozen=True)
class Workload:
    """What one latency figure is for: one forward pass of (batch, seq_len) tokens."""

    device: str = "cpu"  # "cpu" or "cuda"
    batch: int = 1  # sequences per forward pass
    seq_len: int = 256  # tokens per sequence
    threads: int = 0  # CPU intra-op threads; 0 = all available cores (resolved on creation)
    mode: str = "eager"  # "eager", or "graph" (CUDA-graph replay; CUDA only)
    dtype: str = "float32"  # parameter and activation dtype

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise DeviceError(
                f"unknown device '{self.device}'; valid devices are {', '.join(DEVICES)}"
            )
        if self.mode not in MODES:
            raise DeviceError(f"unknown mode '{self.mode}'; valid modes are {', '.join(MODES)}")
        if self.mode == "graph" and self.device != "cuda":
            raise DeviceError("mode 'graph' (CUDA-graph replay) needs --device cuda")
        if self.dtype not in DTYPES:
            raise WorkloadError(f"unknown dtype '{self.dtype}'; valid dtypes are {list(DTYPES)}")
        for name in ("batch", "seq_len"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise WorkloadError(f"{name} must be a positive integer, got {value!r}")
        threads = self.threads
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
            raise WorkloadError(f"threads must be a positive integer, got {threads!r}")
        if threads == 0:
            # Resolved here so that the recorded workload always names a real count.
            object.__setattr__(self, "threads", available_cores())

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    def check_available(self) -> None:
        """Raise `DeviceError` if this machine cannot run the workload's device."""
        if self.device == "cuda" and not torch.cuda.is_available():
            raise DeviceError("--device cuda requested but no CUDA device is available here")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Workload:
        return cls(
            **{k: data[k] for k in ("device", "batch", "seq_len", "threads", "mode", "dtype")}
        )

    def __str__(self) -> str:
        threads = f", {self.threads} threads" if self.device == "cpu" else ""
        return (
            f"{self.device} {self.mode} {self.dtype}, batch {self.batch} x {self.seq_len} tokens"
            f"{threads}"
        )


def cpu_model() -> str:
    """The CPU's marketing name (from /proc/cpuinfo on Linux), or the platform's best guess."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def gpu_driver() -> str:
    """The NVIDIA driver version via nvidia-smi, or "unknown" where it cannot be read."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return "unknown"
    try:
        out = subprocess.run(
            [exe, "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip().splitlines()[0] if out.stdout.strip() else "unknown"


def environment(workload: Workload) -> dict[str, Any]:
    """Everything recorded with a measurement: the machine, the software and the workload.

    Every field here is part of the device fingerprint; nothing volatile (load, time) is.
    """
    env: dict[str, Any] = {
        "cpu_model": cpu_model(),
        "cpu_cores": available_cores(),
        "machine": platform.machine(),
        "torch": torch.__version__,
        # OpenMP's waiting policy changes CPU timings of small ops by up to ~1.7x here
        # (passive threads sleep between ops and must be woken).
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "gpu_name": None,
        "gpu_driver": None,
        "cuda": None,
        **workload.to_dict(),
    }
    if workload.device == "cuda":
        workload.check_available()
        env["gpu_name"] = torch.cuda.get_device_name()
        env["gpu_driver"] = gpu_driver()
        env["cuda"] = torch.version.cuda
    return env


def device_fingerprint(env: dict[str, Any]) -> str:
    """A 16-hex-digit hash of an `environment` record (stable across processes)."""
    return hashlib.sha256(json.dumps(env, sort_keys=True).encode()).hexdigest()[:16]
