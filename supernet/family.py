"""Elastic families: several extracted models in one artifact, shared weights stored once.

Members of one supernet nest by prefix, so for every elastic part any member uses (the
embedding, each layer slot's norms, mixer and FFN, each exit head) the artifact stores
only the widest prefix its members use: per symbolic dim, the largest size among the
members using that part. Each member is then read back as prefix slices of those
tensors, which are exactly the weights `Supernet.extract` copies for it.

A family folder holds:
  family.safetensors  one tensor per (part, weight), named "<supernet module path>.<weight>";
                      packed weights keep their (pack, ...) layout so each part nests by
                      prefix, width-chunked ones are stored joined
  family.json         format, network constants, the members in order (arch, params and
                      whatever the caller recorded: val_loss, predicted_ms, ...), each
                      part's stored dims and tensor names, and the weights' SHA-256
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from nas.core.atomic import atomic_write_text, atomic_write_with
from nas.core.errors import ArchError, BudgetError, CheckpointError, NasError
from nas.search_space import Arch

from .config import NetConstants
from .params import Dims, ParamSpec
from .static import FORMAT as MODEL_FORMAT
from .static import StaticModel
from .storage import check_mixers
from .supernet import PartUse, Supernet, arch_parts

FAMILY_FORMAT = "nas.family/1"
FAMILY_FILE = "family.json"
FAMILY_WEIGHTS = "family.safetensors"
_RESERVED = ("arch", "params")  # member keys the family itself writes


@dataclass(frozen=True)
class FamilySizes:
    """How much the shared storage saves: the union stored against the members' sum."""

    union_params: int  # parameters stored in family.safetensors
    sum_params: int  # sum over members of their extracted models' parameter counts
    union_bytes: int  # size of family.safetensors, bytes (header included)
    sum_bytes: int  # sum over members of their own weights' bytes (tensor data, no header)
    params: dict[str, int]  # member name -> its extracted model's parameter count


def save_family(
    net: Supernet,
    members: Mapping[str, Arch],
    directory: str | Path,
    info: Mapping[str, dict] | None = None,
) -> FamilySizes:
    """Write `members` of `net` to `directory` as family.safetensors + family.json.

    `info[name]` (JSON-serialisable) is stored with member `name`; `pick` reads its
    "val_loss" and "measured_ms"/"predicted_ms". Both files are written atomically,
    the weights first, so a family.json on disk always describes complete weights.
    Raises `ArchError` if a member is not in `net`'s space, `ValueError` for no members,
    a bad name, or info for an unknown member or with an "arch"/"params" not its own.
    """
    info = dict(info or {})
    if not members:
        raise ValueError("a family needs at least one member")
    for name in members:
        if not isinstance(name, str) or not name:
            raise ValueError(f"family member names must be non-empty strings, got {name!r}")
    if set(info) - set(members):
        raise ValueError(f"info for unknown members {sorted(set(info) - set(members))}")
    try:  # before any file is written: a failure then leaves no weights without a manifest
        json.dumps(info)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"family info must be JSON-serialisable ({exc})") from None
    # Per part: the specs and, per symbolic dim, the widest size any member uses.
    widest: dict[str, tuple[tuple[ParamSpec, ...], Dims]] = {}
    params: dict[str, int] = {}
    for name, arch in members.items():
        net.space.validate(arch)
        parts = arch_parts(arch, net.consts, net.ffn_per_mixer)
        params[name] = sum(_numel(spec, part.dims) for part in parts for spec in part.specs)
        for part in parts:
            specs, dims = widest.get(part.key, (part.specs, {}))
            used = {k: part.dims[k] for spec in specs for k in spec.dims}
            widest[part.key] = (specs, {k: max(v, dims.get(k, 0)) for k, v in used.items()})

    for name, extra in info.items():
        own = {"arch": members[name].to_dict(), "params": params[name]}
        clash = [k for k in _RESERVED if k in extra and extra[k] != own[k]]
        if clash:
            raise ValueError(f"info for '{name}' gives {clash} other than the member's own")

    tensors: dict[str, torch.Tensor] = {}
    layout: dict[str, dict[str, Any]] = {}
    for key, (specs, dims) in widest.items():
        full = net.get_submodule(key).tensors(dims)  # kernel layout at the widest size
        names = {}
        for spec in specs:
            tensor = full[spec.name].detach().to("cpu")
            if spec.pack > 1:  # back to (pack, ...) so every part stays a prefix
                tensor = tensor.reshape(spec.pack, *(dims[k] for k in spec.dims))
            names[spec.name] = f"{key}.{spec.name}"
            tensors[names[spec.name]] = tensor.clone().contiguous()
        layout[key] = {"dims": dims, "tensors": names}

    directory = Path(directory)
    written: dict[str, str] = {}

    def write(tmp: Path) -> None:
        save_file(tensors, str(tmp), metadata={"format": FAMILY_FORMAT})
        written["sha256"] = _file_digest(tmp)  # of the very bytes moved into place

    atomic_write_with(directory / FAMILY_WEIGHTS, write)
    # An extracted model holds its own parameters in torch's default dtype.
    member_element = torch.zeros(()).element_size()
    sizes = FamilySizes(
        union_params=sum(t.numel() for t in tensors.values()),
        sum_params=sum(params.values()),
        union_bytes=(directory / FAMILY_WEIGHTS).stat().st_size,
        sum_bytes=sum(params.values()) * member_element,
        params=params,
    )
    manifest = {
        "format": FAMILY_FORMAT,
        "constants": net.consts.to_dict(),
        "ffn_per_mixer": net.ffn_per_mixer,
        "members": {
            name: {
                "arch": arch.to_dict(),
                "params": params[name],
                **{k: v for k, v in info.get(name, {}).items() if k not in _RESERVED},
            }
            for name, arch in members.items()
        },
        "parts": layout,
        "sizes": {k: v for k, v in vars(sizes).items() if k != "params"},
        "weights": FAMILY_WEIGHTS,
        "weights_sha256": written["sha256"],
    }
    # Not atomic_write_json: it sorts keys, and the members' order is the caller's.
    atomic_write_text(directory / FAMILY_FILE, json.dumps(manifest, indent=2) + "\n")
    return sizes


def is_family(directory: str | Path) -> bool:
    """Whether `directory` holds a family (a family.json), as opposed to one model."""
    return (Path(directory) / FAMILY_FILE).is_file()


def load_family(directory: str | Path) -> Family:
    """Read and check a family written by `save_family`; builds no model.

    Checks family.json (format, constants, every member's arch and the parts it needs)
    and the weights against the digest it records. Raises `CheckpointError` (one line)
    for a missing folder or file, bad JSON, an unknown mixer, a truncated or tampered
    weights file, or a manifest that does not describe the weights.
    """
    directory = Path(directory)
    manifest_path, weights_path = directory / FAMILY_FILE, directory / FAMILY_WEIGHTS
    for path in (manifest_path, weights_path):
        if not path.is_file():
            raise CheckpointError(f"{path}: not found; pass a folder written by `nas extract`")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CheckpointError(f"{manifest_path}: not valid JSON (truncated or corrupted)") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FAMILY_FORMAT:
        raise CheckpointError(f"{manifest_path}: not a nas family (expected {FAMILY_FORMAT})")
    if _file_digest(weights_path) != manifest.get("weights_sha256"):
        raise CheckpointError(
            f"{weights_path}: weights do not match the digest in {FAMILY_FILE} "
            "(truncated or tampered); re-extract the family"
        )
    return Family(directory, manifest)


class Family:
    """A family on disk: its members' archs and info, and each member built on demand.

    Only `model(name)` reads weights, and only the prefix slices that member uses.
    """

    def __init__(self, directory: Path, manifest: dict[str, Any]):
        self.directory = directory
        where = directory / FAMILY_FILE
        self.consts = NetConstants.from_dict(manifest.get("constants"), source=str(where))
        members, parts = manifest.get("members"), manifest.get("parts")
        if not isinstance(members, dict) or not members or not isinstance(parts, dict):
            raise CheckpointError(f"{where}: needs non-empty 'members' and 'parts' objects")
        self._members: dict[str, dict[str, Any]] = {}
        self._archs: dict[str, Arch] = {}
        self._parts: dict[str, list[PartUse]] = {}
        ffn_per_mixer = bool(manifest.get("ffn_per_mixer", False))
        for name, entry in members.items():
            if not isinstance(entry, dict):
                raise CheckpointError(f"{where}: member '{name}' must be an object")
            check_mixers(entry.get("arch"), f"{where}: member '{name}'")
            try:
                arch = Arch.from_dict(entry.get("arch"), source=f"{where}: member '{name}'")
                uses = arch_parts(arch, self.consts, ffn_per_mixer)
            except (ArchError, KeyError, TypeError, ValueError) as exc:
                raise CheckpointError(f"{where}: member '{name}': invalid arch ({exc})") from None
            for part in uses:
                _check_stored(parts.get(part.key), part, name, where)
            self._members[name], self._archs[name], self._parts[name] = entry, arch, uses
        self._layout = parts
        self._check_weights()

    def _check_weights(self) -> None:
        # Header only (no tensor data): every tensor the manifest names is there at the
        # shape its stored dims give, so a member's slices are always in range.
        path = self.directory / FAMILY_WEIGHTS
        needed = {
            self._layout[part.key]["tensors"][spec.name]: _stored_shape(
                spec, self._layout[part.key]["dims"]
            )
            for parts in self._parts.values()
            for part in parts
            for spec in part.specs
        }
        try:
            with safe_open(str(path), framework="pt") as f:
                present = set(f.keys())
                for name, shape in needed.items():
                    if name not in present or tuple(f.get_slice(name).get_shape()) != shape:
                        raise CheckpointError(
                            f"{path}: tensor '{name}' missing or not of shape {shape} that "
                            f"{FAMILY_FILE} describes; re-extract the family"
                        )
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"{path}: unreadable safetensors file ({exc})") from None

    @property
    def names(self) -> list[str]:
        """Member names, in the order they were saved."""
        return list(self._members)

    def _known(self, name: str) -> str:
        if name not in self._members:
            raise CheckpointError(
                f"{self.directory}: no member '{name}' in this family; members are "
                f"{', '.join(self._members)}"
            )
        return name

    def info(self, name: str) -> dict[str, Any]:
        """What family.json records for `name`: "arch" (dict), "params" and the caller's info."""
        return json.loads(json.dumps(self._members[self._known(name)]))  # a deep copy

    def arch(self, name: str) -> Arch:
        return self._archs[self._known(name)]

    def model(self, name: str, device: str | torch.device = "cpu") -> StaticModel:
        """Member `name` as a standalone model (eval mode), reading only its slices.

        Its weights and outputs equal `net.extract(arch)` of the supernet it came from.
        """
        arch = self.arch(name)
        config = {
            "format": MODEL_FORMAT,
            "constants": self.consts.to_dict(),
            "arch": arch.to_dict(),
        }
        model = StaticModel.from_config(config)
        params = dict(model.named_parameters())
        filled = set()
        try:
            with (
                safe_open(str(self.directory / FAMILY_WEIGHTS), framework="pt") as f,
                torch.no_grad(),
            ):
                for part in self._parts[name]:
                    names = self._layout[part.key]["tensors"]
                    for spec in part.specs:
                        prefix = tuple(slice(0, part.dims[k]) for k in spec.dims)
                        if spec.pack > 1:
                            prefix = (slice(None), *prefix)
                        piece = f.get_slice(names[spec.name])[prefix]
                        target = f"{part.target}.{spec.name}"
                        params[target].copy_(piece.reshape(spec.shape(part.dims)))
                        filled.add(target)
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(
                f"{self.directory / FAMILY_WEIGHTS}: unreadable ({exc})"
            ) from None
        if filled != set(params):  # the part layout and StaticModel disagree: our bug
            raise RuntimeError(f"family parts miss {sorted(set(params) - filled)}")
        return model.to(device).eval()

    def latency_ms(self, name: str) -> float:
        """The member's latency: "measured_ms" when recorded, else "predicted_ms"."""
        entry = self._members[self._known(name)]
        value = entry.get("measured_ms")
        value = entry.get("predicted_ms") if value is None else value
        if not _is_number(value):
            raise NasError(
                f"{self.directory}: member '{name}' records no latency (measured_ms or "
                "predicted_ms); choose it with member= instead of a budget"
            )
        return float(value)

    def pick(self, budget_ms: float) -> str:
        """The member with the lowest "val_loss" whose latency is within `budget_ms` (ms).

        Ties go to the faster member. Raises `BudgetError` naming the fastest member if
        none fits, and `NasError` if a member records no latency or validation loss.
        """
        if not _is_number(budget_ms) or not budget_ms > 0:
            raise BudgetError(f"budget {budget_ms!r}: give a positive latency in ms")
        latency = {name: self.latency_ms(name) for name in self._members}
        loss = {}
        for name, entry in self._members.items():
            if not _is_number(entry.get("val_loss")):
                raise NasError(
                    f"{self.directory}: member '{name}' records no val_loss, so a budget "
                    "cannot rank it; choose a member with member= instead"
                )
            loss[name] = float(entry["val_loss"])
        fits = [name for name in self._members if latency[name] <= budget_ms]
        if not fits:
            fastest = min(self._members, key=latency.__getitem__)
            raise BudgetError(
                f"no member of {self.directory} fits the budget {_ms(budget_ms)}; the fastest "
                f"is '{fastest}' at {_ms(latency[fastest])}"
            )
        return min(fits, key=lambda name: (loss[name], latency[name]))

    def __repr__(self) -> str:
        return f"Family({str(self.directory)!r}, members={self.names})"


def _check_stored(stored: Any, part: PartUse, member: str, where: Path) -> None:
    """The manifest stores `part` at least as wide as `member` uses it."""
    ok = (
        isinstance(stored, dict)
        and isinstance(stored.get("dims"), dict)
        and isinstance(stored.get("tensors"), dict)
        and all(s.name in stored["tensors"] for s in part.specs)
    )
    if not ok:
        raise CheckpointError(f"{where}: part '{part.key}' of member '{member}' is not stored")
    for spec in part.specs:
        for k in spec.dims:
            have = stored["dims"].get(k)
            if not isinstance(have, int) or have < part.dims[k]:
                raise CheckpointError(
                    f"{where}: part '{part.key}' is stored with {k}={have}, member "
                    f"'{member}' needs {part.dims[k]}"
                )


def _stored_shape(spec: ParamSpec, dims: Dims) -> tuple[int, ...]:
    sizes = tuple(dims[k] for k in spec.dims)
    return (spec.pack, *sizes) if spec.pack > 1 else sizes


def _numel(spec: ParamSpec, dims: Dims) -> int:
    return math.prod(spec.shape(dims))


def _file_digest(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _ms(ms: float) -> str:
    return f"{ms:.3g} ms"
