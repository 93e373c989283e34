"""One step of the sandwich rule: the largest arch learns the data, the others learn from it.

On one batch, gradients accumulate into the shared weights from
1. the largest arch, trained on the next-token targets (cross-entropy);
2. each student (the smallest arch, then archs sampled from the space), trained towards
   the largest arch's output distribution on the same batch (in-place distillation: KL to
   the detached teacher), mixed with the targets' cross-entropy.

Every arch is read at each exit of the space up to its depth, from one pass, so the exit
heads that shallower archs use are trained too; an arch's own exit weighs the most.

An arch drawn more than once in a step runs once, its loss weighted by how often it was
drawn: on one batch its passes would give the same gradient each time. This matters in a
few-shot sub-supernet with most layers pinned, where the sandwich keeps drawing the same
two archs (four passes a step, two of them repeats).

`family_step` is the step without the sandwich: given archs learn the targets alone (a
fine-tune of the archs a search picked, from their inherited weights).
"""

from __future__ import annotations

from collections import Counter

import torch
import torch.nn.functional as F

from nas.search_space import Arch, SearchSpace

from .device import autocast
from .supernet import Supernet

Tensor = torch.Tensor


def exits_upto(space: SearchSpace, depth: int) -> list[int]:
    """The exits of `space` an arch of `depth` layers passes, ending with its own."""
    return [e for e in space.exits if e <= depth]


def exit_weights(exits: list[int], early_exit_weight: float) -> dict[int, float]:
    """Loss weights summing to 1: the arch's own (last) exit 1, each earlier `early_exit_weight`."""
    raw = {e: (1.0 if e == exits[-1] else early_exit_weight) for e in exits}
    total = sum(raw.values())
    return {e: w / total for e, w in raw.items()}


def cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean next-token loss in nats/token; logits (B, T, V), targets (B, T)."""
    return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())


def distillation(logits: Tensor, teacher_logp: Tensor) -> Tensor:
    """Mean KL(teacher || student) in nats/token; logits (B, T, V), teacher log-probs (B*T, V)."""
    student = F.log_softmax(logits.float().flatten(0, 1), dim=-1)  # (B*T, V)
    return F.kl_div(student, teacher_logp, log_target=True, reduction="batchmean")


def sandwich_step(
    net: Supernet,
    inputs: Tensor,
    targets: Tensor,
    largest: Arch,
    students: list[Arch],
    distill_weight: float,
    early_exit_weight: float,
    device: torch.device,
) -> dict[str, float]:
    """Forward and backward of the largest arch, then of each student, on one batch.

    Gradients accumulate into `net`'s parameters; the caller zeroes them before and steps
    after. inputs, targets: (B, T) on `device`. A student's loss at each exit is
    `distill_weight` * KL(teacher || student) + (1 - `distill_weight`) * cross-entropy.
    A repeated arch runs once with its loss weighted by its repeats (a student equal to the
    largest counts as the largest only when `distill_weight` is 0, when their losses are
    the same), so the gradients are those of every pass, up to rounding.
    Returns the cross-entropy (nats/token) of the largest arch and of the first student
    (the smallest) at their own exits, as {"largest": ..., "smallest": ...}, and the
    number of forward passes run, as "passes".
    """
    space = net.space
    repeats = Counter(students)
    teacher_repeats = 1 + (repeats.pop(largest, 0) if distill_weight == 0 else 0)
    exits = exits_upto(space, largest.depth)
    with autocast(device):
        outs = net(inputs, largest, exits=exits)  # {exit: (B, T, V)}
    weights = exit_weights(exits, early_exit_weight)
    ce = {e: cross_entropy(outs[e], targets) for e in exits}
    (teacher_repeats * sum(weights[e] * ce[e] for e in exits)).backward()
    losses = {"largest": ce[largest.depth].item(), "passes": 1 + len(repeats)}
    if students[0] not in repeats:  # the smallest is the largest, merged into its pass
        losses["smallest"] = losses["largest"]
    # The teacher is the largest arch's own exit, fixed for this step (no gradient).
    teacher_logp = F.log_softmax(outs[largest.depth].detach().float().flatten(0, 1), dim=-1)
    del outs  # free the largest arch's activations before the students run
    for arch, n in repeats.items():  # first-drawn order: the smallest first
        exits = exits_upto(space, arch.depth)
        with autocast(device):
            outs = net(inputs, arch, exits=exits)  # {exit: (B, T, V)}
        weights = exit_weights(exits, early_exit_weight)
        total = 0.0
        for e in exits:
            ce_e = cross_entropy(outs[e], targets)
            kd_e = distillation(outs[e], teacher_logp) if distill_weight > 0 else 0.0
            total = total + weights[e] * (distill_weight * kd_e + (1.0 - distill_weight) * ce_e)
            if arch == students[0] and e == arch.depth:
                losses["smallest"] = ce_e.item()
        (n * total).backward()
        del outs
    return losses


def family_step(
    net: Supernet,
    inputs: Tensor,
    targets: Tensor,
    archs: list[Arch],
    early_exit_weight: float,
    device: torch.device,
) -> dict[str, float]:
    """Forward and backward of each arch in `archs` on one batch, without the sandwich.

    Each arch learns the targets alone (cross-entropy, no teacher) at every exit it
    passes, weighted as in `sandwich_step`; with `early_exit_weight` 0 only its own exit
    runs, as the others would add nothing to the gradient. Gradients accumulate into
    `net`'s parameters, which only the archs' own slices of the weights receive; the
    caller zeroes them before and steps after. inputs, targets: (B, T) on `device`.
    A repeated arch runs once with its loss weighted by its repeats.
    Returns each arch's cross-entropy (nats/token) at its own exit as "family<i>" (i its
    index in `archs`), and the number of forward passes run, as "passes".
    """
    space = net.space
    repeats = Counter(archs)
    own_loss: dict[Arch, float] = {}
    for arch, n in repeats.items():
        exits = exits_upto(space, arch.depth) if early_exit_weight > 0 else [arch.depth]
        with autocast(device):
            outs = net(inputs, arch, exits=exits)  # {exit: (B, T, V)}
        weights = exit_weights(exits, early_exit_weight)
        ce = {e: cross_entropy(outs[e], targets) for e in exits}
        (n * sum(weights[e] * ce[e] for e in exits)).backward()
        own_loss[arch] = ce[arch.depth].item()
        del outs
    losses = {f"family{i}": own_loss[arch] for i, arch in enumerate(archs)}
    losses["passes"] = len(repeats)
    return losses
