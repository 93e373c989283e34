"""Latency budgets as users write them: `10ms`, `2.5ms`, `500us`, `0.01s`, `10 ms`."""

from __future__ import annotations

import math
import re

from nas.core.errors import BudgetError

_UNITS_MS = {"ms": 1.0, "us": 1e-3, "µs": 1e-3, "s": 1e3}
_BUDGET = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|us|µs|s)\s*$")


def parse_budget(text: str) -> float:
    """The budget `text` names, in milliseconds.

    A positive number followed by a unit (ms, us or s), with or without a space between.
    Raises `BudgetError` naming the text and the accepted forms otherwise.
    """
    match = _BUDGET.match(str(text))
    value = float(match.group(1)) * _UNITS_MS[match.group(2)] if match else math.nan
    if not match or not value > 0 or not math.isfinite(value):
        raise BudgetError(
            f"--budget {text!r}: not a latency; give a positive number and a unit, "
            "e.g. 10ms, 2.5ms, 500us or 0.01s"
        )
    return value


def format_ms(ms: float) -> str:
    """A latency for humans: `9.84 ms`, `0.412 ms`."""
    return f"{ms:.3g} ms" if ms < 1 else f"{ms:.2f} ms"
