"""Command-line helpers shared by the bench scripts: the search space and lists of layers.

The bench reads its space through the library (`SearchSpace.from_file` or the shipped
default), not through the CLI's internals, so that nas.cli can change freely. Bench
scripts import it by plain name (`from space_args import load_space`), as bench/ is first
on their sys.path.
"""

from __future__ import annotations

import argparse

from nas.search_space import SearchSpace


def load_space(args: argparse.Namespace) -> SearchSpace:
    """The space of `args.space` (a YAML or JSON file), or the shipped default without one.

    Raises `SpaceError` (a NasError) naming the file when it is missing or invalid."""
    return SearchSpace.from_file(args.space) if args.space else SearchSpace.default()


def layer_list(text: str) -> tuple[int, ...]:
    """'1,2' -> (1, 2): distinct layer slots, ascending (an argparse type)."""
    try:
        return tuple(sorted({int(part) for part in text.split(",")}))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a list of layer indices") from None
