"""Training corpora: byte-level text or token arrays, split by file, read through memory maps.

`load_corpus(path)` accepts a text file, a folder of text files, or a pre-tokenized token
array (`.npy`, or a raw `.bin` with a dtype). Nothing is downloaded: without a path the
corpus is the `.py` source of the running Python's standard library, real text that every
machine with Python has.

Text is tokenized byte-level (token = byte value, vocabulary 256) and stored once, per
split, as a flat uint8 file in a cache folder keyed by the source's file list, sizes and
modification times; a later call with the same source only maps those files. Token
arrays are mapped in place, never copied. Either way the tokens are `numpy.memmap`s, so a
corpus larger than memory is never loaded whole.

Splits are deterministic and never drawn by chance:
- a folder with at least `MIN_FILES_FOR_FILE_SPLIT` files is split **by file**: files are
  ranked by the SHA-256 of their relative path, the first ones go to validation until it
  holds `VAL_FRACTION` of the bytes, the next to test until it holds `TEST_FRACTION`, and
  the rest to training;
- a single file, a small folder, or a token array is split **by position**: the first
  90% of the stream trains, the next 5% validates, the last 5% tests.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import sysconfig
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nas.core.atomic import atomic_write_json
from nas.core.errors import DataError

from .corpus_tokens import open_npy, open_raw, token_range

FORMAT = "nas.corpus/1"
SPLITS = ("train", "val", "test")
BYTE_VOCAB = 256  # byte-level tokenization: every byte value is a token
VAL_FRACTION = 0.05  # share of the bytes (or tokens) held out for validation
TEST_FRACTION = 0.05  # share held out for test
MIN_FILES_FOR_FILE_SPLIT = 10  # fewer files than this: split by position instead
DEFAULT_MAX_BYTES = 16 * 2**20  # cap on the default corpus (CPython 3.11's stdlib is ~12 MB)
SNIFF_BYTES = 8192  # a file with a NUL byte in its first 8 KiB is treated as binary
_CHUNK = 2**20  # bytes read and written at a time, so memory stays flat
_SKIP_DIRS = frozenset(
    {"__pycache__", "site-packages", "dist-packages", "test", "tests", "idle_test"}
)


@dataclass(frozen=True)
class Corpus:
    """Tokens of one corpus, split three ways, each a 1-D memory-mapped integer array."""

    train: np.ndarray  # (N_train,) token ids
    val: np.ndarray  # (N_val,) token ids
    test: np.ndarray  # (N_test,) token ids
    vocab_size: int  # every token id is < this (256 for byte-level text)
    info: dict[str, Any] = field(default_factory=dict)  # JSON-able: source, key, split sizes

    def split(self, name: str) -> np.ndarray:
        if name not in SPLITS:
            raise ValueError(f"unknown split '{name}'; valid splits are {list(SPLITS)}")
        return getattr(self, name)

    @property
    def key(self) -> str:
        """Hash identifying the source's content (file list, sizes, mtimes, split rule)."""
        return str(self.info["key"])


def default_cache_dir() -> Path:
    """`$NAS_CACHE_DIR`, else ~/.cache/nas/data."""
    env = os.environ.get("NAS_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "nas" / "data"


def load_corpus(
    path: str | Path | None = None,
    *,
    dtype: str | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> Corpus:
    """Open (building its cache on first use) the corpus at `path`.

    `path` None means the default corpus (Python's standard library sources). A path
    ending in `.npy` is a token array; a `.bin` path, or any path when `dtype` is given
    (e.g. "uint16"), is a raw token array of that dtype. Any other file, or a folder, is
    byte-level text. `progress` shows a bar on stderr while a cache is built.

    Raises `DataError` (one line naming the path) for a missing path, an empty folder, a
    binary file passed as text, or a malformed token array.
    """
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if path is None:
        root, files = _default_files(DEFAULT_MAX_BYTES)
        return _text_corpus(root, files, cache, progress, source="python-stdlib")
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(
            f"{path}: no such file or folder; pass a text file, a folder of text files, "
            f"a .npy token array or a .bin token array with its dtype"
        )
    if path.is_dir():
        files = _text_files(path)
        if not files:
            raise DataError(f"{path}: the folder holds no text files")
        return _text_corpus(path, files, cache, progress, source=str(path))
    if path.suffix.lower() == ".npy":  # the .npy header carries the dtype
        return _array_corpus(path, open_npy(path), cache, progress)
    if dtype is not None or path.suffix.lower() == ".bin":
        if dtype is None:
            raise DataError(f"{path}: a raw .bin token array needs its dtype (e.g. uint16)")
        return _array_corpus(path, open_raw(path, dtype), cache, progress)
    if _looks_binary(path):
        raise DataError(
            f"{path}: looks binary, not text; token arrays must be .npy, or .bin with a dtype"
        )
    return _text_corpus(path.parent, [path], cache, progress, source=str(path))


# --------------------------------------------------------------------- discovery
def _default_files(max_bytes: int) -> tuple[Path, list[Path]]:
    """The stdlib's .py files in sorted order, outside tests and site-packages, up to a cap."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files, total = [], 0
    for file in _walk(root, suffix=".py", skip_dirs=_SKIP_DIRS):
        size = file.stat().st_size
        if total + size > max_bytes:
            break
        files.append(file)
        total += size
    if not files:
        raise DataError(f"{root}: no Python sources found for the default corpus; pass --data")
    return root, files


def _walk(root: Path, suffix: str = "", skip_dirs: frozenset[str] = frozenset()) -> Iterator[Path]:
    # Sorted at every level so the order (and so the cap and the cache key) is stable.
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in skip_dirs)
        for name in sorted(filenames):
            if name.startswith(".") or not name.endswith(suffix):
                continue
            file = Path(dirpath) / name
            if file.is_file():
                yield file


def _text_files(folder: Path) -> list[Path]:
    return [f for f in _walk(folder, skip_dirs=frozenset({"__pycache__"})) if not _looks_binary(f)]


def _looks_binary(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return b"\0" in f.read(SNIFF_BYTES)
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror})") from None


# --------------------------------------------------------------------- splits
def split_by_file(sizes: dict[str, int]) -> dict[str, str]:
    """Assign each relative path to a split, by file, deterministically (no RNG).

    Files are ranked by the SHA-256 of their relative path; validation takes files in that
    order until it holds `VAL_FRACTION` of the bytes, test the next ones until it holds
    `TEST_FRACTION`, training the rest. Returns {relative path: split name}.
    """
    total = sum(sizes.values())
    ranked = sorted(sizes, key=lambda rel: hashlib.sha256(rel.encode()).hexdigest())
    out, held = {}, {"val": 0, "test": 0}
    for rel in ranked:
        if held["val"] < VAL_FRACTION * total:
            name = "val"
        elif held["test"] < TEST_FRACTION * total:
            name = "test"
        else:
            name = "train"
        out[rel] = name
        if name != "train":
            held[name] += sizes[rel]
    return out


def split_by_position(n: int) -> dict[str, tuple[int, int]]:
    """[start, stop) of each split of a stream of `n` tokens: 90% / 5% / 5%, in order."""
    n_val, n_test = int(n * VAL_FRACTION), int(n * TEST_FRACTION)
    n_train = n - n_val - n_test
    return {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, n)}


# --------------------------------------------------------------------- text corpora
def _text_corpus(root: Path, files: list[Path], cache: Path, progress: bool, source: str) -> Corpus:
    listing = []
    for file in files:
        st = file.stat()
        listing.append((file.relative_to(root).as_posix(), st.st_size, st.st_mtime_ns))
    by_file = len(files) >= MIN_FILES_FOR_FILE_SPLIT
    key = _hash(
        {
            "format": FORMAT,
            "root": str(root.resolve()),
            "files": listing,
            "split": "file" if by_file else "position",
            "val": VAL_FRACTION,
            "test": TEST_FRACTION,
        }
    )
    folder = cache / key
    meta = _read_meta(folder)
    if meta is None:
        try:
            _build_text_cache(root, listing, by_file, folder, progress)
        except OSError as exc:
            raise DataError(
                f"{folder}: cannot build the corpus cache ({exc.strerror}: {exc.filename}); "
                f"check the data, or set NAS_CACHE_DIR to a writable folder"
            ) from None
        meta = _read_meta(folder)
        if meta is None:
            raise DataError(f"{folder}: the corpus cache could not be written")
    splits = {name: _map(folder / f"{name}.bin", np.uint8, meta["tokens"][name]) for name in SPLITS}
    info = {
        "source": source,
        "kind": "text",
        "key": key,
        "cache": str(folder),
        "files": len(files),
        "split": meta["split"],
        "tokens": meta["tokens"],
        "files_per_split": meta["files_per_split"],
    }
    return Corpus(**splits, vocab_size=BYTE_VOCAB, info=info)


def _build_text_cache(
    root: Path, listing: list[tuple[str, int, int]], by_file: bool, folder: Path, progress: bool
) -> None:
    """Stream every file's bytes into per-split .bin files in a temp folder, then rename it."""
    from tqdm import tqdm

    sizes = {rel: size for rel, size, _ in listing}
    assign = split_by_file(sizes) if by_file else {}
    bounds = split_by_position(sum(sizes.values())) if not by_file else {}
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".{folder.name}.tmp-{os.getpid()}-{time.monotonic_ns()}"
    tmp.mkdir()
    try:
        written = dict.fromkeys(SPLITS, 0)
        counts = dict.fromkeys(SPLITS, 0)
        offset = 0  # position of the next byte in the whole stream (position split)
        with contextlib.ExitStack() as stack:
            outs = {name: stack.enter_context(open(tmp / f"{name}.bin", "wb")) for name in SPLITS}
            bar = stack.enter_context(
                tqdm(
                    total=sum(sizes.values()),
                    unit="B",
                    unit_scale=True,
                    desc="tokenizing corpus",
                    disable=not progress,
                    file=sys.stderr,
                )
            )
            for rel, _, _ in listing:
                if by_file:
                    counts[assign[rel]] += 1
                with open(root / rel, "rb") as src:
                    while chunk := src.read(_CHUNK):
                        if by_file:
                            outs[assign[rel]].write(chunk)
                            written[assign[rel]] += len(chunk)
                        else:
                            _write_by_position(chunk, offset, bounds, outs, written)
                        offset += len(chunk)
                        bar.update(len(chunk))
            for out in outs.values():
                out.flush()
                os.fsync(out.fileno())
        meta = {
            "format": FORMAT,
            "split": "file" if by_file else "position",
            "tokens": written,
            "files_per_split": counts if by_file else None,
            "dtype": "uint8",
        }
        # The meta file is written last: a folder with meta.json is a complete cache.
        atomic_write_json(tmp / "meta.json", meta)
        try:
            os.rename(tmp, folder)
        except OSError:
            # Another process finished the same cache first; its copy is identical.
            if _read_meta(folder) is None:
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _write_by_position(
    chunk: bytes, offset: int, bounds: dict[str, tuple[int, int]], outs: dict, written: dict
) -> None:
    for name, (start, stop) in bounds.items():
        lo, hi = max(start, offset), min(stop, offset + len(chunk))
        if lo < hi:
            outs[name].write(chunk[lo - offset : hi - offset])
            written[name] += hi - lo


# --------------------------------------------------------------------- token arrays
def _array_corpus(path: Path, array: np.ndarray, cache: Path, progress: bool) -> Corpus:
    st = path.stat()
    key = _hash(
        {
            "format": FORMAT,
            "path": str(path.resolve()),
            "size": st.st_size,
            "mtime_ns": st.st_mtime_ns,
            "dtype": array.dtype.str,
        }
    )
    # The token range is scanned once (in chunks) and remembered beside the text caches.
    meta_file = cache / key / "meta.json"
    meta = _read_meta(cache / key)
    if meta is None:
        low, high = token_range(array, progress)
        if low < 0:
            raise DataError(f"{path}: token ids must be >= 0, found {low}")
        meta = {"format": FORMAT, "split": "position", "min": low, "max": high}
        try:
            atomic_write_json(meta_file, meta)
        except OSError:
            pass  # only a cache of the token range: scanned again next time
    bounds = split_by_position(array.size)
    splits = {name: array[start:stop] for name, (start, stop) in bounds.items()}
    info = {
        "source": str(path),
        "kind": "tokens",
        "key": key,
        "dtype": array.dtype.name,
        "split": "position",
        "tokens": {name: stop - start for name, (start, stop) in bounds.items()},
        "files_per_split": None,
    }
    return Corpus(**splits, vocab_size=int(meta["max"]) + 1, info=info)


# --------------------------------------------------------------------- cache files
def _hash(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def _read_meta(folder: Path) -> dict[str, Any] | None:
    """The cache's meta.json, or None when the cache is absent or incomplete."""
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        return None
    if "tokens" in meta:
        for name in SPLITS:
            file = folder / f"{name}.bin"
            if not file.is_file() or file.stat().st_size != meta["tokens"].get(name, -1):
                return None
    return meta


def _map(file: Path, dtype: type, count: int) -> np.ndarray:
    # numpy cannot map an empty file; an empty split is an empty array.
    if count == 0:
        return np.zeros(0, dtype=dtype)
    return np.memmap(file, dtype=dtype, mode="r", shape=(count,))
