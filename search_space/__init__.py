"""Search spaces and architectures. Imports nothing else of nas."""

from __future__ import annotations

from .arch import Arch, LayerArch
from .errors import (
    ArchError,
    BudgetError,
    CheckpointError,
    DataError,
    DeviceError,
    NasError,
    SpaceError,
)
from .mixers import MIXERS, MixerChoices
from .space import SearchSpace

__all__ = [
    "MIXERS",
    "Arch",
    "ArchError",
    "BudgetError",
    "CheckpointError",
    "DataError",
    "DeviceError",
    "LayerArch",
    "MixerChoices",
    "NasError",
    "SearchSpace",
    "SpaceError",
]
