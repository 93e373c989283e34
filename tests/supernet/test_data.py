"""Corpora and batches: every input kind, splits by file, memory maps, seeded batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nas import DataError
from nas.supernet import corpus as corpus_mod
from nas.supernet.batches import BatchSampler, eval_batches
from nas.supernet.corpus import load_corpus, split_by_file, split_by_position

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NAS_CACHE_DIR", str(tmp_path / "cache"))


def _text_folder(root, n_files=30):
    root.mkdir()
    for i in range(n_files):
        sub = root / f"pkg{i % 3}"
        sub.mkdir(exist_ok=True)
        (sub / f"mod{i:02d}.py").write_text(f"# module {i}\n" + f"x_{i} = {i} * 2\n" * (5 + i))
    return root


def test_text_file_is_bytes_split_by_position(tmp_path):
    text = ("def f(x):\n    return x + 1\n" * 200).encode()
    (tmp_path / "a.txt").write_bytes(text)
    corpus = load_corpus(tmp_path / "a.txt", progress=False)
    assert corpus.vocab_size == 256 and corpus.info["split"] == "position"
    joined = np.concatenate([corpus.train, corpus.val, corpus.test])
    assert joined.tobytes() == text  # byte-level: token = byte, order kept, nothing lost
    bounds = split_by_position(len(text))
    assert len(corpus.val) == bounds["val"][1] - bounds["val"][0] > 0
    assert isinstance(corpus.train, np.memmap)


def test_folder_is_split_by_file_deterministically(tmp_path):
    root = _text_folder(tmp_path / "src")
    (root / ".hidden").write_text("never read")
    (root / "blob.bin").write_bytes(b"\0\1\2" * 100)  # binary files are skipped
    first = load_corpus(root, progress=False)
    assert first.info["split"] == "file"
    per_split = first.info["files_per_split"]
    assert per_split["val"] >= 1 and per_split["test"] >= 1 and sum(per_split.values()) == 30
    # Each file lies wholly in one split: the val stream is a concatenation of whole files.
    sizes = {p.relative_to(root).as_posix(): p.stat().st_size for p in root.rglob("*.py")}
    assign = split_by_file(sizes)
    val_files = sorted(rel for rel, split in assign.items() if split == "val")
    expected = b"".join((root / rel).read_bytes() for rel in val_files)
    assert first.val.tobytes() == expected
    # The rule depends on paths only: same assignment on a second call, no RNG involved.
    assert split_by_file(dict(reversed(list(sizes.items())))) == assign
    again = load_corpus(root, progress=False)
    assert again.key == first.key and again.info["cache"] == first.info["cache"]
    assert again.train.tobytes() == first.train.tobytes()


def test_cache_is_built_once_and_rebuilt_when_files_change(tmp_path, monkeypatch):
    root = _text_folder(tmp_path / "src")
    first = load_corpus(root, progress=False)
    calls = []
    original = corpus_mod._build_text_cache
    monkeypatch.setattr(
        corpus_mod, "_build_text_cache", lambda *a, **k: calls.append(1) or original(*a, **k)
    )
    load_corpus(root, progress=False)
    assert calls == []  # cached: only mapped
    (root / "pkg0" / "mod00.py").write_text("changed = True\n" * 50)
    changed = load_corpus(root, progress=False)
    assert calls == [1] and changed.key != first.key


def test_build_shows_progress(tmp_path, capsys):
    root = _text_folder(tmp_path / "src")
    load_corpus(root, progress=True)
    assert "tokenizing corpus" in capsys.readouterr().err


def test_npy_and_bin_token_arrays_are_mapped_in_place(tmp_path):
    tokens = (np.arange(5000) % 1000).astype(np.uint16)
    np.save(tmp_path / "t.npy", tokens)
    tokens.tofile(tmp_path / "t.bin")
    for corpus in (
        load_corpus(tmp_path / "t.npy", progress=False),
        load_corpus(tmp_path / "t.bin", dtype="uint16", progress=False),
    ):
        assert corpus.vocab_size == 1000 and corpus.info["kind"] == "tokens"
        np.testing.assert_array_equal(
            np.concatenate([corpus.train, corpus.val, corpus.test]), tokens
        )
        assert isinstance(corpus.train, np.memmap)  # a view of the file, not a copy


def test_default_corpus_is_the_python_stdlib(tmp_path):
    corpus = load_corpus(None, progress=False)
    assert corpus.info["source"] == "python-stdlib" and corpus.info["split"] == "file"
    assert corpus.info["files"] > 100 and len(corpus.train) > 1_000_000
    assert b"def " in corpus.val[:100_000].tobytes()  # real source text, not random bytes


def test_a_large_corpus_is_never_loaded_whole(tmp_path, monkeypatch):
    # A file larger than the read chunk is streamed to the cache in chunks.
    monkeypatch.setattr(corpus_mod, "_CHUNK", 1000)
    reads = []
    real_open = open

    class Spy:
        def __init__(self, f):
            self.f = f

        def read(self, n=-1):
            reads.append(n)
            return self.f.read(n)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    def spy_open(file, mode="r", *args, **kwargs):
        f = real_open(file, mode, *args, **kwargs)
        return Spy(f) if mode == "rb" and str(file).endswith("big.txt") else f

    (tmp_path / "big.txt").write_bytes(b"abcdefghij\n" * 2000)
    monkeypatch.setattr("builtins.open", spy_open)
    corpus = load_corpus(tmp_path / "big.txt", progress=False)
    monkeypatch.undo()
    content_reads = [n for n in reads if n != corpus_mod.SNIFF_BYTES]
    assert content_reads and all(0 < n <= 1000 for n in content_reads)
    assert isinstance(corpus.train, np.memmap)


@pytest.mark.parametrize(
    "make, kwargs, match",
    [
        (lambda p: p / "missing.txt", {}, "no such file"),
        (lambda p: (p / "empty").mkdir() or p / "empty", {}, "no text files"),
        (lambda p: (p / "x.bin").write_bytes(b"\0" * 10) and p / "x.bin", {}, "needs its dtype"),
        (
            lambda p: (p / "x.bin").write_bytes(b"\0" * 9) and p / "x.bin",
            {"dtype": "uint16"},
            "whole",
        ),
        (lambda p: (p / "x.dat").write_bytes(b"\0" * 8) and p / "x.dat", {}, "looks binary"),
        (lambda p: np.save(p / "f.npy", np.ones(4, np.float32)) or p / "f.npy", {}, "integer"),
        (lambda p: np.save(p / "n.npy", -np.ones(9, np.int32)) or p / "n.npy", {}, ">= 0"),
        (
            lambda p: (p / "x.bin").write_bytes(b"\0" * 8) and p / "x.bin",
            {"dtype": "float32"},
            "integer",
        ),
    ],
)
def test_bad_data_raises_one_line_data_error(tmp_path, make, kwargs, match):
    with pytest.raises(DataError, match=match) as info:
        load_corpus(make(tmp_path), progress=False, **kwargs)
    assert "\n" not in str(info.value)


def test_batches_are_seeded_and_shifted_by_one(tmp_path):
    tokens = np.arange(1000, dtype=np.uint16) % 256
    a = BatchSampler(tokens, 4, 16, np.random.default_rng(7))
    b = BatchSampler(tokens, 4, 16, np.random.default_rng(7))
    x1, y1 = a.next()
    x2, _ = b.next()
    assert x1.shape == (4, 16) and x1.dtype == torch.int64
    torch.testing.assert_close(x1, x2)
    torch.testing.assert_close(x1[:, 1:], y1[:, :-1])
    state = a.state()
    after = a.next()
    a.set_state(state)
    torch.testing.assert_close(a.next()[0], after[0])  # the state is the stream's position


def test_eval_batches_are_fixed_and_cover_the_split():
    tokens = np.arange(2000, dtype=np.int64)
    first = eval_batches(tokens, 4, 32, max_batches=3)
    assert len(first) == 3 and all(x.shape == (4, 32) for x, _ in first)
    again = eval_batches(tokens, 4, 32, max_batches=3)
    for (x1, _), (x2, _) in zip(first, again, strict=True):
        torch.testing.assert_close(x1, x2)
    assert first[0][0][0, 0] == 0 and first[-1][1][-1, -1] == 1999  # spans start to end
    with pytest.raises(DataError, match="fewer than one window"):
        eval_batches(tokens[:20], 4, 32, 1)


def test_an_unwritable_cache_is_a_data_error(tmp_path, monkeypatch):
    (tmp_path / "a.txt").write_text("x = 1\n" * 100)
    (tmp_path / "not_a_folder").write_text("")
    monkeypatch.setenv("NAS_CACHE_DIR", str(tmp_path / "not_a_folder"))
    with pytest.raises(DataError, match="NAS_CACHE_DIR"):
        load_corpus(tmp_path / "a.txt", progress=False)
