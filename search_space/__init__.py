"""Search spaces and architectures. Imports only the base layer (nas.core).

The errors are re-exported for `from nas.search_space import SpaceError`; they live in core/.
"""

from __future__ import annotations

from nas.core.errors import (
    ArchError,
    BudgetError,
    CheckpointError,
    DataError,
    DeviceError,
    NasError,
    SpaceError,
)

from .arch import Arch, LayerArch
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
