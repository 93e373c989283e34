"""`Arch`: one subnetwork of the supernet, as an immutable, hashable value.

An arch is what the search proposes, the supernet runs, the latency model prices and
`extract` turns into a deployable model. Its canonical JSON form is the one stable
representation: sorted keys, no whitespace, and fields that do not apply left out, so
that equal archs always have equal JSON and equal ids.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from nas.core.errors import ArchError


@dataclass(frozen=True)
class LayerArch:
    """The choices made for one layer."""

    mixer: str  # token mixer name, one of search_space.mixers.MIXERS
    heads: int | None = None  # attention/inner heads; None for mixers without heads
    window: int | None = None  # sliding-window size in tokens; sliding_window only
    ffn: int = 0  # FFN hidden units (a prefix of the max FFN); 0 = no FFN

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mixer": self.mixer, "ffn": self.ffn}
        if self.heads is not None:
            out["heads"] = self.heads
        if self.window is not None:
            out["window"] = self.window
        return out


@dataclass(frozen=True)
class Arch:
    """A subnetwork: the model width and one `LayerArch` per computed layer.

    The depth is `len(layers)`, which is also the exit point: the output is read after
    the last layer listed, and layers beyond it are not computed.
    """

    d_model: int  # model width (a prefix of the max width)
    layers: tuple[LayerArch, ...]  # computed layers, in order; len(layers) is the exit

    @property
    def depth(self) -> int:
        return len(self.layers)

    def to_dict(self) -> dict[str, Any]:
        return {"d_model": self.d_model, "layers": [layer.to_dict() for layer in self.layers]}

    def to_json(self) -> str:
        """Canonical JSON: sorted keys, compact separators, inapplicable fields omitted."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @property
    def id(self) -> str:
        """A stable short id: the first 12 hex digits of the SHA-256 of the canonical JSON."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:12]

    def __str__(self) -> str:
        parts = []
        for layer in self.layers:
            extra = f"h{layer.heads}" if layer.heads is not None else ""
            if layer.window is not None:
                extra += f"w{layer.window}"
            parts.append(f"{layer.mixer}{'/' + extra if extra else ''}/f{layer.ffn}")
        return f"Arch(d={self.d_model}, [{', '.join(parts)}])"

    @classmethod
    def from_dict(cls, data: Any, source: str = "arch") -> Arch:
        """Build an arch from its dict form, checking structure and types only.

        Membership in a space is checked by `SearchSpace.validate`. Raises `ArchError`
        naming `source`, the field and the problem.
        """
        if not isinstance(data, dict):
            raise ArchError(f"{source}: expected a JSON object with 'd_model' and 'layers'")
        unknown = sorted(set(data) - {"d_model", "layers"})
        if unknown:
            raise ArchError(f"{source}: unknown field(s) {unknown}; allowed: d_model, layers")
        d_model = _int_field(data, "d_model", source, required=True)
        layers_raw = data.get("layers")
        if not isinstance(layers_raw, list) or not layers_raw:
            raise ArchError(f"{source}: field 'layers' must be a non-empty list of layer objects")
        layers = tuple(
            _layer_from_dict(raw, f"{source}: layers[{i}]") for i, raw in enumerate(layers_raw)
        )
        return cls(d_model=d_model, layers=layers)

    @classmethod
    def from_json(cls, text: str, source: str = "arch JSON") -> Arch:
        """Parse canonical (or any equivalent) JSON. Raises `ArchError` on malformed input."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ArchError(f"{source}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        return cls.from_dict(data, source)


def _int_field(data: dict, key: str, source: str, required: bool = False) -> Any:
    value = data.get(key)
    if value is None:
        if required:
            raise ArchError(f"{source}: missing field '{key}'")
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ArchError(f"{source}: field '{key}' must be an integer, got {value!r}")
    return value


def _layer_from_dict(raw: Any, where: str) -> LayerArch:
    if not isinstance(raw, dict):
        raise ArchError(f"{where}: expected an object with 'mixer' and 'ffn'")
    unknown = sorted(set(raw) - {"mixer", "heads", "window", "ffn"})
    if unknown:
        raise ArchError(f"{where}: unknown field(s) {unknown}; allowed: mixer, heads, window, ffn")
    mixer = raw.get("mixer")
    if not isinstance(mixer, str):
        raise ArchError(f"{where}: field 'mixer' must be a string, got {mixer!r}")
    ffn = _int_field(raw, "ffn", where)
    return LayerArch(
        mixer=mixer,
        heads=_int_field(raw, "heads", where),
        window=_int_field(raw, "window", where),
        ffn=0 if ffn is None else ffn,
    )
