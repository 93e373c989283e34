"""nas: hardware-aware neural architecture search over one elastic weight-sharing supernet.

The public API. Implementation lives in the layer packages (nas.search_space,
nas.kernels, nas.supernet, nas.search); what a user's script needs is re-exported here.
"""

from __future__ import annotations

from pathlib import Path

import torch

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
    ExportError,
    NasError,
    SpaceError,
)
from nas.search_space import Arch, LayerArch, SearchSpace  # noqa: E402
from nas.supernet import (  # noqa: E402
    Family,
    StaticModel,
    Supernet,
    is_family,
    load_family,
    load_model,
)
from nas.supernet import save_model as save  # noqa: E402
from nas.supernet.family import FAMILY_FILE  # noqa: E402
from nas.supernet.storage import CONFIG_FILE  # noqa: E402

__version__ = "0.1.0"


def load(
    path: str | Path,
    device: str | torch.device = "cpu",
    *,
    budget: str | float | None = None,
    member: str | None = None,
) -> StaticModel:
    """The model saved in `path` (by `nas.save`, or a member of a family) on `device`.

    A family folder needs `member` (a name) or `budget`: a string such as "5ms" or a
    number of milliseconds, giving the most accurate member whose latency fits it (see
    `Family.pick`); `member` wins when both are given. Returns a plain `nn.Module` in
    eval mode, whose outputs equal that model extracted alone. Raises `CheckpointError`
    for a folder that is not a model or family (or is truncated or tampered), an unknown
    member, or budget/member given for a single model; `BudgetError` when no member fits.
    """
    if not is_family(path):
        if not (Path(path) / CONFIG_FILE).is_file():
            raise CheckpointError(
                f"{path}: {CONFIG_FILE} and {FAMILY_FILE} not found; pass a folder written by "
                "`nas.save` or `nas extract`"
            )
        if budget is not None or member is not None:
            raise CheckpointError(
                f"{path}: holds one model, not a family; call nas.load without budget= or member="
            )
        return load_model(path, device)
    family = load_family(path)
    if member is None:
        if budget is None:
            raise CheckpointError(
                f"{path}: is a family of {len(family.names)} members ({', '.join(family.names)});"
                " pass budget='5ms' (the most accurate member that fits) or member=NAME"
            )
        if isinstance(budget, str):
            from nas.search.budget import parse_budget  # only a family budget needs it

            budget = parse_budget(budget)
        member = family.pick(budget)
    return family.model(member, device)


__all__ = [
    "Arch",
    "ArchError",
    "BudgetError",
    "CheckpointError",
    "DataError",
    "DeviceError",
    "ExportError",
    "Family",
    "LayerArch",
    "NasError",
    "SearchSpace",
    "SpaceError",
    "StaticModel",
    "Supernet",
    "load",
    "load_family",
    "save",
]
