"""Batches of next-token windows cut from a 1-D token array.

Training windows start at positions drawn uniformly, with replacement, from a seeded
`numpy.random.Generator` that the sampler owns, so a run is reproducible and its position
in the stream is just the generator's state (saved in checkpoints). Nothing tracks which
windows were drawn: windows overlap and may recur, within a run or across runs that
continue a stream. A run that continues another's generator state (`--resume`,
`--init-from`) draws the stream's next windows rather than replaying the ones already
drawn. Validation windows are fixed, evenly spaced, non-overlapping where the split
allows, and involve no randomness at all.

Only the windows are read from the (memory-mapped) array: B * (T + 1) tokens per batch.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from nas.core.errors import DataError

Tensor = torch.Tensor


def _windows(tokens: np.ndarray, starts: np.ndarray, seq_len: int) -> tuple[Tensor, Tensor]:
    rows = np.stack([np.asarray(tokens[s : s + seq_len + 1]) for s in starts])  # (B, T+1)
    rows = torch.from_numpy(rows.astype(np.int64))  # (B, T+1)
    return rows[:, :-1], rows[:, 1:]  # inputs (B, T), next-token targets (B, T)


def check_length(tokens: np.ndarray, seq_len: int, split: str) -> None:
    """Raise `DataError` unless `tokens` holds at least one window of `seq_len` + 1 tokens."""
    if len(tokens) < seq_len + 1:
        raise DataError(
            f"the {split} split has {len(tokens)} tokens, fewer than one window of "
            f"{seq_len + 1}; pass a larger corpus or a smaller --seq-len"
        )


class BatchSampler:
    """Random (inputs, targets) batches of shape (B, T) from one split.

    Each window starts at a position drawn uniformly from [0, N - T - 1] by `rng`.
    """

    def __init__(self, tokens: np.ndarray, batch_size: int, seq_len: int, rng: np.random.Generator):
        check_length(tokens, seq_len, "train")
        self.tokens = tokens
        self.batch_size = batch_size  # sequences per batch, B
        self.seq_len = seq_len  # tokens per sequence, T
        self.rng = rng

    def next(self) -> tuple[Tensor, Tensor]:
        """One batch: int64 inputs (B, T) and the targets shifted by one token (B, T)."""
        high = len(self.tokens) - self.seq_len  # exclusive; the last window ends at N
        starts = self.rng.integers(0, high, size=self.batch_size)  # (B,)
        return _windows(self.tokens, starts, self.seq_len)

    def state(self) -> dict[str, Any]:
        """The generator's state, JSON-able (PCG64 state is a dict of ints)."""
        return self.rng.bit_generator.state

    def set_state(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state


def eval_batches(
    tokens: np.ndarray, batch_size: int, seq_len: int, max_batches: int
) -> list[tuple[Tensor, Tensor]]:
    """Fixed validation batches: up to `max_batches` x `batch_size` evenly spaced windows.

    The same split always yields the same batches, so losses measured at different steps,
    or in different runs, are comparable. Returns a list of (inputs, targets), each (B, T).
    """
    check_length(tokens, seq_len, "validation")
    last = len(tokens) - seq_len - 1  # the latest start that still has a target
    count = max(1, min(max_batches * batch_size, last // seq_len + 1))
    starts = np.linspace(0, last, count).round().astype(np.int64)  # (count,)
    return [
        _windows(tokens, starts[i : i + batch_size], seq_len) for i in range(0, count, batch_size)
    ]
