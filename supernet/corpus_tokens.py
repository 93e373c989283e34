"""Token-array files for `load_corpus`: `.npy` or raw `.bin`, memory-mapped, never copied.

Each reader checks that the file holds a 1-D, non-empty array of integers and says in
one line what is wrong otherwise; `token_range` scans the ids in chunks so that an array
larger than memory is never loaded whole.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from nas.core.errors import DataError

CHUNK = 2**20  # bytes per scan step (times 8), so memory stays flat


def open_npy(path: Path) -> np.ndarray:
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npy array ({exc})") from None
    return check_array(path, array)


def open_raw(path: Path, dtype: str) -> np.ndarray:
    try:
        np_dtype = np.dtype(dtype)
    except TypeError:
        raise DataError(f"{path}: unknown dtype '{dtype}' (e.g. uint8, uint16, int32)") from None
    size = path.stat().st_size
    if np_dtype.kind not in "iu":
        raise DataError(f"{path}: token dtype must be an integer type, got '{dtype}'")
    if size == 0 or size % np_dtype.itemsize:
        raise DataError(
            f"{path}: {size} bytes is not a whole, non-zero number of {dtype} tokens "
            f"({np_dtype.itemsize} bytes each)"
        )
    return np.memmap(path, dtype=np_dtype, mode="r")


def check_array(path: Path, array: np.ndarray) -> np.ndarray:
    if array.ndim != 1 or array.dtype.kind not in "iu" or array.size == 0:
        raise DataError(
            f"{path}: token arrays must be 1-D, non-empty and of an integer dtype, got shape "
            f"{array.shape} {array.dtype}"
        )
    return array


def token_range(array: np.ndarray, progress: bool) -> tuple[int, int]:
    from tqdm import tqdm

    low, high = None, None
    step = max(1, CHUNK * 8 // array.dtype.itemsize)
    for start in tqdm(
        range(0, array.size, step), desc="checking tokens", disable=not progress, file=sys.stderr
    ):
        part = np.asarray(array[start : start + step])
        low = int(part.min()) if low is None else min(low, int(part.min()))
        high = int(part.max()) if high is None else max(high, int(part.max()))
    return int(low), int(high)
