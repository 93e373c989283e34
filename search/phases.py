"""The bodies of `run_search`'s phases (pipeline.py reads as the list of them)."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nas.core.errors import NasError
from nas.search_space import Arch, SearchSpace
from nas.supernet.checkpoint import load_supernet
from nas.supernet.corpus import Corpus
from nas.supernet.storage import load_model, save_model

from .budget import format_ms
from .drift import profile_noise
from .driver import Progress, StudyOutcome, StudySettings, TrialRow, run_study, scored_archs
from .evaluator import EvalPayload, SupernetSource
from .fingerprint import available_cores
from .profile import Profile, profile_path, total_steps
from .quick_profile import quick_measure, quick_profile_config
from .run_folder import RunFolder
from .settings import SearchConfig
from .verify import Pick, Verification, pick_winner, verify

Say = Callable[[str], None]


@contextlib.contextmanager
def bar(total: int, desc: str, enabled: bool, unit: str = "it", initial: int = 0) -> Iterator[Any]:
    """A tqdm progress bar on stderr with rate and ETA (a no-op when disabled)."""
    from tqdm import tqdm

    with tqdm(
        total=total,
        initial=initial,
        desc=desc,
        unit=unit,
        file=sys.stderr,
        disable=not enabled,
        dynamic_ncols=True,
        mininterval=0.5,
        leave=False,
    ) as progress_bar:
        yield progress_bar


# ------------------------------------------------------------------ profile
def profile_with_progress(config: SearchConfig, space: SearchSpace, say: Say, progress: bool):
    """`pipeline.resolve_profile` with a progress bar when it has to build one."""
    from .fingerprint import environment
    from .pipeline import resolve_profile, workload_of
    from .profile import ProfileConfig

    if config.profile:
        return resolve_profile(config, space, say)
    workload = workload_of(config, space)
    workload.check_available()
    build = quick_profile_config() if config.quick_profile else ProfileConfig()
    if profile_path(space, environment(workload), build).is_file():
        return resolve_profile(config, space, say)
    how = "quick" if config.quick_profile else "full"
    say(f"building the latency profile for {workload} ({how} protocol; reused afterwards)")
    with bar(total_steps(space, build), "profile", progress, "meas") as b:

        def step(label: str) -> None:
            b.set_postfix_str(label, refresh=False)
            b.update(1)

        return resolve_profile(config, space, say, step)


# ------------------------------------------------------------------ cluster and search
@contextlib.contextmanager
def cluster(config: SearchConfig, workers: int) -> Iterator[Any]:
    """Ray for the search and the re-rank (None with 0 workers); shut down on exit if
    this process started it, so that verification runs on a quiet machine.

    Without --address, a private local Ray is started, unless RAY_ADDRESS names a cluster
    (as it does for a `ray job submit` entrypoint): then that cluster is joined."""
    if workers == 0:
        yield None
        return
    from .ray_cluster import connect_ray

    address = config.address or ("auto" if os.environ.get("RAY_ADDRESS") else "")
    ctx = connect_ray(address or None, None if address else workers)
    try:
        yield ctx
    finally:
        ctx.shutdown()


def search(
    study,
    space: SearchSpace,
    payload: EvalPayload,
    settings: StudySettings,
    workers: int,
    predict_many: Callable[[list[Arch]], np.ndarray],
    progress: bool,
    say: Say,
) -> StudyOutcome:
    """Run the study on an evaluation pool with a progress bar (trials, feasible, best)."""
    from .workers import InProcessPool, RayPool

    if workers == 0:
        pool = InProcessPool(payload)
        where = "in-process"
    else:
        threads = max(1, available_cores() // workers)
        pool = RayPool(payload, workers, threads_per_worker=threads)
        where = f"{workers} Ray worker(s), {threads} thread(s) each"
    say(
        f"searching: {settings.evaluations} evaluations with {settings.sampler}, "
        f"budget {format_ms(settings.budget_ms)}, on {where}"
    )
    done_before = len(scored_archs(study))  # a resumed study starts where it stopped
    try:
        with bar(settings.evaluations, "search", progress, "arch", done_before) as b:

            def show(p: Progress) -> None:
                b.n = min(p.evaluated, settings.evaluations)
                b.set_postfix_str(
                    f"over budget {p.infeasible}, repeats {p.repeated}, failed {p.failed}, "
                    f"best {p.best_loss:.4f}",
                    refresh=False,
                )
                b.refresh()

            return run_study(
                study, space, lambda a: float(predict_many([a])[0]), pool, settings, show
            )
    finally:
        pool.close()


def candidates(rows: list[TrialRow], config: SearchConfig) -> list[TrialRow]:
    """The best evaluated feasible archs by inherited loss, distinct, as many as the
    re-rank and the verification need (at least 3)."""
    seen: dict[str, TrialRow] = {}
    for row in sorted((r for r in rows if r.state == "complete"), key=lambda r: r.loss):
        seen.setdefault(row.arch.id, row)
    wanted = max(config.rerank, config.verify, 3)
    return list(seen.values())[:wanted]


# ------------------------------------------------------------------ re-rank
def rerank(
    picks: list[TrialRow],
    source: SupernetSource,
    corpus: Corpus,
    config: SearchConfig,
    inputs: np.ndarray,
    targets: np.ndarray,
    run: RunFolder,
    workers: int,
    say: Say,
    k: int | None = None,
) -> dict[str, Any]:
    """Fine-tune the `k` (default --rerank) best candidates; {arch id: RerankResult}."""
    from .rerank import Candidate, RerankConfig
    from .rerank import rerank as run_rerank

    k = config.rerank if k is None else k
    if k == 0:
        return {}
    chosen = picks[:k]
    seq_len = config.seq_len or source.space.max_seq_len
    rerank_config = RerankConfig(
        steps=config.rerank_steps,
        batch_size=config.rerank_batch_size,
        seq_len=seq_len,
    )
    say(
        f"re-ranking: fine-tuning the {len(chosen)} best candidate(s) {config.rerank_steps} "
        f"steps each"
    )
    cands = [Candidate(r.arch, float(r.loss), source.checkpoint_for(r.arch)) for r in chosen]
    results = run_rerank(cands, corpus, rerank_config, inputs, targets, run.rerank, workers=workers)
    return {res.arch.id: res for res in results}


# ------------------------------------------------------------------ verify
def verify_candidates(
    space: SearchSpace,
    picks: list[TrialRow],
    reranked: dict[str, Any],
    profile: Profile,
    scale: float,
    config: SearchConfig,
    progress: bool,
    say: Say,
) -> tuple[list[TrialRow], list[Verification]]:
    """Measure the candidates on the device; return them best-first and their measurements.

    Best-first is by fine-tuned loss where re-ranked (those first), then inherited."""
    ordered = sorted(
        picks,
        key=lambda r: (
            r.arch.id not in reranked,
            reranked[r.arch.id].finetuned_loss if r.arch.id in reranked else r.loss,
        ),
    )
    n = config.verify or max(len(reranked), 3)
    ordered = ordered[:n]
    predicted = [r.predicted_ms for r in ordered]
    noise, _ = profile_noise(profile)
    say(
        f"verifying: measuring {len(ordered)} candidate(s) on the device, {config.verify_passes} "
        "passes each"
    )
    with bar(len(ordered) * config.verify_passes, "verify", progress, "meas") as b:

        def step(label: str) -> None:
            b.update(1)

        verified = verify(
            space,
            [r.arch for r in ordered],
            predicted,
            config.budget_ms,
            profile.workload,
            quick_measure(profile),
            passes=config.verify_passes,
            step=step,
            noise=noise,
        )
    return ordered, verified


# ------------------------------------------------------------------ extract
def extract_winner(
    ordered: list[TrialRow],
    verified: list[Verification],
    reranked: dict[str, Any],
    source: SupernetSource,
    corpus: Corpus,
    config: SearchConfig,
    inputs: np.ndarray,
    targets: np.ndarray,
    run: RunFolder,
    say: Say,
) -> tuple[Pick | None, Any]:
    """Pick the winner and save it under best/ (fine-tuned unless --no-finetune).

    Returns (the pick or None, its fine-tune result or None)."""
    pick = pick_winner([r.arch for r in ordered], verified)
    if pick is None:
        return None, None
    winner = ordered[pick.index]
    tuned = reranked.get(winner.arch.id)
    if tuned is None and config.finetune:
        extra = rerank([winner], source, corpus, config, inputs, targets, run, 0, say, k=1)
        tuned = extra.get(winner.arch.id)
    if tuned is not None:
        model = load_model(tuned.model_dir)
    else:
        model = load_supernet(source.checkpoint_for(winner.arch)).extract(winner.arch)
    save_model(model, run.best)
    _check_parity(run.best, model, inputs)
    return pick, tuned


def _check_parity(saved: Path, model: torch.nn.Module, inputs: np.ndarray) -> None:
    """The saved winner must compute exactly what the weights it came from compute."""
    x = torch.from_numpy(inputs[0][:1])  # (1, T)
    again = load_model(saved)
    with torch.inference_mode():
        if not torch.equal(again(x), model.eval()(x)):
            raise NasError(f"{saved}: the saved winner's outputs differ from its source weights")
