"""The settings of a training run: `TrainConfig`, validated as a whole.

Everything in it shapes the run, so a resumed run must keep it unchanged (the checkpoint
stores it). These are the library's defaults; `nas train` starts from a preset
(`nas/cli/train_cmd.py`, docs/training.md), and the search trains with
`nas.search.default_supernet.search_train_config`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from nas.core.errors import ArchError, NasError
from nas.search_space import Arch, SearchSpace


@dataclass(frozen=True)
class TrainConfig:
    """Everything that shapes a training run (and must not change when it is resumed)."""

    steps: int = 250  # optimizer steps (the library default; `nas train` starts from a preset)
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
