"""How a latency profile is built, and the cache key and file that name it.

A profile is reused only when everything it depends on matches: the device fingerprint
(machine, software, workload), the search space, the build config, and the digest of the
code it measured (measured_code.py). `profile_key` hashes all four; `profile_path` is the
cache file named by it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nas.search_space import SearchSpace

from . import measured_code
from .fingerprint import Workload, device_fingerprint
from .measure import MeasureConfig
from .predictor import FIT_VERSION

Step = Callable[[str], None]  # called once per measurement with what is being measured


@dataclass(frozen=True)
class ProfileConfig:
    """How a profile is built. The defaults fit in 10 minutes on 2 CPU cores.

    The config is part of a profile's key: a quick profile built with fewer runs or
    samples is stored beside the default one and never stands in for it.
    """

    n_train: int = 80  # sampled subnets measured whole to fit the correction (plus extremes)
    n_holdout: int = 40  # fresh subnets, never fitted on, measured twice for the report
    seed: int = 0  # seeds arch sampling (numpy) and the random weights (torch)
    measure: MeasureConfig = field(default_factory=MeasureConfig)  # whole models
    # Isolated ops can take tens of microseconds, so each timed sample groups calls up
    # to 1 ms: the median then is not dominated by timer jitter.
    kernel_measure: MeasureConfig = field(
        default_factory=lambda: MeasureConfig(min_sample_ms=1.0, max_attempts=2)
    )
    kernel_instances: int = 4  # copies of an op per timed call (see measure_kernel_table)
    # Each kernel entry is measured once per pass, the passes minutes apart, and the
    # fastest undisturbed one is kept: a slow spell of a shared host lasting seconds
    # would otherwise leave a 10-30% error in the one entry it hit.
    kernel_passes: int = 2

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_train": self.n_train,
            "n_holdout": self.n_holdout,
            "seed": self.seed,
            "measure": self.measure.to_dict(),
            "kernel_measure": self.kernel_measure.to_dict(),
            "kernel_instances": self.kernel_instances,
            "kernel_passes": self.kernel_passes,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProfileConfig:
        return cls(
            n_train=int(data["n_train"]),
            n_holdout=int(data["n_holdout"]),
            seed=int(data["seed"]),
            measure=MeasureConfig(**data["measure"]),
            kernel_measure=MeasureConfig(**data["kernel_measure"]),
            kernel_instances=int(data["kernel_instances"]),
            kernel_passes=int(data.get("kernel_passes", 1)),
        )


def cache_dir() -> Path:
    """Where profiles live: `$NAS_CACHE_DIR/profiles`, else `~/.cache/nas/profiles`."""
    root = os.environ.get("NAS_CACHE_DIR")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "nas"
    return base / "profiles"


def profile_key(space: SearchSpace, env: dict[str, Any], config: ProfileConfig) -> str:
    """16 hex digits naming the (device fingerprint, space, build config, measured code,
    correction fit) a profile is for; the code is this process's
    (`measured_code.code_digest`), the fit `predictor.FIT_VERSION`."""
    text = json.dumps(
        {
            "device": device_fingerprint(env),
            "space": space.fingerprint,
            "config": config.to_dict(),
            "code": measured_code.code_digest(),
            "fit": FIT_VERSION,
        },
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def profile_path(
    space: SearchSpace, env: dict[str, Any], config: ProfileConfig, root: Path | None = None
) -> Path:
    """The cache file of the profile for (this device and workload, `space`, `config`)."""
    w = Workload.from_dict(env)
    key = profile_key(space, env, config)
    return (root or cache_dir()) / f"{w.device}-{w.mode}-b{w.batch}-t{w.seq_len}-{key}.json"
