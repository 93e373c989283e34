"""Supernet training: the loop around the sandwich step, and the run folder it writes.

Each step draws one batch and runs `sandwich.sandwich_step` on it (the largest arch, the
smallest, and `random_archs` sampled archs, with in-place distillation and a loss at
every exit), clips the gradients, and steps AdamW with a warmup + cosine learning rate.
With `sandwich=False` a step runs `sandwich.family_step` instead: the family archs
alone, on the targets (a fine-tune of a search's candidates from a trained supernet).
At intervals it measures the validation loss of fixed reference archs, appends metrics
to a JSONL file, and writes a checkpoint.

Randomness comes only from two seeded numpy generators (archs, batch positions) and the
supernet's seeded initialisation, and their states are checkpointed, so on the CPU a
resumed run reproduces the uninterrupted one exactly.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nas.core.atomic import atomic_write_json, atomic_write_text
from nas.core.errors import ArchError, CheckpointError, DataError, NasError
from nas.search_space import Arch, SearchSpace

from .batches import BatchSampler, check_length, eval_batches
from .checkpoint import (
    Checkpoint,
    checkpoint_file,
    checkpoint_path,
    read_checkpoint,
    restore,
    save_checkpoint,
)
from .corpus import Corpus
from .device import autocast, resolve_device
from .sandwich import cross_entropy, family_step, sandwich_step
from .supernet import Supernet

Tensor = torch.Tensor

RUN_FORMAT = "nas.train-run/1"
MANIFEST_FILE = "manifest.json"
METRICS_FILE = "metrics.jsonl"
REFERENCE_SEED = 20240601  # reference archs are the same for every run over a space


@dataclass(frozen=True)
class TrainConfig:
    """Everything that shapes a training run (and must not change when it is resumed)."""

    steps: int = 250  # optimizer steps (defaults: ~3-5 min on 2 CPU cores, default space)
    batch_size: int = 8  # sequences per step, B
    seq_len: int = 64  # tokens per sequence, T (<= the space's max_seq_len)
    random_archs: int = 2  # k: random archs per step besides the largest and the smallest
    # Share of the random archs drawn with one mixer in every layer (the mixer drawn
    # uniformly). Uniform per-layer draws almost never give such stacks, so without them
    # a mixer's weights only ever learn on the outputs of other mixers; with half of
    # them, inherited losses of conv/GLU/ssm stacks moved 2-4 points closer to standalone
    # training (bench/bench_weight_sharing.py, README).
    homogeneous_share: float = 0.5
    # Fair sampling (FairNAS, Chu et al. 2019): instead of `random_archs` random archs,
    # one arch per mixer of the space, all of the deepest exit, with each layer's mixers
    # a random permutation across them; so every mixer trains at every layer in every
    # step, and none lags behind the others in updates. Widths are drawn as usual.
    fair: bool = False
    # The sandwich's largest and smallest archs draw each layer's mixer at random at every
    # step; only their widths and depths stay the extremes. Mixers are not nested as widths
    # are, so the fixed extremes (attention everywhere, skip everywhere) are not bounds of
    # the other archs: trained at every step, they pull the shared weights their way.
    sandwich_random_mixers: bool = False
    # An FFN (and FFN norm) per (layer slot, mixer) instead of one per slot shared by all
    # mixers: the supernet's weight layout, so it is stored with the checkpoint's config.
    ffn_per_mixer: bool = False
    # A family: archs (canonical arch JSON) trained at every step as students, after the
    # smallest and before the random ones. Inherited weights are only as good as the
    # training an arch's exact combination of mixers got: a random mixed-layer arch, whose
    # combination the sampler almost never draws whole, was 19% behind standalone
    # training, and 3.5% behind as a family member (bench/bench_weight_sharing.py
    # --family, README). Listing the archs to ship (a search's picks) gives them that
    # training within one set of nested weights.
    family: tuple[str, ...] = ()
    # Start from another run's trained weights (a checkpoint file or run folder) instead of
    # a fresh initialisation; the optimizer and schedule start afresh. With a family, this
    # specialises a trained supernet to the archs a search picked, without retraining it.
    init_from: str = ""
    # Branch another run (its run folder or checkpoint), stopped before its last step: start
    # from its weights, optimizer state, step and random streams, and follow its schedule to
    # the end, with the same settings but more `pinned_mixers`. Few-shot sub-supernets
    # branched so continue the one-shot warmup and cosine instead of restarting them.
    branch_from: str = ""
    # Few-shot NAS (Zhao et al. 2021): layers pinned to one mixer each, as "SLOT:MIXER"
    # ("0:conv" pins the first layer to conv). Every arch the sandwich trains has those
    # mixers there, so the run is one sub-supernet of a split of the space on those
    # layers: its weights never have to serve the other mixers' archs. Started from a
    # one-shot run (`init_from`), one such run per mixer is the few-shot supernet.
    pinned_mixers: tuple[str, ...] = ()
    # False: train only the `family` archs, on the targets' cross-entropy at every exit
    # they pass; no largest, smallest or random archs, and only the family is validated.
    # Fine-tunes a search's candidates from their inherited weights (search/rerank.py).
    sandwich: bool = True
    lr: float = 3e-3  # peak learning rate
    min_lr_ratio: float = 0.1  # the cosine decays to lr * min_lr_ratio at the last step
    warmup_steps: int = 20  # linear warmup from lr / warmup_steps to lr
    weight_decay: float = 0.1  # AdamW decoupled decay, on matrices only
    beta1: float = 0.9  # AdamW first-moment decay
    beta2: float = 0.95  # AdamW second-moment decay
    grad_clip: float = 1.0  # max global gradient norm
    distill_weight: float = 0.5  # subnets' loss: w * KL(teacher || subnet) + (1 - w) * CE
    early_exit_weight: float = 0.25  # weight of each exit before an arch's own (its own: 1)
    eval_every: int = 50  # steps between validations of the reference archs
    eval_batches: int = 4  # fixed validation batches per reference arch
    reference_archs: int = 4  # sampled reference archs, besides the largest and smallest
    checkpoint_every: int = 50  # steps between checkpoints (and one at the end)
    seed: int = 0  # seeds the initial weights, the arch sampler and the batch sampler

    def __post_init__(self) -> None:
        problems = []
        for name in ("steps", "batch_size", "seq_len", "eval_every", "checkpoint_every"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("random_archs", "warmup_steps", "eval_batches", "reference_archs"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0, got {getattr(self, name)}")
        if not self.lr > 0:
            problems.append(f"lr must be > 0, got {self.lr}")
        for name in ("distill_weight", "min_lr_ratio", "early_exit_weight", "homogeneous_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                problems.append(f"{name} must be in [0, 1], got {getattr(self, name)}")
        for pin in self.pinned_mixers:
            slot, _, mixer = str(pin).partition(":")
            if not (slot.isdigit() and mixer):
                problems.append(f"pinned_mixers: {pin!r} is not SLOT:MIXER (e.g. 0:conv)")
        if self.init_from and self.branch_from:
            problems.append("init_from and branch_from exclude each other")
        if not self.sandwich and not self.family:
            problems.append("sandwich=False trains only the family, which is empty")
        if not self.sandwich and (self.fair or self.sandwich_random_mixers):
            problems.append("fair and sandwich_random_mixers shape the sandwich; sandwich=False")
        if problems:
            raise NasError("training config: " + "; ".join(problems))
        object.__setattr__(self, "family", tuple(self.family))  # JSON gives a list
        object.__setattr__(self, "pinned_mixers", tuple(self.pinned_mixers))

    def family_archs(self, space: SearchSpace) -> list[Arch]:
        """The family as archs of `space`; `ArchError` names a member that is not in it."""
        archs = []
        for i, text in enumerate(self.family):
            arch = Arch.from_json(text, source=f"family arch {i}")
            try:
                archs.append(space.validate(arch))
            except ArchError as exc:
                raise ArchError(f"family arch {i}: {exc}") from None
        return archs

    def pins(self, space: SearchSpace) -> dict[int, str]:
        """{layer slot: mixer} of `pinned_mixers`; `NasError` names a pin `space` lacks."""
        pins: dict[int, str] = {}
        for pin in self.pinned_mixers:
            slot, _, mixer = pin.partition(":")
            if int(slot) >= space.max_depth or mixer not in space.mixers or int(slot) in pins:
                raise NasError(
                    f"pinned mixer {pin!r}: need a layer slot below {space.max_depth}, pinned "
                    f"once, and a mixer of {list(space.mixers)}"
                )
            pins[int(slot)] = mixer
        return pins

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class TrainResult:
    """What a finished (or resumed-and-finished) run reports."""

    run_dir: Path  # the run folder
    checkpoint: Path  # its last checkpoint file
    step: int  # steps done
    tokens: int  # training tokens seen by every sandwich arch (step * B * T)
    val_loss: dict[str, float] = field(default_factory=dict)  # nats/token per reference arch
    seconds: float = 0.0  # wall time of this process's part of the run


# --------------------------------------------------------------------- schedule
def lr_at(step: int, config: TrainConfig) -> float:
    """Learning rate for optimizer step `step` (0-based): linear warmup, then cosine decay."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    span = max(1, config.steps - config.warmup_steps - 1)
    progress = min(1.0, (step - config.warmup_steps) / span)
    floor = config.lr * config.min_lr_ratio
    return floor + (config.lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_optimizer(net: torch.nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW with decay on weight matrices only (not norms, biases, per-head scalars).

    The fused implementation updates each tensor in one pass: a supernet step updates
    max-size tensors (zero gradient outside the sampled prefix), so the optimizer's
    memory traffic is much of what a subnet's step costs beyond its static model's.
    """
    decay, no_decay = [], []
    for name, param in net.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        is_bias = leaf.startswith("b_") or leaf in ("bias", "b1", "b2")
        (decay if param.dim() >= 2 and not is_bias else no_decay).append(param)
    return torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": config.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=config.lr,
        betas=(config.beta1, config.beta2),
        fused=all(p.device.type in ("cpu", "cuda") for p in net.parameters()),
    )


@torch.no_grad()
def evaluate(
    net: Supernet,
    archs: dict[str, Arch],
    batches: list[tuple[Tensor, Tensor]],
    device: torch.device,
) -> dict[str, float]:
    """Mean validation cross-entropy (nats/token) of each named arch over fixed batches."""
    was_training = net.training
    net.eval()
    out = {}
    try:
        for name, arch in archs.items():
            total, count = 0.0, 0
            for inputs, targets in batches:
                inputs, targets = inputs.to(device), targets.to(device)
                with autocast(device):
                    logits = net(inputs, arch)  # (B, T, V)
                total += cross_entropy(logits, targets).item() * targets.numel()
                count += targets.numel()
            out[name] = total / count
    finally:
        net.train(was_training)
    return out


def reference_archs(
    space: SearchSpace, n: int, pins: dict[int, str] | None = None
) -> dict[str, Arch]:
    """The fixed archs validated during training: largest, smallest, and `n` sampled ones.

    With `pins`, each has the pinned mixers: a sub-supernet of a few-shot split is only
    trained, and so only validated, on archs with them."""
    pins = pins or {}
    largest, smallest = pinned_extremes(space, pins)
    refs = {"largest": largest, "smallest": smallest}
    rng = np.random.default_rng([REFERENCE_SEED, 1])
    for i, arch in enumerate(space.sample_many(n, seed=REFERENCE_SEED)):
        refs[f"ref{i}"] = with_pins(space, arch, pins, rng)
    return refs


# --------------------------------------------------------------------- run folder
class MetricsLog:
    """Append-only JSONL of training and validation records, one JSON object per line."""

    def __init__(self, path: Path):
        self.path = path

    def append(self, record: dict[str, Any]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
            f.flush()

    def read(self) -> list[dict[str, Any]]:
        """Every complete record; a line torn by a kill is skipped."""
        if not self.path.is_file():
            return []
        records = []
        for line in self.path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return records

    def truncate_after(self, step: int) -> None:
        """Drop records past `step` (written after the checkpoint a resumed run starts from)."""
        kept = [r for r in self.read() if r.get("step", 0) <= step]
        atomic_write_text(self.path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))


def logged_passes(run_dir: str | Path) -> int | None:
    """Forward+backward passes of an arch on a batch over the run's steps, as its
    metrics.jsonl logged them (repeats merged); None if some step predates that log."""
    steps = [r for r in MetricsLog(Path(run_dir) / METRICS_FILE).read() if r["kind"] == "train"]
    if not all("passes" in r for r in steps):
        return None
    return sum(r["passes"] for r in steps)


def read_manifest(run_dir: str | Path) -> dict[str, Any] | None:
    try:
        return json.loads((Path(run_dir) / MANIFEST_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return None


# --------------------------------------------------------------------- the loop
@dataclass
class _Streams:
    """The run's random streams: which archs are sampled and where batches are cut."""

    archs: np.random.Generator
    batches: BatchSampler

    def state(self) -> dict[str, Any]:
        return {"arch_rng": self.archs.bit_generator.state, "batch_rng": self.batches.state()}

    def set_state(self, state: dict[str, Any]) -> None:
        self.archs.bit_generator.state = state["arch_rng"]
        self.batches.set_state(state["batch_rng"])


def train(
    space: SearchSpace,
    corpus: Corpus,
    config: TrainConfig,
    run_dir: str | Path,
    *,
    resume: bool = False,
    device: str | torch.device = "auto",
    progress: bool = True,
    stop_after: int | None = None,
    on_event: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train a supernet over `space` on `corpus`, writing everything to `run_dir`.

    `run_dir` receives manifest.json, metrics.jsonl and checkpoint.safetensors. With
    `resume`, the run continues from its checkpoint with the checkpoint's config (a
    different `config` raises), else from step 0. `stop_after` ends this call after that
    many steps in total (for tests that interrupt a run); `on_event` receives one-line
    status messages (e.g. where the checkpoint is).

    Raises `CheckpointError` for an unusable checkpoint or one for another space,
    `DataError` when the corpus is too small or its tokens exceed the vocabulary,
    `DeviceError` for an unavailable device.
    """
    run_dir = Path(run_dir)
    config = _resolved_sources(config)
    device = device if isinstance(device, torch.device) else resolve_device(device)
    say = on_event or (lambda msg: None)
    _check_corpus(space, corpus, config)
    family = config.family_archs(space)  # checked before anything is written
    pins = config.pins(space)
    ckpt_file = checkpoint_path(run_dir)
    ckpt = None
    if ckpt_file.exists():
        if not resume:
            raise CheckpointError(
                f"{run_dir}: already holds a checkpoint; pass --resume to continue it, "
                f"or choose another --out"
            )
        ckpt = read_checkpoint(ckpt_file, space)
        saved = _resolved_sources(TrainConfig.from_dict(ckpt.state.get("config", {})))
        if saved != config and not _moved_sources(saved, config, ckpt):
            raise CheckpointError(f"{ckpt_file}: {_config_diff(saved, config)}")
        _check_same_data(ckpt, corpus)

    net = Supernet(space, seed=config.seed, ffn_per_mixer=config.ffn_per_mixer)
    net = net.to(device).train()
    optimizer = make_optimizer(net, config)
    params = list(net.parameters())  # listed once: walking the module tree costs per step
    streams = _Streams(
        archs=np.random.default_rng([config.seed, 1]),
        batches=BatchSampler(
            corpus.train, config.batch_size, config.seq_len, np.random.default_rng([config.seed, 2])
        ),
    )
    refs = reference_archs(space, config.reference_archs, pins) if config.sandwich else {}
    refs.update({f"family{i}": arch for i, arch in enumerate(family)})  # validated too
    val_batches = eval_batches(corpus.val, config.batch_size, config.seq_len, config.eval_batches)
    metrics = MetricsLog(run_dir / METRICS_FILE)
    usage: Counter[str] = Counter()  # steps in which each layer slot's mixer weights trained
    step = 0
    # Which checkpoint the run started from, kept so that a resume can tell that source,
    # moved to another path (a few-shot folder moved whole), from another run.
    source_digest = "" if ckpt is None else ckpt.state.get("source_digest", "")
    if ckpt is None and config.init_from:
        source = read_checkpoint(config.init_from, space)
        source_digest = source.digest
        restore(source, net)
        # Continue the source's streams, so that the new run draws batches it has not seen.
        streams.set_state(source.state)
    if ckpt is None and config.branch_from:
        source = read_checkpoint(config.branch_from, space)
        source_digest = source.digest
        _check_branch(source, config, corpus)
        restore(source, net, optimizer)
        streams.set_state(source.state)
        usage.update(source.state.get("usage", {}))
        step = source.step
    if ckpt is not None:
        restore(ckpt, net, optimizer)
        streams.set_state(ckpt.state)
        usage.update(ckpt.state.get("usage", {}))
        step = ckpt.step
        metrics.truncate_after(step)
        say(f"resuming {ckpt_file} at step {step}")
    else:
        run_dir.mkdir(parents=True, exist_ok=True)
        metrics.path.unlink(missing_ok=True)
    manifest = _manifest(space, corpus, config, device, refs, step, status="running")
    atomic_write_json(run_dir / MANIFEST_FILE, manifest)
    say(f"checkpoint: {ckpt_file}")

    def checkpoint(at: int) -> None:
        state = {
            "step": at,
            "tokens": at * config.batch_size * config.seq_len,
            "config": config.to_dict(),
            "data": _data_ref(corpus),
            "usage": dict(sorted(usage.items())),
            "source_digest": source_digest,
            **streams.state(),
        }
        save_checkpoint(ckpt_file, net, optimizer, state)

    tokens_per_step = config.batch_size * config.seq_len
    last = config.steps if stop_after is None else min(config.steps, stop_after)
    val: dict[str, float] = {}
    started = time.perf_counter()
    with _progress_bar(config.steps, step, progress) as bar:
        while step < last:
            t0 = time.perf_counter()
            lr = lr_at(step, config)
            for group in optimizer.param_groups:
                group["lr"] = lr
            if config.sandwich:
                step_largest, students = _sandwich_archs(space, config, family, pins, streams)
                usage.update(_parts_used([step_largest, *students]))
            else:
                usage.update(_parts_used(family))
            inputs, targets = streams.batches.next()
            inputs, targets = inputs.to(device), targets.to(device)  # (B, T)
            optimizer.zero_grad(set_to_none=True)
            if config.sandwich:
                losses = sandwich_step(
                    net,
                    inputs,
                    targets,
                    step_largest,
                    students,
                    config.distill_weight,
                    config.early_exit_weight,
                    device,
                )
            else:
                losses = family_step(net, inputs, targets, family, config.early_exit_weight, device)
            grad_norm = torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
            optimizer.step()
            step += 1
            seconds = time.perf_counter() - t0
            _check_finite(losses, step)
            metrics.append(
                {
                    "kind": "train",
                    "step": step,
                    "tokens": step * tokens_per_step,
                    "lr": lr,
                    **_train_losses(losses),
                    "passes": losses["passes"],  # forward+backward passes, repeats merged
                    "grad_norm": float(grad_norm),
                    "tokens_per_s": tokens_per_step / seconds,
                }
            )
            if step % config.eval_every == 0 or step == config.steps:
                val = evaluate(net, refs, val_batches, device)
                metrics.append({"kind": "eval", "step": step, "val_loss": val})
            if step % config.checkpoint_every == 0 or step == last:
                checkpoint(step)
            bar.update(1)
            bar.set_postfix_str(_postfix(tokens_per_step / seconds, losses, val), refresh=False)
    if step == config.steps and not val:
        # Resumed exactly at the end: report the last validation the run recorded.
        evals = [r for r in metrics.read() if r.get("kind") == "eval"]
        val = evals[-1]["val_loss"] if evals else evaluate(net, refs, val_batches, device)
    if step == config.steps:
        manifest.update(status="complete", step=step, final_val_loss=val, usage=dict(usage))
    else:
        manifest.update(status="stopped", step=step)
    atomic_write_json(run_dir / MANIFEST_FILE, manifest)
    return TrainResult(
        run_dir=run_dir,
        checkpoint=ckpt_file,
        step=step,
        tokens=step * tokens_per_step,
        val_loss=val,
        seconds=time.perf_counter() - started,
    )


def _sandwich_archs(
    space: SearchSpace,
    config: TrainConfig,
    family: list[Arch],
    pins: dict[int, str],
    streams: _Streams,
) -> tuple[Arch, list[Arch]]:
    """One step's sandwich: the largest arch, and its students (the smallest arch, the
    family, then the random or fair archs), drawn from the run's arch stream."""
    largest, smallest = pinned_extremes(space, pins)
    if config.sandwich_random_mixers:
        top = random_mixers(space, streams.archs, largest.depth)
        bottom = random_mixers(space, streams.archs, smallest.depth)
        largest = space.largest(pinned(top, pins))
        smallest = space.smallest(pinned(bottom, pins))
    students = [smallest, *family] + (
        fair_students(space, streams.archs, pins)
        if config.fair
        else [
            sample_student(space, streams.archs, config.homogeneous_share, pins)
            for _ in range(config.random_archs)
        ]
    )
    return largest, students


def sample_student(
    space: SearchSpace,
    rng: np.random.Generator,
    homogeneous_share: float,
    pins: dict[int, str] | None = None,
) -> Arch:
    """A random arch of the sandwich: with probability `homogeneous_share` one mixer
    throughout, else every choice uniform. With a share of 0 the stream is untouched.
    With `pins`, an arch that lacks a pinned mixer is drawn again with it (its other
    mixers kept), so the stream of an unpinned run is untouched too."""
    if homogeneous_share > 0 and rng.random() < homogeneous_share:
        arch = space.sample(rng=rng, mixer=str(rng.choice(space.mixers)))
    else:
        arch = space.sample(rng=rng)
    return with_pins(space, arch, pins or {}, rng)


def with_pins(
    space: SearchSpace, arch: Arch, pins: dict[int, str], rng: np.random.Generator
) -> Arch:
    """`arch`, or if it lacks a pinned mixer, an arch drawn from `rng` with its mixers and
    the pinned ones (`rng` is untouched when nothing is pinned)."""
    mixers = mixers_of(arch)
    if pinned(mixers, pins) == mixers:
        return arch
    return space.sample(rng=rng, layer_mixers=pinned(mixers, pins))


def pinned_extremes(space: SearchSpace, pins: dict[int, str]) -> tuple[Arch, Arch]:
    """The space's largest and smallest archs, with the pinned mixers put in."""
    largest, smallest = space.largest(), space.smallest()
    if not pins:
        return largest, smallest
    return (
        space.largest(pinned(mixers_of(largest), pins)),
        space.smallest(pinned(mixers_of(smallest), pins)),
    )


def mixers_of(arch: Arch) -> list[str]:
    return [layer.mixer for layer in arch.layers]


def pinned(mixers: list[str], pins: dict[int, str]) -> list[str]:
    """`mixers` (one per layer) with the pinned layers' mixers put in."""
    return [pins.get(i, mixer) for i, mixer in enumerate(mixers)]


def random_mixers(space: SearchSpace, rng: np.random.Generator, depth: int) -> list[str]:
    """`depth` mixers of `space`, each drawn uniformly."""
    return [str(m) for m in rng.choice(space.mixers, size=depth)]


def fair_students(
    space: SearchSpace, rng: np.random.Generator, pins: dict[int, str] | None = None
) -> list[Arch]:
    """One arch per mixer of `space`, of the deepest exit, whose mixers at each layer are a
    random permutation of the space's: together they run every mixer at every layer once
    (a pinned layer runs its pinned mixer in all of them)."""
    n, depth = len(space.mixers), space.max_depth
    columns = [rng.permutation(n) for _ in range(depth)]  # columns[layer][arch] -> mixer
    return [
        space.sample(
            rng=rng,
            layer_mixers=pinned([space.mixers[columns[i][j]] for i in range(depth)], pins or {}),
        )
        for j in range(n)
    ]


def usage_key(slot: int, mixer: str) -> str:
    """Key of one layer slot's mixer weights in a run's usage counts ("2:ssm": slot 2, 0-based)."""
    return f"{slot}:{mixer}"


def exposure_steps(
    arch: Arch, usage: dict[str, int], steps: int, ffn_per_mixer: bool = False
) -> float:
    """How many of a run's `steps` trained `arch`'s own weights, averaged over its layers.

    A layer's count is the number of steps in which some arch of the sandwich ran that
    layer slot's mixer (at any width; `usage` comes from a checkpoint's state). A skip
    layer owns no mixer weights and counts every step, as do the shared embedding, FFN
    and exit weights, which some arch trains at every step. The largest and smallest
    archs, run at every step, have exposure `steps`; a middle arch built on one mixer
    has only the steps in which that mixer was sampled at its layers. With
    `ffn_per_mixer` a skip layer has an FFN of its own, and counts its own steps too.
    """
    counts = [
        steps
        if layer.mixer == "skip" and not ffn_per_mixer
        else usage.get(usage_key(i, layer.mixer), 0)
        for i, layer in enumerate(arch.layers)
    ]
    return sum(counts) / len(counts)


def _train_losses(losses: dict[str, float]) -> dict[str, Any]:
    """A step's losses as its metrics record names them: loss_largest and loss_smallest of
    a sandwich step, loss_family (one per family arch, in order) of a family-only step."""
    if "largest" in losses:
        return {"loss_largest": losses["largest"], "loss_smallest": losses["smallest"]}
    family = sorted((k for k in losses if k.startswith("family")), key=lambda k: int(k[6:]))
    return {"loss_family": [losses[k] for k in family]}


def _postfix(tokens_per_s: float, losses: dict[str, float], val: dict[str, float]) -> str:
    """The progress bar's summary of a step: throughput, train losses, last validation."""
    if "largest" in losses:
        text = f"L={losses['largest']:.3f} S={losses['smallest']:.3f}"
        text += f" val(L)={val['largest']:.3f}" if val else ""
    else:  # a family-only step: its first arch
        text = f"F0={losses['family0']:.3f}" + (f" val(F0)={val['family0']:.3f}" if val else "")
    return f"tok/s={tokens_per_s:,.0f} {text}"


def _parts_used(archs: list[Arch]) -> set[str]:
    return {usage_key(i, layer.mixer) for arch in archs for i, layer in enumerate(arch.layers)}


def _check_corpus(space: SearchSpace, corpus: Corpus, config: TrainConfig) -> None:
    if corpus.vocab_size > space.vocab_size:
        raise DataError(
            f"{corpus.info.get('source')}: token ids reach {corpus.vocab_size - 1}, beyond the "
            f"space's vocab_size {space.vocab_size}"
        )
    if config.seq_len > space.max_seq_len:
        raise NasError(
            f"seq_len {config.seq_len} exceeds the space's max_seq_len {space.max_seq_len}"
        )
    check_length(corpus.train, config.seq_len, "train")
    check_length(corpus.val, config.seq_len, "validation")


def _check_finite(losses: dict[str, float], step: int) -> None:
    bad = {k: v for k, v in losses.items() if not math.isfinite(v)}
    if bad:
        raise FloatingPointError(f"non-finite loss at step {step}: {bad}; lower the lr")


def _check_branch(source: Checkpoint, config: TrainConfig, corpus: Corpus) -> None:
    """Raise `CheckpointError` unless `config` may branch `source`: its settings but for
    more pins, on the same data, with steps left to run."""
    saved = _resolved_sources(TrainConfig.from_dict(source.state.get("config", {})))
    own = replace(saved, pinned_mixers=config.pinned_mixers, branch_from=config.branch_from)
    problem = ""
    if own != config:
        given = replace(config, pinned_mixers=saved.pinned_mixers, branch_from=saved.branch_from)
        problem = (
            f"a branch keeps its source's settings: {_differences(saved, given)}; drop those flags"
        )
    elif not set(saved.pinned_mixers) <= set(config.pinned_mixers):
        problem = f"a branch keeps the pins {list(saved.pinned_mixers)} of its source"
    elif source.step >= config.steps:
        problem = (
            f"it finished its {config.steps} steps, so no schedule is left to branch; stop "
            f"the source early with --stop-at, or start from its weights with --init-from"
        )
    if problem:
        raise CheckpointError(f"{source.path}: {problem}")
    _check_same_data(source, corpus)


def _check_same_data(ckpt: Checkpoint, corpus: Corpus) -> None:
    """Raise `CheckpointError` unless `ckpt` was trained on `corpus`."""
    if ckpt.state.get("data", {}).get("key") != corpus.key:
        raise CheckpointError(
            f"{ckpt.path}: was trained on other data than {corpus.info['source']}"
        )


def _resolved_sources(config: TrainConfig) -> TrainConfig:
    """`config` with the runs it starts from (`init_from`, `branch_from`) named by the
    absolute path of their checkpoint file: a rerun from another directory, or naming the
    run folder where the first run named its file, is the same run and resumes."""

    def resolved(source: str) -> str:
        if not source:
            return ""
        return str(checkpoint_file(Path(source).expanduser().resolve()))

    return replace(
        config, init_from=resolved(config.init_from), branch_from=resolved(config.branch_from)
    )


def _moved_sources(saved: TrainConfig, given: TrainConfig, ckpt: Checkpoint) -> bool:
    """Whether `given` is the resumed run's config `saved` with its source at another path:
    the same settings and kind of source, and the source given is the very checkpoint the
    run started from (the digest it recorded), so a moved run folder resumes."""
    recorded = ckpt.state.get("source_digest")
    source = given.init_from or given.branch_from
    same_kind = (bool(saved.init_from), bool(saved.branch_from)) == (
        bool(given.init_from),
        bool(given.branch_from),
    )
    if not (recorded and source and same_kind):
        return False
    if replace(given, init_from=saved.init_from, branch_from=saved.branch_from) != saved:
        return False
    try:
        return read_checkpoint(source).digest == recorded
    except CheckpointError:
        return False


def _config_diff(saved: TrainConfig, given: TrainConfig) -> str:
    return "a resumed run keeps its settings; this run has " + _differences(saved, given)


def _differences(saved: TrainConfig, given: TrainConfig) -> str:
    """'name saved (given other), ...' for each setting in which `given` differs."""

    def show(name: str, value: Any) -> str:
        if name == "family":  # arch ids, not pages of JSON
            return "[" + ", ".join(Arch.from_json(text).id for text in value) + "]"
        return str(value)

    diffs = [
        f"{f.name} {show(f.name, getattr(saved, f.name))} "
        f"(given {show(f.name, getattr(given, f.name))})"
        for f in fields(TrainConfig)
        if getattr(saved, f.name) != getattr(given, f.name)
    ]
    return ", ".join(diffs)


def _data_ref(corpus: Corpus) -> dict[str, Any]:
    return {k: corpus.info.get(k) for k in ("source", "kind", "key", "dtype")}


def _manifest(
    space: SearchSpace,
    corpus: Corpus,
    config: TrainConfig,
    device: torch.device,
    refs: dict[str, Arch],
    step: int,
    status: str,
) -> dict[str, Any]:
    return {
        "format": RUN_FORMAT,
        "command": "train",
        "status": status,
        "step": step,
        "checkpoint": checkpoint_path(".").name,
        "metrics": METRICS_FILE,
        "space": space.to_dict(),
        "fingerprint": space.fingerprint,
        "config": config.to_dict(),
        "data": {**_data_ref(corpus), "tokens": corpus.info.get("tokens")},
        "device": str(device),
        "torch": torch.__version__,
        "reference_archs": {name: arch.to_dict() for name, arch in refs.items()},
        "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


@contextlib.contextmanager
def _progress_bar(total: int, initial: int, enabled: bool) -> Iterator[Any]:
    from tqdm import tqdm

    bar = tqdm(
        total=total,
        initial=initial,
        unit="step",
        desc="train",
        disable=not enabled,
        file=sys.stderr,
        dynamic_ncols=True,
    )
    try:
        yield bar
    finally:
        bar.close()
