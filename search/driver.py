"""The search loop: one driver owns an Optuna study and feeds archs to evaluators, ask/tell.

Each trial is one arch (search/encoding.py). Before anything else the driver prices it
with the latency profile: an arch predicted over the budget is told to Optuna at once as
infeasible (`trial.set_constraint`) and never evaluated. A feasible arch already scored
(or being scored) in this study is a repeat, told as pruned so that the sampler moves on;
a new one goes to the evaluation pool, and its loss is told when it comes back. Optuna
keeps the (loss, latency) Pareto front.

The study lives in a storage that survives the driver (a journal file by default): after
a crash, `recover` fails the trials left running and enqueues their archs again, so a
rerun loses no completed trial and evaluates none twice.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import Trial, TrialState

from nas.core.errors import NasError, StorageError
from nas.search_space import Arch, SearchSpace

from .encoding import decode, distributions, encode
from .settings import SAMPLERS

if TYPE_CHECKING:
    from .workers import EvalResult

LATENCY_CONSTRAINT = "latency_over_budget_ms"  # predicted ms - budget; > 0 is infeasible


@dataclass(frozen=True)
class StudySettings:
    """What one search asks of the study."""

    evaluations: int  # distinct feasible archs to evaluate (the search's cost)
    budget_ms: float  # hard latency constraint on the predicted latency, ms
    sampler: str = "tpe"  # one of SAMPLERS
    seed: int = 0  # seeds the sampler
    # Asks that yield no new evaluation (over budget, or an arch already scored) are cheap
    # but not free; a space almost all over budget would otherwise spin for ever.
    max_asks_per_evaluation: int = 50


def make_sampler(name: str, seed: int, startup: int = 10) -> optuna.samplers.BaseSampler:
    """A seeded sampler by name; `NasError` listing the valid names for another."""
    if name == "tpe":
        return optuna.samplers.TPESampler(
            seed=seed, multivariate=True, n_startup_trials=startup, constant_liar=True
        )
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(8, startup))
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise NasError(f"unknown sampler {name!r}; valid samplers are {', '.join(SAMPLERS)}")


def storage_for(spec: str | Path) -> optuna.storages.BaseStorage:
    """An Optuna storage: a journal file for a path, an RDB for a URL (`sqlite:///...`,
    `postgresql://...`). `StorageError` with one line when it cannot be opened."""
    text = str(spec)
    try:
        if "://" in text:
            return optuna.storages.RDBStorage(text)
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        path = Path(text)
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    except Exception as exc:  # noqa: BLE001 (storages raise anything from drivers to OSError)
        raise StorageError(
            f"--storage {text}: cannot open it ({type(exc).__name__}: "
            f"{' '.join(str(exc).split())[:160]}); pass a writable journal file path or a "
            "database URL such as postgresql://user@host/db"
        ) from None


def open_study(
    storage: optuna.storages.BaseStorage, name: str, sampler: optuna.samplers.BaseSampler
) -> optuna.Study:
    """Create the study `name` in `storage`, or load it if it exists (a resume)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return optuna.create_study(
            study_name=name,
            storage=storage,
            sampler=sampler,
            directions=["minimize", "minimize"],
            load_if_exists=True,
        )
    except ValueError as exc:  # e.g. an existing study of other directions
        raise StorageError(f"study {name!r}: {exc}") from None


def recover(study: optuna.Study) -> int:
    """Fail the trials a killed driver left running and enqueue their archs again.

    Returns how many were recovered. Their archs are evaluated anew (they were never told),
    so no completed trial is lost and none is counted twice."""
    stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for trial in stale:
        study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
        study.enqueue_trial(dict(trial.params), user_attrs={"retry_of": trial.number})
    return len(stale)


@dataclass
class Progress:
    """Counts the loop reports as it goes (for a progress bar)."""

    evaluated: int = 0  # distinct archs scored in the study, this run and before
    infeasible: int = 0  # trials over the budget in this run
    repeated: int = 0  # trials whose arch was already scored
    failed: int = 0  # evaluations that failed after their retries
    best_loss: float = math.inf  # best feasible loss so far


@dataclass
class StudyOutcome:
    """What the loop did in this run."""

    progress: Progress
    asks: int  # trials asked in this run
    seconds: float
    stopped_early: str = ""  # why the loop stopped short of its evaluations, if it did
    notes: list[str] = field(default_factory=list)


def enqueue_first(study: optuna.Study, space: SearchSpace, archs: list[Arch]) -> None:
    """Queue `archs` as the study's first trials (skipped if already queued or run)."""
    for arch in archs:
        study.enqueue_trial(encode(space, arch), user_attrs={"seeded": True}, skip_if_exists=True)


def scored_archs(study: optuna.Study) -> dict[str, float]:
    """arch id -> inherited loss of every arch evaluated in the study so far."""
    out = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if t.user_attrs.get("evaluated"):
            out[t.user_attrs["arch_id"]] = t.values[0]
    return out


def run_study(
    study: optuna.Study,
    space: SearchSpace,
    predict_ms: Callable[[Arch], float],
    pool: Any,
    settings: StudySettings,
    on_progress: Callable[[Progress], None] | None = None,
) -> StudyOutcome:
    """Ask, price, evaluate and tell until the study holds `settings.evaluations` scored archs.

    `pool` evaluates archs (search/workers.py: `submit`, `wait`, `pending`, `size`).
    `predict_ms(arch)` is the (drift-scaled) predicted latency. Infeasible archs are told
    with the loss of a uniform guess, ln(vocab), which no trained model exceeds, and the
    violated constraint; constraint-aware samplers rank them below every feasible one.
    """
    dists = distributions(space)
    ceiling = math.log(space.vocab_size)
    scored = scored_archs(study)
    progress = Progress(evaluated=len(scored))
    if scored:
        progress.best_loss = min(scored.values())
    waiting: set[str] = set()  # arch ids being evaluated
    in_flight: dict[int, tuple[Trial, Arch, float]] = {}
    started = time.perf_counter()
    asks = 0
    max_asks = settings.max_asks_per_evaluation * settings.evaluations + 100
    stopped = ""

    while progress.evaluated + len(in_flight) < settings.evaluations or in_flight:
        while (
            len(in_flight) < pool.size
            and progress.evaluated + len(in_flight) < settings.evaluations
            and asks < max_asks
        ):
            trial = study.ask(dists)
            asks += 1
            arch = decode(space, trial.params)
            predicted = float(predict_ms(arch))
            trial.set_user_attr("arch", arch.to_json())
            trial.set_user_attr("arch_id", arch.id)
            trial.set_user_attr("predicted_ms", predicted)
            trial.set_constraint(LATENCY_CONSTRAINT, predicted - settings.budget_ms)
            if predicted > settings.budget_ms:
                progress.infeasible += 1
                trial.set_user_attr("evaluated", False)
                study.tell(trial, [ceiling, predicted])
            elif arch.id in scored or arch.id in waiting:
                # Told as pruned, not as another completed trial of the same arch: TPE
                # counts a pruned trial among the bad ones, so it moves on instead of
                # proposing the arch again and again (it proposed one arch ~800 times in
                # 1,700 trials when repeats were told their loss again).
                progress.repeated += 1
                trial.set_user_attr("repeat_of", arch.id)
                study.tell(trial, state=TrialState.PRUNED)
            else:
                waiting.add(arch.id)
                in_flight[trial.number] = (trial, arch, predicted)
                pool.submit(trial.number, arch)
        if not in_flight:
            if asks >= max_asks and progress.evaluated < settings.evaluations:
                stopped = (
                    f"{asks} trials gave only {progress.evaluated} feasible archs to evaluate "
                    f"(of {settings.evaluations}); most of the space is over the budget"
                )
            break
        for result in pool.wait():
            trial, arch, predicted = in_flight.pop(result.key)
            waiting.discard(arch.id)
            _tell_result(study, trial, arch, predicted, result)
            if result.loss is None:
                progress.failed += 1
                continue
            scored[arch.id] = result.loss
            progress.evaluated += 1
            progress.best_loss = min(progress.best_loss, result.loss)
        if on_progress:
            on_progress(progress)
    return StudyOutcome(progress, asks, time.perf_counter() - started, stopped)


def _tell_result(
    study: optuna.Study, trial: Trial, arch: Arch, predicted: float, result: EvalResult
) -> None:
    """Tell `trial` its evaluation, with where it ran."""
    trial.set_user_attr("node", result.node)
    trial.set_user_attr("worker", result.worker)
    trial.set_user_attr("eval_s", result.seconds)
    trial.set_user_attr("attempts", result.attempts)
    if result.loss is None:
        trial.set_user_attr("error", result.error)
        study.tell(trial, state=TrialState.FAIL)
        return
    trial.set_user_attr("evaluated", True)
    study.tell(trial, [result.loss, predicted])


@dataclass(frozen=True)
class TrialRow:
    """One trial of the study, as reports read it."""

    number: int
    arch: Arch
    loss: float | None  # inherited validation loss; None if never evaluated
    predicted_ms: float
    state: str  # "complete" | "infeasible" | "failed" | "repeat"
    node: str = ""
    worker: str = ""
    seconds: float = 0.0


def trial_rows(study: optuna.Study, budget_ms: float) -> list[TrialRow]:
    """Every finished trial of the study that names an arch, in trial order."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        if "arch" not in t.user_attrs or t.state in (TrialState.RUNNING, TrialState.WAITING):
            continue
        arch = Arch.from_json(t.user_attrs["arch"])
        predicted = float(t.user_attrs["predicted_ms"])
        if t.state == TrialState.PRUNED:
            state, loss = "repeat", None
        elif t.state == TrialState.FAIL:
            state, loss = "failed", None
        elif predicted > budget_ms:
            state, loss = "infeasible", None
        elif t.user_attrs.get("evaluated"):
            state, loss = "complete", t.values[0]
        else:
            state, loss = "repeat", t.values[0]
        rows.append(
            TrialRow(
                number=t.number,
                arch=arch,
                loss=loss,
                predicted_ms=predicted,
                state=state,
                node=str(t.user_attrs.get("node", "")),
                worker=str(t.user_attrs.get("worker", "")),
                seconds=float(t.user_attrs.get("eval_s", 0.0)),
            )
        )
    return rows
