"""`run_extract`: what `nas extract` does, from a search run or a supernet, into one folder.

One model: `--run RUN` (its winner, or `--rank N` of its front) or `--arch ARCH.json
--supernet RUN`. A family: `--budgets 5ms,10ms --run RUN` (one member per budget, each the
front's most accurate member within it) or `--archs FILE`. Every output folder holds the
weights (safetensors + JSON), model_card.md and any exports asked for, each checked.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from nas.core.errors import NasError
from nas.search_space import Arch
from nas.supernet.checkpoint import load_supernet
from nas.supernet.family import FAMILY_FILE, FAMILY_WEIGHTS, save_family
from nas.supernet.storage import CONFIG_FILE, WEIGHTS_FILE, save_model

from .evaluator import SupernetSource, open_supernet, validation_batches
from .extract import (
    Extracted,
    Scoring,
    budget_members,
    finetune_family,
    inherited,
    plan_family,
    saved,
    score,
    unique_members,
)
from .fingerprint import Workload
from .model_card import MODEL_CARD, write_model_card
from .pipeline import corpus_of, workload_of
from .profile import Profile, check_space, load_profile
from .quick_profile import cached_full_or_quick
from .search_run import SearchRun
from .settings import SearchConfig

Say = Callable[[str], None]
FORMATS = ("safetensors", "onnx", "pt2")


@dataclass(frozen=True)
class ExtractRequest:
    """One `nas extract`. Give `run`, or `supernet` with `archs`."""

    out: Path  # the folder to write
    run: str = ""  # a finished `nas search` run folder
    rank: int = 0  # the front's member of this rank (1 = fastest); 0 = the run's winner
    supernet: str = ""  # the supernet to cut from; "" = the one the run searched
    archs: tuple[Arch, ...] = ()  # one arch (a model) or several (a family)
    budgets: tuple[float, ...] = ()  # a family: one member per budget (ms), from the run
    family: bool = False  # write a family (several members, one set of weights)
    formats: tuple[str, ...] = ("safetensors",)  # safetensors always; onnx, pt2 on request
    finetune_steps: int = 0  # a family: steps of fine-tuning shared by all members
    data: str = ""  # corpus to validate on; "" = the supernet's (the search's) own
    profile: str = ""  # a profile for predicted latency when there is no run
    measure: bool = True  # measure each model's latency on this device
    force: bool = False  # replace a model or family already in `out`
    command: str = "nas extract"  # the command line, for the model card

    def check(self) -> None:
        """`NasError` naming every problem with the request, before anything is read."""
        problems = []
        if not self.run and not self.supernet:
            problems.append("pass --run RUN (a search run) or --supernet RUN with --arch")
        if not self.run and not self.archs:
            problems.append("without --run, pass --arch ARCH.json (or --archs FILE)")
        if self.budgets and not self.run:
            problems.append("--budgets picks members from a search's front: pass --run RUN")
        if self.budgets and self.archs:
            problems.append("pass --budgets or --archs, not both")
        if self.rank and (self.family or self.archs):
            problems.append(
                "--rank picks one model of a run's front; drop --arch, --archs, --budgets"
            )
        if self.rank < 0:
            problems.append(f"--rank counts from 1, got {self.rank}")
        if self.finetune_steps and not self.family:
            problems.append(
                "--finetune fine-tunes a family's shared weights; a single model comes "
                "fine-tuned from the search already"
            )
        if self.finetune_steps < 0:
            problems.append(f"--finetune must be >= 0 steps, got {self.finetune_steps}")
        unknown = [f for f in self.formats if f not in FORMATS]
        if unknown:
            problems.append(f"unknown format(s) {unknown}; choose from {', '.join(FORMATS)}")
        if problems:
            raise NasError("extract: " + "; ".join(problems))


@dataclass
class ExtractResult:
    out: Path
    items: list[Extracted]
    family: dict[str, Any] | None = None  # sizes of a family artifact
    exports: list[Any] = field(default_factory=list)  # ExportCheck of each export
    notes: list[str] = field(default_factory=list)  # what the console says besides the table


def run_extract(request: ExtractRequest, say: Say | None = None, progress: bool = True):
    """Do `request` (see the module docstring); returns an `ExtractResult`.

    Raises `NasError` subclasses, one line each, for bad input: the request, the run,
    the supernet, arch files, budgets no member fits, a failed export check."""
    say = say or (lambda msg: None)
    request.check()
    _check_out(request)
    run = SearchRun(request.run) if request.run else None
    source = _supernet(request, run)
    config = run.config if run else SearchConfig(budget_ms=1.0)
    if request.data:
        config = replace(config, data=request.data)
    space = source.space
    archs = tuple(space.validate(a) for a in request.archs)
    corpus = corpus_of(source, config)
    workload = workload_of(config, space)
    inputs, targets = validation_batches(
        corpus.val, config.val_batch_size, workload.seq_len, config.val_batches
    )
    measure = request.measure and _available(workload, say)
    scoring = Scoring(
        inputs,
        targets,
        workload,
        _profile(request, run, space, workload),
        run.drift_scale if run else 1.0,
        measure,
    )
    result = ExtractResult(request.out, [])
    if request.family:
        _family(request, run, source, archs, corpus, scoring, result, say, progress)
    else:
        _single(request, run, source, archs, scoring, result, say)
    return result


def _single(request, run, source, archs, scoring, result, say) -> None:
    space = source.space
    if archs:
        item = inherited(source, archs[0])
    elif request.rank:
        entry = run.entry(request.rank)
        tuned = run.finetuned_dir(entry.arch)
        steps = run.config.rerank_steps
        item = (
            saved(tuned, entry.arch, f"fine-tuned by the search's re-rank ({steps} steps)")
            if tuned is not None
            else inherited(source, entry.arch)
        )
    else:
        winner = run.winner()
        arch = space.validate(Arch.from_dict(winner["arch"], source=f"{run.path} winner"))
        best = run.winner_dir()
        tuned = winner.get("finetuned_loss") is not None
        weights = f"fine-tuned by the search ({run.config.rerank_steps} steps)"
        item = saved(best, arch, weights if tuned else "inherited (supernet)") if best else None
        item = item or inherited(source, arch)
    say(f"scoring {item.arch.id} ({item.weights})")
    score(space, item, scoring)
    _search_figures(run, item)
    save_model(item.model, request.out)
    result.items.append(item)
    files = ["model.safetensors", CONFIG_FILE]
    _write_exports(request.formats, item.model, request.out / "model", result, files)
    _card(request, run, source, result, files + [MODEL_CARD], None)


def _family(request, run, source, archs, corpus, scoring, result, say, progress) -> None:
    space = source.space
    if request.budgets:
        named, notes = budget_members(
            request.budgets, lambda b: run.pick(b).arch, run.config.budget_ms
        )
    else:
        named, notes = [(a.id, a) for a in archs], []
    members, dup_notes = unique_members(named)
    result.notes += notes + dup_notes
    plan = plan_family(source, members)
    net = load_supernet(plan.checkpoint)
    before = {}
    if request.finetune_steps:
        quiet = replace(scoring, measure=False)
        for name, arch in members.items():
            item = Extracted(name, arch, net.extract(arch).eval(), "inherited")
            before[name] = score(space, item, quiet).info["val_loss"]
        say(
            f"fine-tuning the {len(members)} members' shared weights {request.finetune_steps} steps"
        )
        seq_len = scoring.workload.seq_len
        batch = run.config.rerank_batch_size if run else 2
        net = finetune_family(
            plan,
            corpus,
            request.finetune_steps,
            batch,
            seq_len,
            request.out.parent,
            progress=progress,
        )
    weights = (
        f"shared, fine-tuned {request.finetune_steps} steps on all members"
        if request.finetune_steps
        else "inherited (supernet), shared"
    )
    for name, arch in members.items():
        say(f"scoring member {name} ({arch.id})")
        item = score(space, Extracted(name, arch, net.extract(arch).eval(), weights), scoring)
        if name in before:
            item.info["loss_before_finetune"] = before[name]
            item.info["loss_after_finetune"] = item.info["val_loss"]
        _search_figures(run, item)
        result.items.append(item)
    sizes = save_family(net, members, request.out, {i.name: _json_info(i) for i in result.items})
    result.family = {
        "union_params": sizes.union_params,
        "sum_params": sizes.sum_params,
        "union_bytes": sizes.union_bytes,
        "sum_bytes": sizes.sum_bytes,
        "finetune_steps": request.finetune_steps,
    }
    files = [FAMILY_FILE, "family.safetensors"]
    for item in result.items:
        _write_exports(request.formats, item.model, request.out / item.name, result, files)
    _card(request, run, source, result, files + [MODEL_CARD], result.family)


def _json_info(item: Extracted) -> dict[str, Any]:
    info = {k: v for k, v in item.info.items() if k != "workload"}
    return {**info, "workload": item.info.get("workload"), "weights": item.weights}


def _search_figures(run: SearchRun | None, item: Extracted) -> None:
    """What the search itself measured for this arch, where it did."""
    entry = run.entry_for(item.arch) if run else None
    if entry is not None:
        item.info["search_loss"] = entry.loss
        item.info["search_measured_ms"] = entry.measured_ms


def _card(request, run, source, result, files, family) -> None:
    provenance = {
        "extract_command": request.command,
        "supernet": str(source.path),
        "supernet_digest": source.digest,
    }
    if run is not None:
        provenance.update(search_command=run.command, search_run=str(run.path), profile=run.profile)
    write_model_card(request.out, result.items, provenance, files, family)


def _write_exports(formats, model, stem: Path, result: ExtractResult, files: list[str]) -> None:
    """Each export asked for of `model`, as STEM.FMT, checked; the model is traced once
    for all of them."""
    wanted = [fmt for fmt in formats if fmt != "safetensors"]
    if not wanted:
        return
    from nas.supernet.export import export_onnx, export_pt2, trace

    program = trace(model, fmt="+".join(wanted))
    for fmt in wanted:
        path = stem.with_name(f"{stem.name}.{fmt}")
        write = export_onnx if fmt == "onnx" else export_pt2
        result.exports.append(write(model, path, program=program))
        files.append(path.name)


def _supernet(request: ExtractRequest, run: SearchRun | None) -> SupernetSource:
    path = request.supernet or (run.supernet if run else "")
    if run is not None and not path:
        raise NasError(f"{run.path}: its manifest names no supernet; pass --supernet RUN")
    if run is not None and not request.supernet and not Path(path).exists():
        raise NasError(
            f"{run.path}: the supernet it searched, {path}, is not there from here (older searches "
            "recorded it relative to where they ran); pass --supernet PATH"
        )
    source = open_supernet(path, run.space if run else None)
    if run is not None and request.supernet and source.digest != run.supernet_digest:
        raise NasError(
            f"{request.supernet}: not the supernet {run.path} searched (its digest differs); "
            "drop --supernet to use the run's own"
        )
    return source


def _profile(request, run, space, workload: Workload) -> Profile | None:
    """The profile that predicts latency: the run's, the one given, or a cached one."""
    if run is not None and run.profile and Path(run.profile).is_file():
        return load_profile(run.profile)
    if request.profile:
        profile = load_profile(request.profile)
        check_space(profile, space)
        return profile
    cached = cached_full_or_quick(space, workload)
    return cached[0] if cached else None


def _available(workload: Workload, say: Say) -> bool:
    try:
        workload.check_available()
    except NasError as exc:
        say(f"latency not measured: {exc}")
        return False
    return True


def _check_out(request: ExtractRequest) -> None:
    out = request.out
    if out.exists() and not out.is_dir():
        raise NasError(f"--out {out}: a file, not a folder; name a new folder")
    held = [f for f in (CONFIG_FILE, FAMILY_FILE, MODEL_CARD) if (out / f).exists()]
    if held and not request.force:
        raise NasError(
            f"--out {out}: already holds an extracted model ({held[0]}); pass --force to "
            "replace it, or name another folder"
        )
    if held:
        _remove_artifacts(out)


def _remove_artifacts(out: Path) -> None:
    """Delete what an earlier `nas extract` wrote in `out` (and nothing else), so that a
    replaced model never leaves files of another kind behind: a stale model.safetensors
    beside a new family.json would be loaded as if it were current."""
    names = [CONFIG_FILE, WEIGHTS_FILE, FAMILY_FILE, FAMILY_WEIGHTS, MODEL_CARD]
    names += [f"model.{fmt}" for fmt in FORMATS]
    if (out / FAMILY_FILE).is_file():
        try:
            members = json.loads((out / FAMILY_FILE).read_text()).get("members", {})
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            members = {}
        names += [f"{name}.{fmt}" for name in members for fmt in FORMATS if fmt != "safetensors"]
    for name in names:
        (out / name).unlink(missing_ok=True)
