"""Vectorized latency prediction: a kernel table, summed, plus a learned correction.

An arch is turned into integer codes once (`ArchCodes`): its width index and, per layer
slot, the index of its mixer choice and of its FFN width (a sentinel past the exit). The
kernel sum is then a gather and a sum over a precomputed table. What the sum of isolated
kernels misses (in-model cache effects, dispatch overhead that differs in context) is
learned by `Correction`, a ridge regression on per-family kernel times and layer counts,
fitted on whole-model measurements. Everything is numpy arrays and is stored as JSON.

The features of the two baselines the accuracy report compares against are in
`baselines.py`.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from nas.core.errors import ArchError
from nas.search_space import MIXERS, Arch, SearchSpace

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


# Part of every profile's key: a cached profile fitted another way is rebuilt, not reused.
# 2: coefficients bounded below (`correction_design`).
FIT_VERSION = 2
MIN_ENTRY = 0.75  # lowest coefficient of a kernel-table entry's ms (prior 1)
MIN_SCALE = -0.25  # lowest family-wide scale: with MIN_ENTRY, an op keeps >= 0.5x its time

ENTRY, SHARED = 1, 0  # penalty groups of the correction's columns (see LinearModel.fit)


@dataclass(frozen=True)
class Design:
    """The correction's design matrix for some archs, with what each column means."""

    X: np.ndarray  # (n, k) features
    names: list[str]  # (k,) column names
    groups: np.ndarray  # (k,) ENTRY or SHARED
    prior: np.ndarray  # (k,) coefficients of the plain kernel sum (1 on entries, 0 elsewhere)
    lower: np.ndarray  # (k,) lower bound of each coefficient (-inf: none)


def correction_design(table: KernelTable, codes: ArchCodes, encoder: ArchEncoder) -> Design:
    """The features the correction is fitted on, for archs given as codes.

    ENTRY columns, one per kernel-table entry: the ms that entry contributes to the arch
    (its isolated latency times how often the arch uses it). With coefficients of 1 they
    sum to the kernel sum; a fitted coefficient of 1.1 says "this op runs 10% slower in a
    whole model than alone", or that its isolated figure was measured 10% low.

    SHARED columns, for what is common to many entries: the summed ms of each mixer
    family, of the FFNs and of embedding + exit (a family-wide scale); the count of
    layers of each mixer family and with an FFN (per-layer overheads that only appear
    inside a model); and a one-hot of the width (per-width fixed costs). `Design.lower`
    bounds the coefficients to what is physically plausible (see the end).
    """
    n, d = len(codes), codes.d_idx
    n_d, n_m = table.mixer_ms.shape
    n_f = table.ffn_ms.shape[1]
    depth = codes.mixer_idx.shape[1]
    rows = np.repeat(np.arange(n), depth)
    mix_ms = table.mixer_ms[d[:, None], codes.mixer_idx]  # (n, L)
    ffn_ms = table.ffn_ms[d[:, None], codes.ffn_idx]  # (n, L)
    entry_mix = np.zeros((n, n_d * n_m))
    np.add.at(entry_mix, (rows, (d[:, None] * n_m + codes.mixer_idx).ravel()), mix_ms.ravel())
    entry_ffn = np.zeros((n, n_d * n_f))
    np.add.at(entry_ffn, (rows, (d[:, None] * n_f + codes.ffn_idx).ravel()), ffn_ms.ravel())
    entry_ends = np.zeros((n, n_d))
    entry_ends[np.arange(n), d] = table.embed_ms[d] + table.exit_ms[d]

    families = _mixer_families(encoder.mixers)
    family_of = np.array([families.index(m[0]) for m in encoder.mixers] + [-1])  # sentinel -1
    fam = family_of[codes.mixer_idx]  # (n, L)
    has_ffn = np.array([f > 0 for f in encoder.ffn] + [False])  # sentinel: no FFN
    shared = [
        np.where(fam == j, mix_ms, 0.0).sum(axis=1)
        for j, name in enumerate(families)
        if name != "skip"
    ]
    shared += [ffn_ms.sum(axis=1), entry_ends.sum(axis=1)]
    shared += [(fam == j).sum(axis=1).astype(np.float64) for j in range(len(families))]
    shared += [has_ffn[codes.ffn_idx].sum(axis=1).astype(np.float64)]
    shared += list(np.eye(n_d)[d].T)

    mixer_label = [f"{m}/h{h}/w{w}" for m, h, w in encoder.mixers] + ["none"]
    ffn_label = [f"ffn{f}" for f in encoder.ffn] + ["none"]
    names = [f"ms[d{dd} {mixer_label[j]}]" for dd in encoder.d_model for j in range(n_m)]
    names += [f"ms[d{dd} {ffn_label[j]}]" for dd in encoder.d_model for j in range(n_f)]
    names += [f"ms[d{dd} embed+exit]" for dd in encoder.d_model]
    n_entry = len(names)
    names += [f"{name}_ms" for name in families if name != "skip"]
    names += ["ffn_ms", "embed_exit_ms"]
    names += [f"n_{name}" for name in families] + ["n_ffn"]
    names += [f"d{dd}" for dd in encoder.d_model]
    X = np.concatenate([entry_mix, entry_ffn, entry_ends, np.stack(shared, axis=1)], axis=1)
    groups = np.array([ENTRY] * n_entry + [SHARED] * (len(names) - n_entry))
    prior = (groups == ENTRY).astype(np.float64)
    # Physical bounds. A layer's or a width's overhead inside a model is a cost, never a
    # saving (counts and width one-hots >= 0), and an op inside a model takes at least half
    # its isolated time (entry >= 0.75 plus family scale >= -0.25), so a prediction is at
    # least half the kernel sum. Left free, a fit on a quick profile's 24 noisy archs
    # made linear attention cost -0.03x its isolated time (0.23 ms predicted for two
    # linear-attention layers whose kernel sum is 1.96 ms). bench_latency_predictor.py
    # prints the bounded fit beside the unbounded one on the same measurements.
    shared_names = names[n_entry:]
    lower = np.full(len(names), -np.inf)
    lower[:n_entry] = MIN_ENTRY
    lower[n_entry:][[n.endswith("_ms") for n in shared_names]] = MIN_SCALE
    costs = [n.startswith("n_") or (n[0] == "d" and n[1:].isdigit()) for n in shared_names]
    lower[n_entry:][costs] = 0.0
    return Design(X, names, groups, prior, lower)


@dataclass
class LinearModel:
    """y ≈ X @ coef, fitted for relative error, with a ridge pull towards a prior.

    For the correction, the prior is the plain kernel sum (coefficient 1 on each entry's
    ms, 0 elsewhere): with few or noisy samples the fit stays close to it.
    """

    coef: np.ndarray  # (k,) coefficients on the raw (unscaled) features
    names: list[str]  # (k,) feature names
    alphas: list[float]  # ridge strength per penalty group, chosen by cross-validation

    def predict(self, X: np.ndarray) -> np.ndarray:
        return X @ self.coef

    def to_dict(self) -> dict[str, Any]:
        return {"coef": self.coef.tolist(), "names": list(self.names), "alphas": self.alphas}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LinearModel:
        return cls(
            np.asarray(data["coef"], dtype=np.float64),
            list(data["names"]),
            [float(a) for a in data["alphas"]],
        )

    @classmethod
    def fit(
        cls,
        X: np.ndarray,
        y: np.ndarray,
        names: Sequence[str],
        prior: np.ndarray | None = None,
        groups: np.ndarray | None = None,
        grid: Sequence[float] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 1e2, 1e6),
        lower: np.ndarray | None = None,
    ) -> LinearModel:
        """Fit minimising sum(((X b - y) / y)^2) + sum_g alpha_g |scaled(b_g - prior_g)|^2.

        Dividing each row by its target makes the fit minimise relative error, the error
        the accuracy report scores. SHARED columns (group 0, the default) are scaled to
        unit RMS so that one alpha suits them all; ENTRY columns (group 1) are not, so
        their penalty is on the relative change of each entry. One alpha per group is
        picked from `grid` by ten-fold cross-validation of the relative residuals.

        Each coefficient ends at or above its `lower` bound (default: none): after the
        alphas are chosen, a column fitted below its bound is pinned there and the rest
        refitted, until none is (an active-set loop; at most one round per column).
        """
        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        if len(y) == 0 or np.any(y <= 0):
            raise ValueError("need at least one positive target latency")
        k = X.shape[1]
        prior = np.zeros(k) if prior is None else np.asarray(prior, dtype=np.float64)
        groups = np.full(k, SHARED) if groups is None else np.asarray(groups)
        Xw = X / y[:, None]  # relative-error rows
        rw = 1.0 - Xw @ prior  # what the prior leaves unexplained, relative
        scale = np.where(groups == SHARED, np.sqrt((Xw**2).mean(axis=0)), 1.0)
        scale[scale == 0] = 1.0
        Z = Xw / scale
        present = sorted(set(groups.tolist()))
        # Ten folds, fixed by a seeded permutation. Exact leave-one-out is unusable here:
        # with more columns than archs a weak ridge interpolates, every leverage is ~1,
        # and the LOO shortcut then divides ~0 by ~0.
        folds = np.random.default_rng(0).permutation(len(y)) % min(10, len(y))

        def penalty_of(alphas: Sequence[float]) -> np.ndarray:
            penalty = np.zeros(k)
            for g, a in zip(present, alphas, strict=True):
                penalty[groups == g] = a
            return penalty

        best: tuple[float, list[float]] | None = None
        for alphas in itertools.product(grid, repeat=len(present)):
            penalty = penalty_of(alphas)
            errors = []
            for f in range(folds.max() + 1):
                train, test = folds != f, folds == f
                if not train.any():
                    continue
                beta = _ridge(Z[train], rw[train], penalty)
                errors.append((rw[test] - Z[test] @ beta) ** 2)
            score = float(np.mean(np.concatenate(errors))) if errors else 0.0
            if best is None or score < best[0]:
                best = (score, [float(a) for a in alphas])
        _, alphas = best
        penalty = penalty_of(alphas)
        lower = np.full(k, -np.inf) if lower is None else np.asarray(lower, dtype=np.float64)
        free = np.ones(k, bool)
        while True:
            beta = np.zeros(k)
            beta[~free] = (lower[~free] - prior[~free]) * scale[~free]  # pinned at the bound
            left = rw - Z[:, ~free] @ beta[~free]
            beta[free] = _ridge(Z[:, free], left, penalty[free])
            below = free & (prior + beta / scale < lower)
            if not below.any():
                return cls(prior + beta / scale, list(names), alphas)
            free &= ~below


def _ridge(Z: np.ndarray, r: np.ndarray, penalty: np.ndarray) -> np.ndarray:
    """argmin |Z b - r|^2 + sum(penalty * b^2), by a least-squares solve (stable for any shape)."""
    root = np.sqrt(penalty)
    A = np.concatenate([Z, np.diag(root)[root > 0]], axis=0)
    rhs = np.concatenate([r, np.zeros(int((root > 0).sum()))])
    return np.linalg.lstsq(A, rhs, rcond=None)[0]


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

    def design(self, archs: Sequence[Arch] | ArchCodes) -> Design:
        codes = archs if isinstance(archs, ArchCodes) else self.codes(archs)
        return correction_design(self.table, codes, self.encoder)

    def predict(self, archs: Sequence[Arch] | ArchCodes) -> np.ndarray:
        """(n,) predicted latency of each arch, ms; the kernel sum if no correction is fitted.

        Raises `ArchError` for an arch with a choice outside the profiled space.
        """
        codes = archs if isinstance(archs, ArchCodes) else self.codes(archs)
        if self.correction is None:
            return self.kernel_sum(codes)
        # A correction never predicts below a tenth of the kernel sum: a safety floor for
        # archs far outside the fitted range, which would otherwise go negative.
        fitted = self.correction.predict(self.design(codes).X)
        return np.maximum(fitted, 0.1 * self.kernel_sum(codes))

    def predict_one(self, arch: Arch) -> float:
        return float(self.predict([arch])[0])

    def fit_correction(self, archs: Sequence[Arch], measured_ms: np.ndarray) -> LinearModel:
        """Fit the correction on whole-model measurements (ms) of `archs`; keep and return it."""
        design = self.design(archs)
        self.correction = LinearModel.fit(
            design.X,
            np.asarray(measured_ms),
            design.names,
            design.prior,
            design.groups,
            lower=design.lower,
        )
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
