"""The parity check of an exported model: its outputs against the PyTorch module's.

Random tokens of each checked shape go through both; every logit must satisfy
|export - torch| <= atol + rtol * |torch| (float32 logits; defaults atol 1e-4, rtol 1e-3,
about 100 times the largest error seen on the default space's archs, which is ~1e-6).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nas.core.errors import ExportError

from .static import StaticModel

ATOL = 1e-4  # absolute tolerance of the parity check, logits (float32)
RTOL = 1e-3  # relative tolerance of the parity check

Shape = tuple[int, int]  # (batch, tokens)


@dataclass(frozen=True)
class ExportCheck:
    """The parity check of one exported file against the PyTorch module."""

    format: str  # "onnx" or "pt2"
    path: Path  # the exported file
    shapes: tuple[Shape, ...]  # (batch, tokens) of each random input checked
    max_abs_err: float  # max |export - torch| over every logit of every input
    atol: float  # absolute tolerance
    rtol: float  # relative tolerance (of |torch|)
    passed: bool  # every logit within atol + rtol * |torch|

    def line(self) -> str:
        """One line, e.g. 'onnx parity: max |err| 3.1e-06 on (1, 37) and (2, 64) (atol
        1e-04, rtol 1e-03): ok'."""
        shapes = " and ".join(f"({b}, {t})" for b, t in self.shapes)
        verdict = "ok" if self.passed else "FAILED"
        return (
            f"{self.format} parity: max |err| {self.max_abs_err:.1e} on {shapes} "
            f"(atol {self.atol:.0e}, rtol {self.rtol:.0e}): {verdict}"
        )

    def to_dict(self) -> dict:
        return {
            "format": self.format,
            "path": str(self.path),
            "shapes": [list(s) for s in self.shapes],
            "max_abs_err": self.max_abs_err,
            "atol": self.atol,
            "rtol": self.rtol,
            "passed": self.passed,
            "line": self.line(),
        }


def parity_shapes(max_seq_len: int) -> tuple[Shape, Shape]:
    """The two checked shapes: (1, max_seq_len // 2 + 1) and (2, max_seq_len).

    The first length is odd for even maxima, so it is rarely a whole number of chunks or
    windows and the padding paths are exercised; the second is the longest accepted.
    """
    return (1, max(1, min(max_seq_len - 1, max_seq_len // 2 + 1))), (2, max_seq_len)


def check_shapes(shapes: Sequence[Shape] | None, max_seq_len: int) -> tuple[Shape, ...]:
    """`shapes` (default `parity_shapes`), each checked to fit; `ExportError` if one does not."""
    shapes = tuple(parity_shapes(max_seq_len) if shapes is None else shapes)
    for batch, seq_len in shapes:
        if batch < 1 or not 1 <= seq_len <= max_seq_len:
            raise ExportError(
                f"check shape ({batch}, {seq_len}): need batch >= 1 and 1 <= tokens <= "
                f"{max_seq_len}"
            )
    return shapes


def compare(
    fmt: str,
    path: Path,
    model: StaticModel,
    run: Callable[[torch.Tensor], np.ndarray],
    shapes: Sequence[Shape],
    atol: float,
    rtol: float,
    seed: int,
) -> ExportCheck:
    """Run `model` and `run` (the exported file) on seeded random tokens of each shape.

    Returns the check; raises `ExportError` if an output's shape differs from the model's.
    """
    gen = torch.Generator().manual_seed(seed)
    errors, passed = [0.0], True
    for batch, seq_len in shapes:
        tokens = torch.randint(0, model.consts.vocab_size, (batch, seq_len), generator=gen)
        with torch.no_grad():
            want = model(tokens).numpy()  # (B, T, V)
            got = np.asarray(run(tokens))
        if got.shape != want.shape:
            raise ExportError(
                f"{path}: {fmt} output has shape {got.shape} for input ({batch}, {seq_len}), "
                f"the model's is {want.shape}"
            )
        err = np.abs(got.astype(np.float64) - want)  # NaN where either is NaN
        errors.append(float(err.max()))
        passed = passed and bool(np.all(err <= atol + rtol * np.abs(want)))
    worst = float(np.max(errors))  # NaN if any output was NaN
    return ExportCheck(fmt, path, tuple(shapes), worst, atol, rtol, passed)


def require_passed(check: ExportCheck, path: Path) -> ExportCheck:
    """`check`, or `ExportError` naming the final `path` if it failed."""
    if not check.passed:
        raise ExportError(
            f"{path}: {check.line()}; the exported model disagrees with the PyTorch module, "
            "so it was not written"
        )
    return check
