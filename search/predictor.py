"""Vectorized latency prediction: a kernel table, summed, plus a learned correction.

An arch is turned into integer codes once (`ArchCodes`): its width index and, per layer
slot, the index of its mixer choice and of its FFN width (a sentinel past the exit). The
kernel sum is then a gather and a sum over a precomputed table. What the sum of isolated
kernels misses (in-model cache effects, dispatch overhead that differs in context) is
learned by `Correction`, a ridge regression on per-family kernel times and layer counts,
fitted on whole-model measurements. Everything is numpy arrays and is stored as JSON.

The two baselines the accuracy report compares against live here too: a linear fit on
fvcore FLOPs and a linear fit on HAT-style architecture features.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from nas.search_space import MIXERS, Arch, SearchSpace
from nas.search_space.errors import ArchError

MixerKey = tuple[str, int | None, int | None]  # (mixer, heads, window)


def mixer_options(space: SearchSpace) -> list[MixerKey]:
    """Every distinct mixer choice of one layer (mixer, heads, window), in a fixed order."""
    keys: list[MixerKey] = []
    for option in space.layer_options():
        key = (option.mixer, option.heads, option.window)
        if key not in keys:
            keys.append(key)
    return keys


@dataclass(frozen=True)
class ArchCodes:
    """Archs as integer arrays; padded layer slots point at a zero-cost sentinel column."""

    d_idx: np.ndarray  # (n,) index into space.d_model
    mixer_idx: np.ndarray  # (n, max_depth) index into mixer_options; sentinel past the exit
    ffn_idx: np.ndarray  # (n, max_depth) index into space.ffn; sentinel past the exit
    depth: np.ndarray  # (n,) layers computed

    def __len__(self) -> int:
        return len(self.d_idx)


class ArchEncoder:
    """Turns archs of one space into `ArchCodes` (a dict lookup per layer, then arrays)."""

    def __init__(
        self, d_model: Sequence[int], mixers: Sequence[MixerKey], ffn: Sequence[int], max_depth: int
    ):
        self.d_model = tuple(d_model)
        self.mixers = [tuple(m) for m in mixers]
        self.ffn = tuple(ffn)
        self.max_depth = max_depth
        self._d = {d: i for i, d in enumerate(self.d_model)}
        self._m = {m: i for i, m in enumerate(self.mixers)}
        self._f = {f: i for i, f in enumerate(self.ffn)}

    @classmethod
    def for_space(cls, space: SearchSpace) -> ArchEncoder:
        return cls(space.d_model, mixer_options(space), space.ffn, space.max_depth)

    def encode(self, archs: Sequence[Arch]) -> ArchCodes:
        """Codes of `archs`. Raises `ArchError` for a choice the table has no entry for."""
        n = len(archs)
        d_idx = np.empty(n, dtype=np.intp)
        mixer_idx = np.full((n, self.max_depth), len(self.mixers), dtype=np.intp)
        ffn_idx = np.full((n, self.max_depth), len(self.ffn), dtype=np.intp)
        depth = np.empty(n, dtype=np.intp)
        m_lookup, f_lookup = self._m, self._f
        for i, arch in enumerate(archs):
            try:
                d_idx[i] = self._d[arch.d_model]
                layers = arch.layers
                if len(layers) > self.max_depth:
                    raise KeyError(f"{len(layers)} layers")
                mixer_idx[i, : len(layers)] = [
                    m_lookup[(la.mixer, la.heads, la.window)] for la in layers
                ]
                ffn_idx[i, : len(layers)] = [f_lookup[la.ffn] for la in layers]
                depth[i] = len(layers)
            except KeyError as exc:
                raise ArchError(
                    f"arch {arch} has a choice ({exc.args[0]}) outside the profiled space"
                ) from None
        return ArchCodes(d_idx, mixer_idx, ffn_idx, depth)


@dataclass
class KernelTable:
    """Isolated-op latencies, ms, for one workload. A trailing zero column is the sentinel."""

    embed_ms: np.ndarray  # (n_d,) token + position embedding
    exit_ms: np.ndarray  # (n_d,) exit LayerNorm + unembedding
    mixer_ms: np.ndarray  # (n_d, n_mixer_options + 1) pre-norm, mixer and residual add
    ffn_ms: np.ndarray  # (n_d, n_ffn + 1) pre-norm, FFN and residual add; 0 for width 0

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k).tolist() for k in ("embed_ms", "exit_ms", "mixer_ms", "ffn_ms")}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> KernelTable:
        return cls(
            **{
                k: np.asarray(data[k], dtype=np.float64)
                for k in ("embed_ms", "exit_ms", "mixer_ms", "ffn_ms")
            }
        )


def _mixer_families(mixers: Sequence[MixerKey]) -> list[str]:
    return [name for name in MIXERS if any(m[0] == name for m in mixers)]


def correction_features(
    table: KernelTable, codes: ArchCodes, encoder: ArchEncoder
) -> tuple[np.ndarray, list[str]]:
    """(n, k) design matrix of the correction, and the column names.

    Columns: embed+exit ms; per mixer family the summed isolated ms of its layers; the
    summed FFN ms; per mixer family its layer count; the count of layers with an FFN; 1.
    The first group carries the kernel sum (their coefficients start at 1), the counts
    carry per-layer overheads that only show up inside a whole model.
    """
    families = _mixer_families(encoder.mixers)
    family_of = np.array([families.index(m[0]) for m in encoder.mixers] + [-1])  # sentinel -1
    has_ffn = np.array([f > 0 for f in encoder.ffn] + [False])  # sentinel: no FFN
    d = codes.d_idx
    mix_ms = table.mixer_ms[d[:, None], codes.mixer_idx]  # (n, L)
    ffn_ms = table.ffn_ms[d[:, None], codes.ffn_idx]  # (n, L)
    fam = family_of[codes.mixer_idx]  # (n, L)
    cols = [table.embed_ms[d] + table.exit_ms[d]]
    names = ["embed_exit_ms"]
    for j, name in enumerate(families):
        if name != "skip":  # a skip layer runs no mixer kernel
            cols.append(np.where(fam == j, mix_ms, 0.0).sum(axis=1))
            names.append(f"{name}_ms")
    cols.append(ffn_ms.sum(axis=1))
    names.append("ffn_ms")
    for j, name in enumerate(families):
        cols.append((fam == j).sum(axis=1).astype(np.float64))
        names.append(f"n_{name}")
    cols.append(has_ffn[codes.ffn_idx].sum(axis=1).astype(np.float64))
    names.append("n_ffn")
    cols.append(np.ones(len(codes)))
    names.append("const")
    return np.stack(cols, axis=1), names


@dataclass
class LinearModel:
    """y ≈ X @ (prior + coef), fitted for relative error, with a ridge pull towards `prior`.

    The prior lets the correction start from "the kernel sum is right" (coefficient 1 on
    the ms columns, 0 elsewhere); with few samples it stays there.
    """

    coef: np.ndarray  # (k,) coefficients on the raw (unscaled) features
    names: list[str]  # (k,) feature names
    alpha: float  # ridge strength chosen by leave-one-out cross-validation

    def predict(self, X: np.ndarray) -> np.ndarray:
        return X @ self.coef

    def to_dict(self) -> dict[str, Any]:
        return {"coef": self.coef.tolist(), "names": list(self.names), "alpha": self.alpha}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LinearModel:
        return cls(
            np.asarray(data["coef"], dtype=np.float64), list(data["names"]), float(data["alpha"])
        )

    @classmethod
    def fit(
        cls,
        X: np.ndarray,
        y: np.ndarray,
        names: Sequence[str],
        prior: np.ndarray | None = None,
        alphas: Sequence[float] = (1e-6, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0),
    ) -> LinearModel:
        """Fit minimising sum(((X b - y) / y)^2) + alpha * |scaled(b - prior)|^2.

        Dividing each row by its target makes the fit minimise relative error, the error
        the accuracy report scores. Columns are scaled to unit RMS so one alpha fits all;
        alpha is picked by exact leave-one-out error of the relative residuals.
        """
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        if len(y) == 0 or np.any(y <= 0):
            raise ValueError("need at least one positive target latency")
        prior = np.zeros(X.shape[1]) if prior is None else np.asarray(prior, dtype=np.float64)
        Xw = X / y[:, None]  # relative-error rows
        rw = 1.0 - Xw @ prior  # residual target after the prior, relative
        scale = np.sqrt((Xw**2).mean(axis=0))
        scale[scale == 0] = 1.0
        Z = Xw / scale
        best: tuple[float, float, np.ndarray] | None = None
        for alpha in alphas:
            A = Z.T @ Z + alpha * np.eye(Z.shape[1])
            A_inv = np.linalg.pinv(A)
            beta = A_inv @ Z.T @ rw
            hat_diag = np.einsum("ij,jk,ik->i", Z, A_inv, Z)
            resid = (rw - Z @ beta) / np.clip(1.0 - hat_diag, 1e-6, None)  # LOO residuals
            loo = float(np.mean(resid**2))
            if best is None or loo < best[0]:
                best = (loo, alpha, beta)
        _, alpha, beta = best
        return cls(prior + beta / scale, list(names), float(alpha))


class LatencyPredictor:
    """Predicts the latency (ms, one forward pass) of archs for one profiled workload."""

    def __init__(
        self, encoder: ArchEncoder, table: KernelTable, correction: LinearModel | None = None
    ):
        self.encoder = encoder
        self.table = table
        self.correction = correction

    def codes(self, archs: Sequence[Arch]) -> ArchCodes:
        return self.encoder.encode(archs)

    def kernel_sum(self, archs: Sequence[Arch] | ArchCodes) -> np.ndarray:
        """(n,) sum of the isolated kernel latencies of each arch, ms."""
        codes = archs if isinstance(archs, ArchCodes) else self.codes(archs)
        t, d = self.table, codes.d_idx
        layers = t.mixer_ms[d[:, None], codes.mixer_idx] + t.ffn_ms[d[:, None], codes.ffn_idx]
        return t.embed_ms[d] + t.exit_ms[d] + layers.sum(axis=1)

    def features(self, archs: Sequence[Arch] | ArchCodes) -> tuple[np.ndarray, list[str]]:
        codes = archs if isinstance(archs, ArchCodes) else self.codes(archs)
        return correction_features(self.table, codes, self.encoder)

    def predict(self, archs: Sequence[Arch] | ArchCodes) -> np.ndarray:
        """(n,) predicted latency of each arch, ms; the kernel sum if no correction is fitted.

        Raises `ArchError` for an arch with a choice outside the profiled space.
        """
        codes = archs if isinstance(archs, ArchCodes) else self.codes(archs)
        if self.correction is None:
            return self.kernel_sum(codes)
        X, _ = self.features(codes)
        # A correction never predicts below a tenth of the kernel sum: a safety floor for
        # archs far outside the fitted range, which would otherwise go negative.
        return np.maximum(self.correction.predict(X), 0.1 * self.kernel_sum(codes))

    def predict_one(self, arch: Arch) -> float:
        return float(self.predict([arch])[0])

    def fit_correction(self, archs: Sequence[Arch], measured_ms: np.ndarray) -> LinearModel:
        """Fit the correction on whole-model measurements (ms) of `archs`; keep and return it."""
        X, names = self.features(archs)
        prior = np.array([1.0 if n.endswith("_ms") else 0.0 for n in names])
        self.correction = LinearModel.fit(X, np.asarray(measured_ms), names, prior)
        return self.correction

    def to_dict(self) -> dict[str, Any]:
        enc = self.encoder
        return {
            "d_model": list(enc.d_model),
            "mixers": [list(m) for m in enc.mixers],
            "ffn": list(enc.ffn),
            "max_depth": enc.max_depth,
            "table": self.table.to_dict(),
            "correction": self.correction.to_dict() if self.correction else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LatencyPredictor:
        encoder = ArchEncoder(
            data["d_model"], [tuple(m) for m in data["mixers"]], data["ffn"], data["max_depth"]
        )
        correction = data.get("correction")
        return cls(
            encoder,
            KernelTable.from_dict(data["table"]),
            LinearModel.from_dict(correction) if correction else None,
        )


# ------------------------------------------------------------------ baselines
def hat_features(space: SearchSpace, archs: Sequence[Arch]) -> tuple[np.ndarray, list[str]]:
    """HAT-style architecture features (widths, depth, heads, mixer counts), plus a 1.

    HAT predicts from embedding dim, layer count, average hidden dim and average heads;
    ours adds totals and a count per mixer, as a strong linear baseline should.
    """
    names = [
        "d_model",
        "depth",
        "sum_heads",
        "mean_heads",
        "sum_ffn",
        "mean_ffn",
        "mean_window",
        *(f"n_{m}" for m in space.mixers),
        "const",
    ]
    rows = []
    for arch in archs:
        heads = [la.heads or 0 for la in arch.layers]
        ffn = [la.ffn for la in arch.layers]
        windows = [la.window or 0 for la in arch.layers]
        counts = [sum(la.mixer == m for la in arch.layers) for m in space.mixers]
        rows.append(
            [
                arch.d_model,
                arch.depth,
                sum(heads),
                np.mean(heads),
                sum(ffn),
                np.mean(ffn),
                np.mean(windows),
                *counts,
                1.0,
            ]
        )
    return np.asarray(rows, dtype=np.float64).reshape(len(archs), len(names)), names


def flops_features(flops: Sequence[int]) -> tuple[np.ndarray, list[str]]:
    """[FLOPs, 1] rows for the FLOPs-linear baseline (FLOPs in units of 1e6 for conditioning)."""
    f = np.asarray(flops, dtype=np.float64) / 1e6
    return np.stack([f, np.ones_like(f)], axis=1), ["mflops", "const"]


def arch_flops_many(
    space: SearchSpace, archs: Sequence[Arch], batch: int, seq_len: int
) -> list[int]:
    """fvcore's FLOP count (one multiply-add = one FLOP) of each arch at (batch, seq_len).

    Taken from the closed form `analytic_flops`, which equals fvcore's trace-based
    `arch_flops` by test (tests/search/test_arch_flops.py) and costs microseconds instead
    of the ~0.5 s of a trace per arch.
    """
    from nas.search.flops import analytic_flops

    return [int(analytic_flops(space, a, batch, seq_len)) for a in archs]
