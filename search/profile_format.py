"""`Profile`: a built latency profile, and its JSON file (never a pickle).

A profile holds the kernel table and correction (`predictor`), the two baselines, the
held-out accuracy report, what it was fitted on, how it was built and on which device,
workload and code (`env`, `config`, `code_digest`). `save_profile` writes it atomically;
`load_profile` reads it back and names the file in every error.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nas.core.atomic import atomic_write_json
from nas.core.errors import ProfileError
from nas.search_space import Arch

from .accuracy import AccuracyReport
from .fingerprint import Workload
from .predictor import LatencyPredictor, LinearModel
from .profile_config import ProfileConfig

FORMAT = "nas.profile/1"


@dataclass
class Profile:
    """A latency model for one (device, workload, space), with its accuracy report."""

    key: str  # profile_key(space, env, config)
    env: dict[str, Any]  # environment(): machine, software and workload
    config: ProfileConfig  # how it was built (runs, samples, seed)
    space: dict[str, Any]  # the space it was built for (SearchSpace.to_dict())
    predictor: LatencyPredictor
    baselines: dict[str, LinearModel]  # FLOPS / FEATURES label -> fitted linear model
    accuracy: AccuracyReport  # held-out report from the build
    train: dict[str, Any]  # {"archs": [canonical JSON], "measured_ms": [...]}
    kernels: list[dict[str, Any]]  # one measurement record per kernel-table entry
    build_s: float  # seconds the build took
    phases: dict[str, float]  # seconds per phase (kernels_s, fit_s, holdout_s, waited_s)
    created: str  # ISO 8601 UTC
    checks: list[dict[str, Any]] = field(default_factory=list)  # later `--check` reports
    # measured_code.code_digest() of the code it measured; "" in profiles older than that
    code_digest: str = ""

    @property
    def workload(self) -> Workload:
        return Workload.from_dict(self.env)

    @property
    def seen_ids(self) -> set[str]:
        """Ids of every arch measured for this profile so far (fit, held out or checked)."""
        ids = {Arch.from_json(a).id for a in self.train["archs"]}
        ids.update(self.accuracy.arch_ids)
        for check in self.checks:
            ids.update(check["arch_ids"])
        return ids

    @property
    def contended(self) -> int:
        """Measurements in this profile that stayed disturbed (see measure.MachineProbe)."""
        return (
            sum(bool(k.get("contended")) for k in self.kernels)
            + sum(bool(c) for c in self.train.get("contended", []))
            + self.accuracy.contended
        )

    def predict(self, archs: Sequence[Arch]) -> np.ndarray:
        """(n,) predicted latency of each arch, ms (one forward pass of the workload)."""
        return self.predictor.predict(archs)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "key": self.key,
            "env": self.env,
            "config": self.config.to_dict(),
            "space": self.space,
            "predictor": self.predictor.to_dict(),
            "baselines": {k: v.to_dict() for k, v in self.baselines.items()},
            "accuracy": self.accuracy.to_dict(),
            "train": self.train,
            "kernels": self.kernels,
            "build_s": self.build_s,
            "phases": self.phases,
            "created": self.created,
            "checks": self.checks,
            "code_digest": self.code_digest,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "profile") -> Profile:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            found = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise ProfileError(
                f"{source}: not a {FORMAT} profile (format {found!r}); rebuild "
                "it with `nas profile`"
            )
        try:
            return cls(
                key=data["key"],
                env=data["env"],
                config=ProfileConfig.from_dict(data["config"]),
                space=data["space"],
                predictor=LatencyPredictor.from_dict(data["predictor"]),
                baselines={k: LinearModel.from_dict(v) for k, v in data["baselines"].items()},
                accuracy=AccuracyReport.from_dict(data["accuracy"]),
                train=data["train"],
                kernels=data["kernels"],
                build_s=float(data["build_s"]),
                phases=dict(data.get("phases", {})),
                created=data["created"],
                checks=list(data.get("checks", [])),
                code_digest=str(data.get("code_digest", "")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ProfileError(
                f"{source}: damaged profile ({exc!r}); rebuild it with `nas profile`"
            ) from None


def save_profile(profile: Profile, path: str | Path) -> None:
    """Write `profile` as JSON, atomically (a reader sees the old file or the new one)."""
    atomic_write_json(path, profile.to_dict())


def load_profile(path: str | Path) -> Profile:
    """Read a profile written by `save_profile`. Raises `ProfileError` naming the file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ProfileError(f"{path}: no such profile; build it with `nas profile`") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ProfileError(
            f"{path}: unreadable profile ({exc}); rebuild it with `nas profile --refresh`"
        ) from None
    return Profile.from_dict(data, source=str(path))
