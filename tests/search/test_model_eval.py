"""`nas eval`'s library: loss against a cross-entropy computed by hand, bpb, perplexity,
what counts as a model folder, and every member of a family."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conftest import make_tiny_space
from nas.core.errors import CheckpointError, DataError, WorkloadError
from nas.search.model_eval import (
    bits_per_byte,
    evaluate_folder,
    open_target,
    perplexity,
    validation_loss,
    validation_set,
)
from nas.supernet import Supernet, save_model
from nas.supernet.corpus import load_corpus
from nas.supernet.family import save_family

pytestmark = pytest.mark.usefixtures("one_thread")

SEQ_LEN, BATCH, BATCHES = 16, 4, 3


def _spread(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Weights far from the N(0, 0.02) init, so that the model's loss is far from ln(V)
    and a wrong loss cannot pass by being near-uniform too."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 1.0, generator=gen)
    return model.eval()


def _hand_windows(tokens: np.ndarray, seq_len: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` evenly spaced windows of the split, computed here from the split itself."""
    last = len(tokens) - seq_len - 1
    starts = np.linspace(0, last, min(n, last // seq_len + 1)).round().astype(int)
    rows = torch.tensor(np.stack([tokens[s : s + seq_len + 1] for s in starts]), dtype=torch.long)
    return rows[:, :-1], rows[:, 1:]


def _hand_loss(model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> float:
    """Mean of -log softmax(logits)[target] over every target token, written out."""
    with torch.no_grad():
        logits = model(inputs).double()  # (W, T, V)
    logp = logits - logits.exp().sum(-1, keepdim=True).log()  # (W, T, V)
    picked = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (W, T)
    return float(-picked.mean())


def test_loss_matches_a_hand_computed_cross_entropy_on_evenly_spaced_windows(corpus):
    space = make_tiny_space()
    model = _spread(Supernet(space, seed=1).extract(space.sample(seed=2)))
    valset = validation_set(corpus, SEQ_LEN, BATCH, BATCHES)
    inputs, targets = _hand_windows(np.asarray(corpus.val), SEQ_LEN, BATCH * BATCHES)
    assert valset.tokens == BATCH * BATCHES * SEQ_LEN == targets.numel()
    # The same windows: evenly spaced over the whole validation split, the first at 0.
    assert torch.equal(torch.from_numpy(valset.inputs).flatten(0, 1), inputs)
    assert torch.equal(torch.from_numpy(valset.targets).flatten(0, 1), targets)
    loss = validation_loss(model, valset.inputs, valset.targets)
    expected = _hand_loss(model, inputs, targets)
    assert loss == pytest.approx(expected, rel=1e-5)
    assert abs(loss - math.log(space.vocab_size)) > 0.1  # not a near-uniform model


def test_perplexity_and_bits_per_byte():
    assert perplexity(2.0) == pytest.approx(math.exp(2.0))
    assert perplexity(1e6) == math.inf
    assert bits_per_byte(math.log(2), 1.0) == pytest.approx(1.0)
    assert bits_per_byte(3.0, 1.0) == pytest.approx(3.0 / math.log(2))
    assert bits_per_byte(3.0, 4.0) == pytest.approx(3.0 / math.log(2) / 4.0)
    assert bits_per_byte(3.0, None) is None


def test_bits_per_byte_is_defined_for_text_only(corpus, tmp_path):
    assert validation_set(corpus, SEQ_LEN, BATCH, 1).bytes_per_token == 1.0
    np.save(tmp_path / "tokens.npy", np.arange(2000, dtype=np.int32) % 200)
    tokens = load_corpus(tmp_path / "tokens.npy", progress=False)
    assert validation_set(tokens, SEQ_LEN, BATCH, 1).bytes_per_token is None


def _saved_model(tmp_path, seed: int = 2):
    space = make_tiny_space()
    model = _spread(Supernet(space, seed=1).extract(space.sample(seed=seed)))
    save_model(model, tmp_path / "model")
    return model, tmp_path / "model"


def test_a_model_folder_scores_as_its_model_and_counts_its_parameters(corpus, tmp_path):
    model, folder = _saved_model(tmp_path)
    data = corpus.info["source"]
    report = evaluate_folder(
        folder, data, seq_len=SEQ_LEN, batch_size=BATCH, n_batches=BATCHES, threads=1, latency=False
    )
    (row,) = report.models
    inputs, targets = _hand_windows(np.asarray(corpus.val), SEQ_LEN, BATCH * BATCHES)
    assert row.val_loss == pytest.approx(_hand_loss(model, inputs, targets), rel=1e-5)
    assert row.bpb == pytest.approx(row.val_loss / math.log(2))
    assert row.perplexity == pytest.approx(math.exp(row.val_loss))
    assert row.params == sum(p.numel() for p in model.parameters())
    assert row.flops > 0 and row.latency is None and row.name == "model"


def test_default_seq_len_is_the_models_max_and_a_longer_one_is_refused(corpus, tmp_path):
    _, folder = _saved_model(tmp_path)
    data = corpus.info["source"]
    report = evaluate_folder(folder, data, n_batches=1, threads=1, latency=False)
    assert report.data.to_dict()["seq_len"] == make_tiny_space().max_seq_len
    with pytest.raises(WorkloadError, match="max_seq_len"):
        evaluate_folder(folder, data, seq_len=64, latency=False)


def test_what_is_not_a_model_folder_is_named(tmp_path):
    with pytest.raises(CheckpointError, match="no such folder"):
        open_target(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="config.json"):
        open_target(tmp_path / "empty")


def test_a_corpus_with_more_tokens_than_the_model_knows_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("NAS_CACHE_DIR", str(tmp_path / "cache"))
    _, folder = _saved_model(tmp_path)
    np.save(tmp_path / "tokens.npy", np.arange(4000, dtype=np.int32) % 300)
    with pytest.raises(DataError, match="vocabulary of 256"):
        evaluate_folder(folder, tmp_path / "tokens.npy", latency=False)


def test_every_member_of_a_family_scores_as_that_member_extracted_alone(corpus, tmp_path):
    space = make_tiny_space()
    net = Supernet(space, seed=1)
    _spread(net)
    members = {"small": space.smallest(), "mid": space.sample(seed=5), "big": space.largest()}
    save_family(net, members, tmp_path / "fam", {"big": {"val_loss": 9.0, "predicted_ms": 1.5}})
    report = evaluate_folder(
        tmp_path / "fam",
        corpus.info["source"],
        seq_len=SEQ_LEN,
        batch_size=BATCH,
        n_batches=BATCHES,
        threads=1,
        latency=False,
    )
    assert report.kind == "family" and [m.name for m in report.models] == list(members)
    inputs, targets = _hand_windows(np.asarray(corpus.val), SEQ_LEN, BATCH * BATCHES)
    for row in report.models:
        alone = net.extract(members[row.name]).eval()
        assert row.val_loss == pytest.approx(_hand_loss(alone, inputs, targets), rel=1e-5)
        assert row.params == sum(p.numel() for p in alone.parameters())
        assert row.arch_id == members[row.name].id
    losses = [m.val_loss for m in report.models]
    assert len(set(losses)) == 3  # three different models, not one scored thrice
    assert report.models[2].recorded["predicted_ms"] == 1.5
