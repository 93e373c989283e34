"""Bench modules for tests, imported the way the bench scripts import them.

A bench script imports its sibling modules by plain name (`from train_accounting import
...`), because Python puts the script's folder, bench/, on sys.path. `bench_module`
puts bench/ on sys.path the same way (at the end, so that it shadows nothing) and
imports one of them.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

BENCH_DIR = Path(__file__).resolve().parents[1] / "bench"


def bench_module(name: str) -> ModuleType:
    """The bench module bench/NAME.py, imported by its plain name as the scripts do."""
    if str(BENCH_DIR) not in sys.path:
        sys.path.append(str(BENCH_DIR))
    return importlib.import_module(name)
