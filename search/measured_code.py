"""The code a latency profile measures, and a digest of its source.

A profile's kernel table and whole-model fits time the kernels (kernels/) through the
block wiring of the extracted model (supernet/network.py, static.py, mixers.py and the
files they build on). Change any of them and the profile describes code that no longer
runs, so the digest of their bytes is part of a profile's cache key and is stored in the
profile: a cached profile measured on other code is never reused (see profile_config.py),
and one given explicitly is refused (see profile.check_device).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from pathlib import Path

import nas.kernels
import nas.supernet

# The supernet/ files that decide what an extracted model's forward pass computes: the
# forward itself, the mixer registry, how weights are held and sliced, and the constants.
WIRING_FILES = ("network.py", "static.py", "mixers.py", "params.py", "config.py")


def measured_files() -> list[Path]:
    """Every source file of kernels/ and the block wiring of supernet/, in a fixed order."""
    kernels = Path(nas.kernels.__file__).parent
    supernet = Path(nas.supernet.__file__).parent
    return sorted(kernels.glob("*.py")) + [supernet / name for name in WIRING_FILES]


def files_digest(files: Sequence[Path]) -> str:
    """16 hex digits of SHA-256 over each file's name and bytes, in the order given.

    Names are hashed with the bytes, so renaming or moving a file changes the digest too.
    Raises `OSError` for a file that cannot be read.
    """
    sha = hashlib.sha256()
    for path in files:
        path = Path(path)
        data = path.read_bytes()
        sha.update(f"{path.parent.name}/{path.name}\0{len(data)}\0".encode())
        sha.update(data)
    return sha.hexdigest()[:16]


@functools.cache
def code_digest() -> str:
    """The digest of the measured code as this process runs it (read once, then cached)."""
    return files_digest(measured_files())
