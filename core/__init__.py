"""The base layer below every other: the error hierarchy and atomic file writes.

It imports nothing of ours, so search_space/, kernels/, supernet/, search/ and the CLI can
all use it without reaching sideways or up.
"""

from __future__ import annotations

from .atomic import atomic_write_bytes, atomic_write_json, atomic_write_text, atomic_write_with
from .errors import (
    ArchError,
    BudgetError,
    CheckpointError,
    ClusterError,
    DataError,
    DeviceError,
    NasError,
    NonFiniteLossError,
    ProfileError,
    SpaceError,
    StorageError,
    VerifyError,
    WorkloadError,
)

__all__ = [
    "ArchError",
    "BudgetError",
    "CheckpointError",
    "ClusterError",
    "DataError",
    "DeviceError",
    "NasError",
    "NonFiniteLossError",
    "ProfileError",
    "SpaceError",
    "StorageError",
    "VerifyError",
    "WorkloadError",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "atomic_write_with",
]
