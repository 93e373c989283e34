from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import nas
from nas import ArchError, NasError
from nas.search.evaluator import Evaluator, payload_from_net, validation_batches
from nas.search.rerank import (
    RESULT_FILE,
    Candidate,
    RerankConfig,
    finetune,
    rerank,
    rerank_tau,
    validation_loss,
)
from nas.supernet.checkpoint import load_supernet
from nas.supernet.storage import WEIGHTS_FILE
from nas.supernet.training import TrainConfig, train

TINY = {"batch_size": 2, "seq_len": 16, "eval_batches": 2, "reference_archs": 2, "warmup_steps": 2}
FINETUNE = RerankConfig(steps=12, batch_size=2, seq_len=16, lr=1e-3)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def setup(tiny_space, corpus, tmp_path):
    """Two short supernet runs (as two sub-supernets of a few-shot split would be), two
    mixed candidates with their inherited losses, and the search's validation batches."""
    sources = []
    for seed in (0, 1):
        config = TrainConfig(steps=20, seed=seed, **TINY)
        sources.append(train(tiny_space, corpus, config, tmp_path / f"sn{seed}", progress=False))
    inputs, targets = validation_batches(corpus.val, 2, 16, 4)
    archs = [
        a for a in tiny_space.sample_many(40, seed=5) if len({la.mixer for la in a.layers}) > 1
    ][:2]
    candidates = []
    for arch, source in zip(archs, sources, strict=True):
        payload = payload_from_net(load_supernet(source.checkpoint), inputs, targets)
        loss = Evaluator(payload).loss(arch)
        candidates.append(Candidate(arch, loss, source.run_dir))
    return {"candidates": candidates, "inputs": inputs, "targets": targets, "sources": sources}


def _mtimes(folder):
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir() if p.is_file()}


def test_scoring_matches_the_search_evaluator(tiny_space, setup):
    cand = setup["candidates"][0]
    model = load_supernet(cand.source).extract(cand.arch)
    loss = validation_loss(model, setup["inputs"], setup["targets"])
    assert math.isclose(loss, cand.inherited_loss, rel_tol=1e-6)


def test_finetuned_candidates_beat_their_inherited_loss_and_match_the_trainer(
    tiny_space, corpus, setup, tmp_path
):
    candidates = setup["candidates"]
    landed = []
    results = rerank(
        candidates,
        corpus,
        FINETUNE,
        setup["inputs"],
        setup["targets"],
        tmp_path / "rerank",
        progress=landed.append,
    )
    assert [r.arch for r in results] == [c.arch for c in candidates]
    assert [r.arch for r in landed] == [c.arch for c in candidates]
    x = torch.from_numpy(setup["inputs"][0])
    for cand, result in zip(candidates, results, strict=True):
        assert result.finetuned_loss < cand.inherited_loss - 0.05, (cand, result)
        assert result.inherited_loss == cand.inherited_loss and not result.reused
        assert result.steps == FINETUNE.steps and len(result.train_losses) == FINETUNE.steps
        assert result.model_dir == tmp_path / "rerank" / cand.arch.id
        # The same fine-tune by the trainer itself, from the candidate's own source.
        reference_dir = tmp_path / f"reference-{cand.arch.id}"
        config = FINETUNE.train_config(cand.arch, cand.source / "checkpoint.safetensors", False)
        run = train(tiny_space, corpus, config, reference_dir, progress=False)
        tuned = load_supernet(run.checkpoint)
        model = nas.load(result.model_dir)
        with torch.no_grad():
            assert torch.equal(model(x), tuned(x, cand.arch))
        assert result.finetuned_loss == validation_loss(model, setup["inputs"], setup["targets"])
        record = json.loads((result.model_dir / RESULT_FILE).read_text())
        assert record["arch_id"] == cand.arch.id and record["node"]
    # Each candidate started from its own source: from the other one it ends elsewhere.
    swapped = [Candidate(candidates[0].arch, candidates[0].inherited_loss, candidates[1].source)]
    other = rerank(
        swapped, corpus, FINETUNE, setup["inputs"], setup["targets"], tmp_path / "swapped"
    )
    assert other[0].finetuned_loss != results[0].finetuned_loss
    assert math.isfinite(rerank_tau(results))


def test_a_rerun_reuses_stored_results_and_redoes_only_missing_or_changed_ones(
    corpus, setup, tmp_path
):
    candidates = setup["candidates"]
    out = tmp_path / "rerank"
    args = (corpus, FINETUNE, setup["inputs"], setup["targets"], out)
    first = rerank(candidates, *args)
    folders = [out / c.arch.id for c in candidates]
    stamps = [_mtimes(f) for f in folders]

    again = rerank(candidates, *args)
    assert all(r.reused for r in again)
    assert [r.finetuned_loss for r in again] == [r.finetuned_loss for r in first]
    assert [_mtimes(f) for f in folders] == stamps  # nothing rewritten

    # A kill between the model and its result.json: that candidate alone trains again.
    (folders[1] / RESULT_FILE).unlink()
    third = rerank(candidates, *args)
    assert [r.reused for r in third] == [True, False]
    assert _mtimes(folders[0]) == stamps[0]
    assert third[1].finetuned_loss == first[1].finetuned_loss  # deterministic on the CPU

    # Other settings are another re-rank: not reused.
    longer = RerankConfig(steps=FINETUNE.steps + 2, batch_size=2, seq_len=16)
    fourth = rerank(candidates[:1], corpus, longer, setup["inputs"], setup["targets"], out)
    assert not fourth[0].reused and fourth[0].steps == FINETUNE.steps + 2


def test_ray_tasks_give_the_in_process_results(corpus, setup, tmp_path, monkeypatch):
    ray = pytest.importorskip("ray")
    candidates = setup["candidates"]
    args = (corpus, FINETUNE, setup["inputs"], setup["targets"])
    local = rerank(candidates, *args, tmp_path / "local", workers=0)
    with pytest.raises(NasError, match="needs a connected Ray"):
        rerank(candidates, *args, tmp_path / "unconnected", workers=2)
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        remote = rerank(candidates, *args, tmp_path / "ray", workers=2)
    finally:
        ray.shutdown()
    # Bit-identical: one torch thread per task, as in this process, and the same batches.
    assert [r.finetuned_loss for r in remote] == [r.finetuned_loss for r in local]
    assert [r.train_losses for r in remote] == [r.train_losses for r in local]
    for a, b in zip(local, remote, strict=True):
        assert (a.model_dir / WEIGHTS_FILE).read_bytes() == (
            b.model_dir / WEIGHTS_FILE
        ).read_bytes()


def test_bad_calls_are_named(tiny_space, corpus, setup, tmp_path):
    cand = setup["candidates"][0]
    args = (corpus, FINETUNE, setup["inputs"], setup["targets"], tmp_path / "out")
    with pytest.raises(NasError, match="repeat"):
        rerank([cand, cand], *args)
    wide = nas.Arch(4096, cand.arch.layers)
    with pytest.raises(ArchError, match=f"re-rank candidate {wide.id}"):
        rerank([Candidate(wide, 1.0, cand.source)], *args)
    with pytest.raises(NasError, match="steps must be >= 1.*lr must be > 0"):
        RerankConfig(steps=0, lr=0.0)
    with pytest.raises(NasError, match="one \\(n_batches, B, T\\) shape"):
        rerank([cand], corpus, FINETUNE, setup["inputs"][0], setup["targets"][0], tmp_path)
    assert not (tmp_path / "out").exists()


def test_finetune_leaves_torch_threads_and_no_scratch_behind(corpus, setup, tmp_path):
    cand = setup["candidates"][0]
    before = torch.get_num_threads()
    data = {"corpus": corpus, "inputs": setup["inputs"], "targets": setup["targets"]}
    source = cand.source / "checkpoint.safetensors"
    outcome = finetune(source, cand.arch, data, FINETUNE, threads=2, scratch=tmp_path / "s")
    assert torch.get_num_threads() == before
    assert list((tmp_path / "s").iterdir()) == []
    assert outcome["weights"] and np.isfinite(outcome["finetuned_loss"])
