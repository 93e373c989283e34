"""Argument helpers shared by subcommands."""

from __future__ import annotations

import argparse

from nas.search_space import SearchSpace
from nas.search_space.arch_files import load_arch, load_archs

__all__ = ["add_space_argument", "layer_list", "load_arch", "load_archs", "load_space"]


def add_space_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--space",
        metavar="FILE",
        help="search space file (.yaml/.json); default: the shipped space",
    )


def layer_list(text: str) -> tuple[int, ...]:
    """'1,2' -> (1, 2): distinct layer slots, ascending (an argparse type)."""
    try:
        return tuple(sorted({int(part) for part in text.split(",")}))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a list of layer indices") from None


def load_space(args: argparse.Namespace) -> SearchSpace:
    return SearchSpace.from_file(args.space) if args.space else SearchSpace.default()
