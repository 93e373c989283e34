"""Argument helpers shared by subcommands."""

from __future__ import annotations

import argparse
from pathlib import Path

from nas.search_space import Arch, SearchSpace
from nas.search_space.errors import ArchError


def add_space_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--space",
        metavar="FILE",
        help="search space file (.yaml/.json); default: the shipped space",
    )


def load_space(args: argparse.Namespace) -> SearchSpace:
    return SearchSpace.from_file(args.space) if args.space else SearchSpace.default()


def load_arch(path: str, space: SearchSpace) -> Arch:
    """Read an arch JSON file and check it against `space`; errors name the file."""
    file = Path(path)
    if not file.is_file():
        raise ArchError(
            f"{path}: arch file not found; pass a JSON file such as `nas space sample` prints"
        )
    arch = Arch.from_json(file.read_text(), source=str(path))
    try:
        return space.validate(arch)
    except ArchError as exc:
        raise ArchError(f"{path}: {exc}") from None
