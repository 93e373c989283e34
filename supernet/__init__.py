"""The weight-sharing supernet, its exact extraction, and model storage."""

from __future__ import annotations

from .config import NetConstants
from .mixers import MIXER_SPECS, MixerSpec, mixer_spec
from .static import StaticModel
from .storage import load_model, save_model
from .supernet import Supernet

__all__ = [
    "MIXER_SPECS",
    "MixerSpec",
    "NetConstants",
    "StaticModel",
    "Supernet",
    "load_model",
    "mixer_spec",
    "save_model",
]
