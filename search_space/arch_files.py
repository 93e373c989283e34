"""Arch JSON files: one arch, a list of them, or one per line (as `nas space sample -n N`
prints), each checked against a space; errors name the file (and the arch's index)."""

from __future__ import annotations

import json
from pathlib import Path

from nas.core.errors import ArchError

from .arch import Arch
from .space import SearchSpace


def load_arch(path: str, space: SearchSpace) -> Arch:
    """Read an arch JSON file and check it against `space`; errors name the file."""
    arch = Arch.from_json(_read_arch_file(path), source=str(path))
    return _validated(arch, space, str(path))


def load_archs(path: str, space: SearchSpace) -> list[Arch]:
    """Read a JSON file holding one arch object, a list of them, or one per line (as
    `nas space sample -n N` prints); check each against `space`."""
    text = _read_arch_file(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        data = _json_lines(text)
        if data is None:
            raise ArchError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    items = data if isinstance(data, list) else [data]
    if not items:
        raise ArchError(f"{path}: an empty list; give one arch object or a list of them")
    return [
        _validated(Arch.from_dict(item, source=f"{path}: arch {i}"), space, f"{path}: arch {i}")
        for i, item in enumerate(items)
    ]


def _json_lines(text: str) -> list | None:
    """The values of a JSON Lines text, or None when some line is not JSON."""
    try:
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError:
        return None


def _read_arch_file(path: str) -> str:
    file = Path(path)
    if not file.is_file():
        raise ArchError(
            f"{path}: arch file not found; pass a JSON file such as `nas space sample` prints"
        )
    return file.read_text()


def _validated(arch: Arch, space: SearchSpace, source: str) -> Arch:
    try:
        return space.validate(arch)
    except ArchError as exc:
        raise ArchError(f"{source}: {exc}") from None
