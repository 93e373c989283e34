"""The `nas` command line: thin subcommands that call the library and return an exit code.

Any `NasError` (bad user input: files, strings, flags) becomes one line on stderr and
exit code 2; `--debug` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence

from nas.core.errors import NasError

from . import eval_cmd, extract_cmd, latency_cmd, profile_cmd, search_cmd, space_cmd, train_cmd

# Each module adds its subcommand(s) with `register(subparsers)`; explicit, no discovery.
COMMAND_MODULES = [
    space_cmd,
    train_cmd,
    profile_cmd,
    latency_cmd,
    search_cmd,
    extract_cmd,
    eval_cmd,
]


class _Parser(argparse.ArgumentParser):
    """argparse with the CLI's one-line errors: a bad flag value gets the same
    `nas: error: ...` line and exit code 2 as any other bad input (no usage dump)."""

    def error(self, message: str):  # type: ignore[override]
        command = self.prog.removeprefix("nas").strip()  # "" for `nas` itself
        where = f"{command}: " if command else ""
        self.exit(2, f"nas: error: {where}{message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="nas", description="Hardware-aware NAS over one elastic weight-sharing supernet."
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a bad flag (2, its line already printed)
        return exc.code if isinstance(exc.code, int) else 2
    try:
        return int(args.func(args) or 0)
    except NasError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"nas: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("nas: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
