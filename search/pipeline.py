"""`run_search`: the whole main job, phase by phase, into one run folder.

1. supernet: the one given, or the default one trained (and cached) for the space;
2. profile: the device's latency profile for the workload, built (quick) if missing;
3. drift: a few of the profile's archs re-timed; predictions scaled if the host moved;
4. search: Optuna over inherited losses, on Ray workers (driver.py);
5. re-rank: the K best feasible candidates fine-tuned S steps, scored again (rerank.py);
6. verify: the candidates measured on the device, after the workers have stopped;
7. extract: the winner saved with its fine-tuned weights under best/; reports written.

Each phase's seconds go to the run's manifest. `--resume` reruns the pipeline on the run
folder: the study continues from its journal and finished re-rank results are reused.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nas.core.errors import BudgetError, DataError, NasError
from nas.search_space import Arch, SearchSpace
from nas.supernet.corpus import Corpus, load_corpus

from .budget import format_ms
from .default_supernet import default_supernet, search_train_config
from .drift import measure_drift
from .driver import (
    StudySettings,
    enqueue_first,
    make_sampler,
    open_study,
    recover,
    storage_for,
    trial_rows,
)
from .evaluator import SupernetSource, build_payload, open_supernet, validation_batches
from .fingerprint import Workload, available_cores
from .profile import Profile, check_device, check_space, get_profile, load_profile
from .quick_profile import quick_measure, quick_profile_config
from .run_folder import STUDY_NAME, RunFolder
from .settings import SearchConfig

Say = Callable[[str], None]


@dataclass
class SearchResult:
    """What a finished search hands back (the run folder holds the rest)."""

    run_dir: Path
    summary: dict[str, Any]  # what `nas search --json` prints
    front_table: str  # the console table of the front
    lines: list[str] = field(default_factory=list)  # what the console prints after it


@contextmanager
def _timed(run: RunFolder, name: str, phases: dict[str, float]):
    start = time.perf_counter()
    try:
        yield
    finally:
        seconds = time.perf_counter() - start
        phases[name] = phases.get(name, 0.0) + seconds
        if run.started:  # phases before the folder is claimed are recorded when it is
            run.phase(name, seconds)


def resolve_supernet(
    config: SearchConfig, progress: bool, say: Say
) -> tuple[SupernetSource, Corpus]:
    """The trained supernet to search and the corpus it is validated on."""
    given_space = SearchSpace.from_file(config.space) if config.space else None
    if config.supernet:
        source = open_supernet(config.supernet, given_space)
        corpus = corpus_of(source, config)
        return source, corpus
    space = given_space or SearchSpace.default()
    corpus = load_corpus(config.data or None, dtype=config.tokens_dtype or None, progress=progress)
    seq_len = config.seq_len or space.max_seq_len
    train_config = search_train_config(space, seq_len)
    run_dir, _ = default_supernet(space, corpus, train_config, progress=progress, say=say)
    return open_supernet(run_dir, space), corpus


def corpus_of(source: SupernetSource, config: SearchConfig) -> Corpus:
    """`--data` if given, else the corpus the supernet recorded it was trained on."""
    if config.data:
        return load_corpus(config.data, dtype=config.tokens_dtype or None, progress=False)
    data = source.data
    if data.get("source") in (None, "python-stdlib"):
        corpus = load_corpus(None, progress=False)
    else:
        dtype = data.get("dtype") if data.get("kind") == "tokens" else None
        try:
            corpus = load_corpus(data["source"], dtype=dtype, progress=False)
        except DataError as exc:
            raise DataError(
                f"{exc}; the supernet {source.path} was trained on it: pass --data PATH"
            ) from None
    if data.get("key") and corpus.key != data["key"]:
        raise DataError(
            f"{data.get('source')}: changed since the supernet {source.path} was trained on "
            "it; pass --data PATH to validate on another corpus"
        )
    return corpus


def workload_of(config: SearchConfig, space: SearchSpace) -> Workload:
    """The workload the search's latencies are for; `NasError` for a bad one."""
    seq_len = config.seq_len or space.max_seq_len
    if seq_len > space.max_seq_len:
        raise NasError(f"--seq-len {seq_len} exceeds the space's max_seq_len {space.max_seq_len}")
    return Workload(config.device, config.batch, seq_len, config.threads, config.mode)


def resolve_profile(
    config: SearchConfig, space: SearchSpace, say: Say, step=None
) -> tuple[Profile, Path, bool]:
    """The latency profile of the search's workload (built if missing)."""
    workload = workload_of(config, space)
    if config.profile:
        profile = load_profile(config.profile)
        check_space(profile, space)
        check_device(profile)
        if profile.workload != workload:
            raise NasError(
                f"{config.profile}: the profile is for {profile.workload}, not {workload}; "
                "pass the matching --device/--batch/--seq-len/--threads/--mode or another "
                "profile"
            )
        return profile, Path(config.profile), False
    profile_config = quick_profile_config() if config.quick_profile else None
    return get_profile(space, workload, config=profile_config, step=step)


def check_budget(budget_ms: float, smallest_ms: float, smallest: Arch) -> None:
    """`BudgetError` when no arch of the space can meet the budget."""
    if budget_ms < smallest_ms:
        raise BudgetError(
            f"--budget {format_ms(budget_ms)} is below the smallest arch's predicted latency "
            f"{format_ms(smallest_ms)} ({smallest.id}) on this device; give at least that"
        )


def largest_feasible(space: SearchSpace, predict: Callable[[list[Arch]], np.ndarray], budget_ms):
    """The arch with the most parameters among the space's uniform archs (one mixer, one
    width per dimension, throughout) predicted within the budget; None if none is."""
    candidates = []
    for d in space.d_model:
        for depth in space.exits:
            for mixer in space.mixers:
                for heads in space.heads:
                    for ffn in space.ffn:
                        arch = _uniform(space, d, depth, mixer, heads, ffn)
                        candidates.append(arch)
    unique = list(dict.fromkeys(candidates))
    predicted = predict(unique)
    feasible = [a for a, ms in zip(unique, predicted, strict=True) if ms <= budget_ms]
    return max(feasible, key=space.param_count, default=None)


def _uniform(space: SearchSpace, d: int, depth: int, mixer: str, heads: int, ffn: int) -> Arch:
    from nas.search_space import MIXERS, LayerArch

    spec = MIXERS[mixer]
    layer = LayerArch(
        mixer=mixer,
        heads=heads if spec.uses_heads else None,
        window=space.windows[-1] if spec.uses_window else None,
        ffn=ffn,
    )
    return Arch(d, (layer,) * depth)


def workers_for(config: SearchConfig) -> int:
    return available_cores() if config.workers == -2 else config.workers


def run_search(
    config: SearchConfig,
    run_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    say: Say | None = None,
    command: str = "nas search",
) -> SearchResult:
    """Run the whole search into `run_dir` (see the module docstring) and summarise it.

    Raises `NasError` subclasses (one line each) for bad input: budgets, supernets,
    profiles, data, storages, cluster addresses.
    """
    from . import outputs, phases  # the phases' bodies, kept apart so this file reads as a list

    say = say or (lambda msg: None)
    run = RunFolder(run_dir)
    run.check(config, resume)  # before anything slow, and before the folder is written
    if config.address and workers_for(config) != 0:
        from .ray_cluster import check_address

        check_address(config.address)
    times: dict[str, float] = {}
    with _timed(run, "supernet", times):
        source, corpus = resolve_supernet(config, progress, say)
    space = source.space
    with _timed(run, "profile", times):
        profile, profile_path, built = phases.profile_with_progress(config, space, say, progress)
    with _timed(run, "drift", times):
        drift = (
            measure_drift(profile, space, n=config.drift_archs, config=quick_measure(profile))
            if config.drift_archs
            else None
        )
    scale = drift.scale if drift is not None else 1.0
    if drift is not None:
        say(drift.line())

    def predict_many(archs: list[Arch]) -> np.ndarray:
        return profile.predict(archs) * scale

    smallest = space.smallest()
    check_budget(config.budget_ms, float(predict_many([smallest])[0]), smallest)
    run.start(config, resume, command, supernet_digest=source.digest)
    run.record(
        supernet=str(source.path.resolve()),
        space=space.to_dict(),
        profile=str(Path(profile_path).resolve()),
        drift=drift.to_dict() if drift else None,
    )
    for name, seconds in times.items():
        run.phase(name, seconds)
    storage = storage_for(config.storage or run.journal)
    study = open_study(storage, STUDY_NAME, make_sampler(config.sampler, config.seed))
    recovered = recover(study)
    if recovered:
        say(f"resume: {recovered} trial(s) left running by the last run failed and re-queued")
    if not study.trials:
        seeds = [
            a for a in (largest_feasible(space, predict_many, config.budget_ms), smallest) if a
        ]
        enqueue_first(study, space, seeds)
    seq_len = config.seq_len or space.max_seq_len
    inputs, targets = validation_batches(
        corpus.val, config.val_batch_size, seq_len, config.val_batches
    )
    settings = StudySettings(
        evaluations=config.evaluations,
        budget_ms=config.budget_ms,
        sampler=config.sampler,
        seed=config.seed,
    )
    workers = workers_for(config)
    with phases.cluster(config, workers) as ray_ctx:
        if ray_ctx is not None and not ray_ctx.started and config.workers == -2:
            workers = max(1, int(ray_ctx.cpus))  # a cluster joined: one worker per its CPUs
        with _timed(run, "search", times):
            payload = build_payload(source, inputs, targets)
            outcome = phases.search(
                study, space, payload, settings, workers, predict_many, progress, say
            )
        run.record(search={"asks": outcome.asks, "stopped_early": outcome.stopped_early})
        rows = trial_rows(study, config.budget_ms)
        candidates = phases.candidates(rows, config)
        if not candidates:
            raise NasError(
                f"no feasible arch was evaluated within {format_ms(config.budget_ms)}; "
                "give a larger --budget or more --trials"
            )
        with _timed(run, "rerank", times):
            reranked = phases.rerank(
                candidates, source, corpus, config, inputs, targets, run, workers, say
            )
    with _timed(run, "verify", times):
        ordered, verified = phases.verify_candidates(
            space, candidates, reranked, profile, scale, config, progress, say
        )
    with _timed(run, "extract", times):
        pick, winner_tuned = phases.extract_winner(
            ordered, verified, reranked, source, corpus, config, inputs, targets, run, say
        )
    with _timed(run, "report", times):
        summary, table = outputs.write_outputs(
            run,
            space,
            rows,
            config.budget_ms,
            config.batch,
            seq_len,
            str(profile.workload),
            {**drift.to_dict(), "line": drift.line()} if drift else {},
            reranked,
            winner_tuned,
            verified,
            pick,
            times,
            command,
            str(config.storage or run.journal),
        )
    run.record(status="complete", winner=summary.get("winner"))
    return SearchResult(run.path, summary, table, outputs.console_lines(summary))
