"""The weight-sharing supernet, its exact extraction, and model and family storage."""

from __future__ import annotations

from .config import NetConstants
from .family import Family, FamilySizes, is_family, load_family, save_family
from .mixers import MIXER_SPECS, MixerSpec, mixer_spec
from .static import StaticModel
from .storage import load_model, save_model
from .supernet import Supernet

__all__ = [
    "MIXER_SPECS",
    "Family",
    "FamilySizes",
    "MixerSpec",
    "NetConstants",
    "StaticModel",
    "Supernet",
    "is_family",
    "load_family",
    "load_model",
    "mixer_spec",
    "save_family",
    "save_model",
]
