"""ONNX and torch.export exports: parity at export time for every mixer, and failures caught.

Each exported file is also run here, outside the export's own check, on shapes it
was not checked on, against the PyTorch model: so a check that passed everything would
still be caught.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from conftest import make_tiny_space
from nas.core.errors import ExportError, NasError
from nas.supernet import MIXER_SPECS, Supernet
from nas.supernet import export as export_mod
from nas.supernet.export import ExportCheck, check_onnx, export_onnx, export_pt2, parity_shapes
from nas.supernet.export_forms import export_program

ONNX_MISSING = 'onnx/onnxruntime not installed: pip install -e ".[onnx]"'
# Checked here only, not by the export; (1, 1) because the exporter was told to assume
# sizes are not 1 where that only picks a view or a copy (export_forms._size_oblivious).
OWN_SHAPES = [(3, 5), (1, 1)]


def _model(mixer: str, causal: bool = True, weights_seed: int = 0):
    """A one-layer model of `mixer` whose weights are all N(0, 0.3^2).

    At the supernet's initial scale (0.02) a mixer moves the logits by less than atol, so
    an export that got a mixer wrong would still pass; at this scale it fails (a carry
    across chunks off by one chunk in the scan moves them by ~1).
    """
    space = make_tiny_space(causal=causal)
    arch = space.sample(seed=0, layer_mixers=[mixer])
    model = Supernet(space, seed=weights_seed).extract(arch).eval()
    gen = torch.Generator().manual_seed(weights_seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return model


def _tokens(shape, seed: int = 7) -> torch.Tensor:
    return torch.randint(0, 256, shape, generator=torch.Generator().manual_seed(seed))


def _reference(model, tokens) -> np.ndarray:
    with torch.no_grad():
        return model(tokens).numpy()


def _assert_checked(check: ExportCheck, fmt: str, path, model) -> None:
    assert check.format == fmt and check.path == path and path.is_file()
    assert check.passed and check.max_abs_err <= check.atol
    (b1, t1), (b2, t2) = check.shapes
    assert t1 != t2 and b1 != b2 and max(t1, t2) == model.consts.max_seq_len
    assert check.line().startswith(f"{fmt} parity: max |err| ") and check.line().endswith(": ok")
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left


# Bidirectional only where the export form has its own bidirectional path.
CASES = [(m, True) for m in MIXER_SPECS] + [
    (m, False) for m in ("linear_attention", "sliding_window", "ssm")
]


@pytest.mark.parametrize(
    ("mixer", "causal"), CASES, ids=[f"{m}-{'causal' if c else 'bidir'}" for m, c in CASES]
)
def test_every_mixer_exports_with_parity(tmp_path, one_thread, mixer, causal):
    model = _model(mixer, causal)
    program = export_program(model, model.consts.max_seq_len)  # one trace for both formats
    inputs = [_tokens(shape) for shape in OWN_SHAPES]
    wants = [_reference(model, tokens) for tokens in inputs]

    pt2 = tmp_path / "pt2" / "model.pt2"
    _assert_checked(export_pt2(model, pt2, program=program), "pt2", pt2, model)
    loaded = torch.export.load(io.BytesIO(pt2.read_bytes())).module()
    for tokens, want in zip(inputs, wants, strict=True):
        with torch.no_grad():
            np.testing.assert_allclose(loaded(tokens).numpy(), want, atol=1e-4, rtol=1e-3)

    ort = pytest.importorskip("onnxruntime", reason=ONNX_MISSING)
    onnx_path = tmp_path / "onnx" / "model.onnx"
    _assert_checked(export_onnx(model, onnx_path, program=program), "onnx", onnx_path, model)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == ["batch", "seq"]
    for tokens, want in zip(inputs, wants, strict=True):
        got = session.run(None, {"tokens": tokens.numpy()})[0]
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-3)


def _perturb_after_export(monkeypatch, model) -> None:
    """The module changes after it was traced, so the file no longer matches it."""

    def traced_then_changed(m, max_seq_len):
        program = export_program(m, max_seq_len)
        # A new tensor, not an in-place change: the program shares the module's storage.
        # Every logit moves by 1, far beyond atol.
        m.exit_head.b_out = torch.nn.Parameter(m.exit_head.b_out.detach() + 1.0)
        return program

    monkeypatch.setattr(export_mod, "export_program", traced_then_changed)


@pytest.mark.parametrize("fmt", ["onnx", "pt2"])
def test_mismatching_export_fails_and_writes_nothing(tmp_path, one_thread, monkeypatch, fmt):
    if fmt == "onnx":
        pytest.importorskip("onnxruntime", reason=ONNX_MISSING)
    model = _model("conv")
    path = tmp_path / f"model.{fmt}"
    path.write_bytes(b"previous")  # an earlier export stays as it was
    _perturb_after_export(monkeypatch, model)
    export = export_onnx if fmt == "onnx" else export_pt2
    with pytest.raises(ExportError) as info:
        export(model, path)
    message = str(info.value)
    assert "\n" not in message and f"{fmt} parity: max |err| 1.0e+00" in message
    assert "FAILED" in message and str(path) in message
    assert path.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp file left


def test_check_of_another_models_file_fails(tmp_path, one_thread):
    pytest.importorskip("onnxruntime", reason=ONNX_MISSING)
    model, other = _model("glu", weights_seed=0), _model("glu", weights_seed=1)
    assert model.arch == other.arch  # same structure, other weights
    path = tmp_path / "model.onnx"
    export_onnx(model, path)
    check = check_onnx(other, path, parity_shapes(32))
    assert not check.passed and check.max_abs_err > check.atol
    assert check.line().endswith(": FAILED")


def test_a_failed_export_is_one_line(tmp_path, monkeypatch):
    def broken(model, max_seq_len):
        raise RuntimeError("data-dependent branch\nlong traceback text")

    monkeypatch.setattr(export_mod, "export_program", broken)
    with pytest.raises(ExportError, match=r"^pt2 export of arch \w+ failed: RuntimeError: data-"):
        export_pt2(_model("pool"), tmp_path / "model.pt2")
    assert not any(tmp_path.iterdir())


def test_missing_onnxruntime_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "onnxruntime", None)  # import fails
    with pytest.raises(ExportError, match=r'pip install -e "\.\[onnx\]"'):
        export_onnx(_model("pool"), tmp_path / "model.onnx")
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("max_seq_len", [1, 33])
def test_max_seq_len_beyond_the_model_is_refused(tmp_path, max_seq_len):
    with pytest.raises(NasError, match="max_seq_len"):
        export_pt2(_model("pool"), tmp_path / "model.pt2", max_seq_len=max_seq_len)


def test_parity_shapes_differ_and_fit():
    for max_len in (2, 3, 32, 1024):
        (b1, t1), (b2, t2) = parity_shapes(max_len)
        assert (b1, b2) == (1, 2) and t1 != t2 and 1 <= t1 < t2 == max_len
