"""Which archs a training step runs: the sandwich's extremes, its students, and the pins.

Every draw comes from the run's seeded arch generator, in a fixed order, so a run (and a
resumed run, whose generator state the checkpoint restores) draws the same archs on
every machine. Also here: the key under which a run counts the steps that trained each
layer slot's mixer weights (`usage_key`), stored in checkpoints and read by few-shot
supernets and the bench.
"""

from __future__ import annotations

import numpy as np

from nas.search_space import Arch, SearchSpace

from .train_config import TrainConfig


def sandwich_archs(
    space: SearchSpace,
    config: TrainConfig,
    family: list[Arch],
    pins: dict[int, str],
    rng: np.random.Generator,
) -> tuple[Arch, list[Arch]]:
    """One step's sandwich: the largest arch, and its students (the smallest arch, the
    family, then the random or fair archs), drawn from the run's arch stream `rng`."""
    largest, smallest = pinned_extremes(space, pins)
    if config.sandwich_random_mixers:
        top = random_mixers(space, rng, largest.depth)
        bottom = random_mixers(space, rng, smallest.depth)
        largest = space.largest(pinned(top, pins))
        smallest = space.smallest(pinned(bottom, pins))
    students = [smallest, *family] + (
        fair_students(space, rng, pins)
        if config.fair
        else [
            sample_student(space, rng, config.homogeneous_share, pins)
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


def parts_used(archs: list[Arch]) -> set[str]:
    """The usage keys of every (layer slot, mixer) that some arch of `archs` runs."""
    return {usage_key(i, layer.mixer) for arch in archs for i, layer in enumerate(arch.layers)}
