"""Export an extracted model to ONNX or a torch.export program, checked at export time.

Both formats trace the model once with torch.export (a dynamic batch >= 1 and a dynamic
sequence length 1..max_seq_len; see export_forms.py for the three kernels that need an
export form), then write the file atomically. Before the file is moved into place it is
read back and run on random tokens of two shapes, (1, T_a) and (2, T_b) with T_a != T_b,
against the PyTorch module: with onnxruntime (CPUExecutionProvider) for ONNX, with
`torch.export.load` for pt2. Every logit must satisfy |export - torch| <= atol + rtol *
|torch| (float32; defaults atol 1e-4, rtol 1e-3). A failed export or check raises
`ExportError` with one line, and leaves no file behind (a file already at the path stays
as it was).

    check = export_onnx(model, "out/model.onnx")
    print(check.line())  # onnx parity: max |err| 3.1e-07 on (1, 513) and (2, 1024) ...
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.export import ExportedProgram

from nas.core.atomic import atomic_write_with
from nas.core.errors import ExportError

from .export_check import (
    ATOL,
    RTOL,
    ExportCheck,
    Shape,
    check_shapes,
    compare,
    parity_shapes,
    require_passed,
)
from .export_forms import export_program
from .static import StaticModel

ONNX_INSTALL = 'pip install -e ".[onnx]"'
AXIS_NAMES = ("batch", "seq")  # names of the ONNX input's dynamic axes


# ------------------------------------------------------------------ ONNX
def export_onnx(
    model: StaticModel,
    path: str | Path,
    max_seq_len: int | None = None,
    *,
    shapes: Sequence[Shape] | None = None,
    atol: float = ATOL,
    rtol: float = RTOL,
    seed: int = 0,
    opset: int | None = None,
    program: ExportedProgram | None = None,
) -> ExportCheck:
    """Write `model` as one ONNX file (input "tokens" (batch, seq) int64, output "logits"
    (batch, seq, vocab) float32) and check it with onnxruntime before moving it into place.

    max_seq_len: longest sequence the file accepts, <= the model's own (the default).
    shapes: (batch, tokens) inputs of the check; default `parity_shapes(max_seq_len)`.
    seed: of the random tokens. opset: ONNX opset (default: torch.onnx's).
    program: an `export_program(model, max_seq_len)` already made (export_pt2 reuses it).
    Raises `ExportError` (one line) when onnx, onnxscript or onnxruntime are missing, the
    export fails, or the check fails; no file is left at `path` then.
    """
    _require_onnx()
    path = Path(path)
    max_seq_len = _max_len(model, max_seq_len)
    shapes = check_shapes(shapes, max_seq_len)
    program = program or _traced(model, max_seq_len, "onnx")
    checks: list[ExportCheck] = []

    def write(tmp: Path) -> None:
        with _quiet():
            try:
                onnx_program = torch.onnx.export(
                    program,
                    (),
                    dynamo=True,
                    input_names=["tokens"],
                    output_names=["logits"],
                    opset_version=opset,
                    verbose=False,
                )
                _name_axes(onnx_program.model, program)
                onnx_program.save(tmp, external_data=False)
            except Exception as exc:  # noqa: BLE001 - any exporter failure is one line
                raise ExportError(_failed("onnx", model, exc)) from exc
        checks.append(require_passed(check_onnx(model, tmp, shapes, atol, rtol, seed), path))

    atomic_write_with(path, write)
    return dataclasses.replace(checks[0], path=path)


def check_onnx(
    model: StaticModel,
    path: str | Path,
    shapes: Sequence[Shape],
    atol: float = ATOL,
    rtol: float = RTOL,
    seed: int = 0,
) -> ExportCheck:
    """Run the ONNX file at `path` with onnxruntime (CPU) against `model` on random tokens
    of each shape. Returns the check (`passed` False on a mismatch); raises `ExportError`
    when onnxruntime is missing or cannot load or run the file."""
    _require_onnx()
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

        def run(tokens: torch.Tensor) -> np.ndarray:
            return session.run(None, {"tokens": tokens.numpy()})[0]

        return compare("onnx", Path(path), model, run, shapes, atol, rtol, seed)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own unrelated types
        if isinstance(exc, ExportError):
            raise
        raise ExportError(f"{path}: onnxruntime cannot run it ({_first_line(exc)})") from exc


# ------------------------------------------------------------------ torch.export
def export_pt2(
    model: StaticModel,
    path: str | Path,
    max_seq_len: int | None = None,
    *,
    shapes: Sequence[Shape] | None = None,
    atol: float = ATOL,
    rtol: float = RTOL,
    seed: int = 0,
    program: ExportedProgram | None = None,
) -> ExportCheck:
    """Write `model` as a torch.export program (`torch.export.save`), reload it with
    `torch.export.load` and check it before moving it into place.

    The program takes (batch, seq) int64 tokens, batch >= 1 and 1 <= seq <= max_seq_len;
    `torch.export.load(path).module()(tokens)` runs it. Arguments as `export_onnx`.
    Raises `ExportError` (one line) when the export or the check fails; no file is left
    at `path` then.
    """
    path = Path(path)
    max_seq_len = _max_len(model, max_seq_len)
    shapes = check_shapes(shapes, max_seq_len)
    program = program or _traced(model, max_seq_len, "pt2")
    checks: list[ExportCheck] = []

    def write(tmp: Path) -> None:
        # Through a buffer: torch.export.save/load want a name ending in .pt2, and the
        # temp file's does not.
        buffer = io.BytesIO()
        with _quiet():
            try:
                torch.export.save(program, buffer)
            except Exception as exc:  # noqa: BLE001 - any serialiser failure is one line
                raise ExportError(_failed("pt2", model, exc)) from exc
        tmp.write_bytes(buffer.getvalue())
        checks.append(require_passed(check_pt2(model, tmp, shapes, atol, rtol, seed), path))

    atomic_write_with(path, write)
    return dataclasses.replace(checks[0], path=path)


def check_pt2(
    model: StaticModel,
    path: str | Path,
    shapes: Sequence[Shape],
    atol: float = ATOL,
    rtol: float = RTOL,
    seed: int = 0,
) -> ExportCheck:
    """Load the program at `path` with `torch.export.load` and run it against `model` on
    random tokens of each shape. Returns the check; raises `ExportError` when the file
    cannot be loaded or run."""
    try:
        with _quiet():
            loaded = torch.export.load(io.BytesIO(Path(path).read_bytes())).module()

        def run(tokens: torch.Tensor) -> np.ndarray:
            with torch.no_grad():
                return loaded(tokens).numpy()

        return compare("pt2", Path(path), model, run, shapes, atol, rtol, seed)
    except Exception as exc:  # noqa: BLE001 - load and run raise many unrelated types
        if isinstance(exc, ExportError):
            raise
        raise ExportError(f"{path}: torch.export.load cannot run it ({_first_line(exc)})") from exc


# ------------------------------------------------------------------ shared
def trace(
    model: StaticModel, max_seq_len: int | None = None, fmt: str = "export"
) -> ExportedProgram:
    """The torch.export program both formats are written from; pass it as `program=` to
    `export_onnx` and `export_pt2` to trace a model once for both. `ExportError` on failure."""
    return _traced(model, _max_len(model, max_seq_len), fmt)


def _traced(model: StaticModel, max_seq_len: int, fmt: str) -> ExportedProgram:
    if any(p.device.type != "cpu" for p in model.parameters()):
        raise ExportError(f"{fmt} export runs on the CPU: move the model there (model.cpu())")
    try:
        with _quiet():
            return export_program(model, max_seq_len)
    except Exception as exc:  # noqa: BLE001 - torch.export raises many unrelated types
        raise ExportError(_failed(fmt, model, exc)) from exc


def _max_len(model: StaticModel, max_seq_len: int | None) -> int:
    if not isinstance(model, StaticModel):
        raise TypeError(f"export expects an extracted model (net.extract(arch)), got {model!r}")
    limit = model.consts.max_seq_len
    if max_seq_len is None:
        max_seq_len = limit
    if not 2 <= max_seq_len <= limit:
        raise ExportError(
            f"max_seq_len {max_seq_len}: must be 2..{limit} (the model's position table)"
        )
    return max_seq_len


def _name_axes(onnx_model, program: ExportedProgram) -> None:
    """Rename the program's symbols for batch and sequence to AXIS_NAMES in the ONNX graph."""
    import onnx_ir as ir

    (user_input,) = program.graph_signature.user_inputs
    tokens = next(n for n in program.graph.nodes if n.name == user_input)
    names = {str(s): name for s, name in zip(tokens.meta["val"].shape, AXIS_NAMES, strict=True)}
    graph = onnx_model.graph
    values = [*graph.inputs, *graph.outputs]
    values += [v for node in ir.traversal.RecursiveGraphIterator(graph) for v in node.outputs]
    for value in values:
        if value.shape is not None:
            dims = [
                names.get(str(d), d) if isinstance(d, ir.SymbolicDim) else d for d in value.shape
            ]
            value.shape = ir.Shape(dims)


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise ExportError(
            f"ONNX export needs onnx, onnxscript and onnxruntime ({exc.name} is missing): "
            f"{ONNX_INSTALL}"
        ) from None


def _failed(fmt: str, model: StaticModel, exc: BaseException) -> str:
    return f"{fmt} export of arch {model.arch.id} failed: {_first_line(exc)}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"[:300]


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporters' warnings and log lines (e.g. 'torchvision is not installed'),
    which say nothing about this model; failures still raise."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "torch._export")]
    levels = [logger.level for logger in loggers]
    try:
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


__all__ = [
    "ATOL",
    "RTOL",
    "ExportCheck",
    "check_onnx",
    "check_pt2",
    "export_onnx",
    "export_pt2",
    "parity_shapes",
]
