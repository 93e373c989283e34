"""A latency profile: one device, one workload, one space, and how far to trust it.

A profile has two parts and a report:

1. a kernel table: every op of the space (each mixer choice at each width, the FFN at
   each width, the embedding, the exit head) measured in isolation, by calling the same
   `StaticModel` methods its forward pass is made of (kernel_table.py);
2. a correction, fitted on whole-model measurements of sampled subnets, for what the
   sum of isolated ops misses (profile_build.py);
3. an accuracy report on held-out subnets that no fit has seen, measured fresh, beside
   two baselines and the noise floor (see accuracy.py).

It is stored as one JSON file (never a pickle; profile_format.py) in the cache directory
(`$NAS_CACHE_DIR/profiles`, default `~/.cache/nas/profiles`), named by a key that hashes
the device fingerprint (machine, software, workload), the space, the build config and a
digest of the kernels and block wiring it measured (profile_config.py, measured_code.py),
so it is reused whenever all match and never otherwise: after a change to that code the
cached profile is rebuilt, and a profile file given explicitly is refused by
`check_device`.

This module gets, checks and re-checks profiles, and re-exports the names of the modules
above, which callers import from here.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from nas.core.errors import ProfileError
from nas.search_space import SearchSpace

from . import measured_code
from .accuracy import AccuracyReport
from .fingerprint import Workload, device_fingerprint, environment
from .kernel_table import kernel_plan, measure_kernel_table
from .measure import MeasureConfig, Measurer
from .profile_build import build_profile, evaluate, fresh_archs, measure_archs, total_steps
from .profile_config import ProfileConfig, Step, cache_dir, profile_key, profile_path
from .profile_format import FORMAT, Profile, load_profile, save_profile


def check_space(profile: Profile, space: SearchSpace) -> None:
    """Raise `ProfileError` unless `profile` was built for `space`."""
    if SearchSpace.from_dict(profile.space).fingerprint != space.fingerprint:
        raise ProfileError(
            "the profile was built for another search space; rebuild it with "
            "`nas profile --space FILE`"
        )


def check_profile(
    profile: Profile,
    space: SearchSpace,
    n: int,
    config: MeasureConfig | None = None,
    step: Step | None = None,
) -> AccuracyReport:
    """Measure `n` archs this profile has never seen and score it on them.

    The report is appended to `profile.checks` (the caller saves the profile).
    """
    if n < 2:
        raise ProfileError(f"--check needs at least 2 archs to rank, got {n}")
    check_space(profile, space)
    check_device(profile)
    workload = profile.workload
    measurer = Measurer(workload, config or profile.config.measure, seed=len(profile.checks) + 1)
    # Each check draws from its own seeded stream, and skips every arch already seen.
    rng = np.random.default_rng([int(profile.key, 16) % 2**32, 3, len(profile.checks)])
    archs = fresh_archs(space, n, rng, profile.seen_ids)
    report = evaluate(profile.predictor, profile.baselines, space, archs, measurer, step)
    profile.checks.append(
        {
            **report.to_dict(),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
    )
    return report


def cached_profile(
    space: SearchSpace,
    workload: Workload,
    config: ProfileConfig | None = None,
    root: Path | None = None,
) -> Profile | None:
    """The cached profile for (this device, `workload`, `space`, `config`) if there is
    one for this code, else None; nothing is measured."""
    config = config or ProfileConfig()
    env = environment(workload)
    path = profile_path(space, env, config, root)
    if not path.is_file():
        return None
    profile = load_profile(path)
    # The key holds the code digest too, so a profile measured on other kernels or
    # wiring lies under another name; the digest is compared as well, to be explicit.
    if (
        profile.key == profile_key(space, env, config)
        and profile.code_digest == measured_code.code_digest()
    ):
        return profile
    return None


def get_profile(
    space: SearchSpace,
    workload: Workload,
    refresh: bool = False,
    config: ProfileConfig | None = None,
    step: Step | None = None,
    root: Path | None = None,
) -> tuple[Profile, Path, bool]:
    """The cached profile for (this device, `workload`, `space`, `config`), built if missing.

    Returns (profile, its path, whether it was built now). `refresh` rebuilds it anyway.
    Raises `DeviceError` if the workload's device is not available here.
    """
    config = config or ProfileConfig()
    workload.check_available()
    path = profile_path(space, environment(workload), config, root)
    if not refresh:
        cached = cached_profile(space, workload, config, root)
        if cached is not None:
            return cached, path, False
    profile = build_profile(space, workload, config, step)
    save_profile(profile, path)
    return profile, path, True


def check_device(profile: Profile) -> None:
    """Raise `ProfileError` unless `profile` was measured on this machine and stack, and
    on the kernels and block wiring this process runs (`measured_code.code_digest`)."""
    here = environment(profile.workload)
    if device_fingerprint(here) != device_fingerprint(profile.env):
        differ = sorted(k for k in here if here.get(k) != profile.env.get(k))
        raise ProfileError(
            f"the profile was measured on another device or stack (differs in {differ}); "
            "build one here with `nas profile`"
        )
    here_code = measured_code.code_digest()
    if profile.code_digest != here_code:
        raise ProfileError(
            f"the profile measured other kernel or model code (code digest "
            f"{profile.code_digest or 'not recorded'}, this code {here_code}); build one for "
            "this code with `nas profile`"
        )


__all__ = [
    "FORMAT",
    "Profile",
    "ProfileConfig",
    "ProfileError",
    "Step",
    "build_profile",
    "cache_dir",
    "cached_profile",
    "check_device",
    "check_profile",
    "check_space",
    "environment",
    "evaluate",
    "fresh_archs",
    "get_profile",
    "kernel_plan",
    "load_profile",
    "measure_archs",
    "measure_kernel_table",
    "profile_key",
    "profile_path",
    "save_profile",
    "total_steps",
]
