"""nas: hardware-aware neural architecture search over one elastic weight-sharing supernet.

The public API. Implementation lives in the layer packages (nas.search_space,
nas.kernels, nas.supernet, nas.search); what a user's script needs is re-exported here.
"""

from __future__ import annotations

from pathlib import Path

# In a source checkout the layer packages sit beside this folder (search_space/,
# supernet/, ...) and pyproject's package-dir maps them into `nas` at install time. Python
# started in the checkout's root finds this folder before any installed copy, and would
# then miss them; pointing the package's path at the checkout too makes them importable.
_CHECKOUT = Path(__file__).resolve().parent.parent
if (_CHECKOUT / "pyproject.toml").is_file() and (_CHECKOUT / "supernet" / "__init__.py").is_file():
    __path__.append(str(_CHECKOUT))

from nas.core.errors import (  # noqa: E402  (needs the path above in a checkout)
    ArchError,
    BudgetError,
    CheckpointError,
    DataError,
    DeviceError,
    NasError,
    SpaceError,
)
from nas.search_space import Arch, LayerArch, SearchSpace  # noqa: E402
from nas.supernet import StaticModel, Supernet  # noqa: E402
from nas.supernet import load_model as load  # noqa: E402
from nas.supernet import save_model as save  # noqa: E402

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
