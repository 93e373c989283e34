"""nas: hardware-aware neural architecture search over one elastic weight-sharing supernet.

The public API. Implementation lives in the layer packages (nas.search_space,
nas.kernels, nas.supernet, nas.search); what a user's script needs is re-exported here.
"""

from __future__ import annotations

from nas.search_space import (
    Arch,
    ArchError,
    BudgetError,
    CheckpointError,
    DataError,
    DeviceError,
    LayerArch,
    NasError,
    SearchSpace,
    SpaceError,
)
from nas.supernet import StaticModel, Supernet
from nas.supernet import load_model as load
from nas.supernet import save_model as save

__version__ = "0.1.0"

__all__ = [
    "Arch",
    "ArchError",
    "BudgetError",
    "CheckpointError",
    "DataError",
    "DeviceError",
    "LayerArch",
    "NasError",
    "SearchSpace",
    "SpaceError",
    "StaticModel",
    "Supernet",
    "load",
    "save",
]
