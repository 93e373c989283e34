"""`SearchSpace`: the choices a subnetwork may make, and everything derived from them.

A space is a frozen value. It is built from a YAML/JSON file, a dict, or in Python, and
validated once: every problem is reported together, naming the field and the fix.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from nas.core.errors import ArchError, SpaceError

from .arch import Arch, LayerArch
from .mixers import MIXERS

_DEFAULT_FILE = Path(__file__).with_name("default.yaml")

# Fields holding the ordered, nested width choices (a smaller value is a prefix of a larger).
_CHOICE_FIELDS = ("d_model", "heads", "ffn", "windows", "exits")


@dataclass(frozen=True)
class SearchSpace:
    """The elastic dimensions of the supernet and the fixed constants every arch shares."""

    d_model: tuple[int, ...]  # model-width choices, ascending; the max is the supernet width
    heads: tuple[int, ...]  # per-layer head choices (inner width = heads * head_dim)
    ffn: tuple[int, ...]  # per-layer FFN hidden-unit choices, ascending; 0 = no FFN
    mixers: tuple[str, ...]  # allowed token mixers (names from search_space.mixers.MIXERS)
    exits: tuple[int, ...]  # depths at which the output may be read; the max is the depth
    windows: tuple[int, ...] = ()  # sliding-window sizes in tokens (needed for sliding_window)
    vocab_size: int = 256  # tokens are bytes by default
    max_seq_len: int = 256  # length of the learned position table, in tokens
    causal: bool = True  # causal language modelling (True) or bidirectional mixing
    head_dim: int = 32  # width of one head, fixed so that heads nest by prefix
    conv_kernel: int = 4  # depthwise-conv kernel size in tokens
    pool_size: int = 3  # pooling window in tokens
    ssm_state: int = 16  # state size N of the selective scan
    chunk_size: int = 64  # chunk length of the O(T) linear-attention and scan kernels
    name: str = field(default="custom", compare=False)  # a label for reports

    # ---------------------------------------------------------------- construction
    def __post_init__(self) -> None:
        for name in (*_CHOICE_FIELDS, "mixers"):
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        problems = self._problems()
        if problems:
            raise SpaceError(f"space '{self.name}': " + "; ".join(problems))

    @classmethod
    def default(cls) -> SearchSpace:
        """The space shipped with nas, sized for batch 1 x 256 tokens on 2 CPU cores."""
        return cls.from_file(_DEFAULT_FILE)

    @classmethod
    def from_dict(cls, data: Any, source: str = "space") -> SearchSpace:
        """Build from a dict (as parsed from YAML/JSON). Raises `SpaceError` naming `source`."""
        if not isinstance(data, dict):
            raise SpaceError(f"{source}: expected a mapping of field names to values")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        problems = [f"unknown field '{k}' (allowed: {', '.join(sorted(known))})" for k in unknown]
        kwargs: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in data:
                continue
            value = data[f.name]
            if f.name in (*_CHOICE_FIELDS, "mixers"):
                if not isinstance(value, list):
                    problems.append(f"field '{f.name}' must be a list, got {value!r}")
                    continue
                value = tuple(value)
            kwargs[f.name] = value
        missing = [n for n in ("d_model", "heads", "ffn", "mixers", "exits") if n not in data]
        problems += [f"missing field '{n}'" for n in missing]
        if problems:
            raise SpaceError(f"{source}: " + "; ".join(problems))
        kwargs.setdefault("name", Path(source).stem if source != "space" else "custom")
        try:
            return cls(**kwargs)
        except SpaceError as exc:
            raise SpaceError(f"{source}: {str(exc).split(': ', 1)[1]}") from None

    @classmethod
    def from_file(cls, path: str | Path) -> SearchSpace:
        """Read a space from a .yaml/.yml/.json file. Raises `SpaceError` naming the file."""
        path = Path(path)
        if not path.is_file():
            raise SpaceError(f"{path}: space file not found; pass an existing .yaml or .json file")
        text = path.read_text()
        try:
            data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
        except json.JSONDecodeError as exc:
            raise SpaceError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            raise SpaceError(f"{path}: not valid YAML{where}") from None
        return cls.from_dict(data, source=str(path))

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for name in (*_CHOICE_FIELDS, "mixers"):
            out[name] = list(out[name])
        return out

    @property
    def fingerprint(self) -> str:
        """Hash of everything that shapes the supernet's weights (not the label)."""
        data = self.to_dict()
        data.pop("name")
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]

    def _problems(self) -> list[str]:
        problems: list[str] = []
        for name in _CHOICE_FIELDS:
            values = getattr(self, name)
            allow_zero = name == "ffn"
            if name == "windows" and not values:
                continue
            if not values:
                problems.append(f"field '{name}' must list at least one choice")
                continue
            if any(isinstance(v, bool) or not isinstance(v, int) for v in values):
                problems.append(f"field '{name}' must list integers, got {list(values)}")
                continue
            if any(v < (0 if allow_zero else 1) for v in values):
                lowest = "0" if allow_zero else "1"
                problems.append(f"field '{name}' values must be >= {lowest}, got {list(values)}")
            if list(values) != sorted(set(values)):
                problems.append(
                    f"field '{name}' must be strictly ascending without repeats, got {list(values)}"
                )
        bad = [m for m in self.mixers if m not in MIXERS]
        if bad:
            problems.append(f"field 'mixers': unknown {bad}; valid mixers are {list(MIXERS)}")
        if not self.mixers:
            problems.append("field 'mixers' must list at least one mixer")
        if len(set(self.mixers)) != len(self.mixers):
            problems.append(f"field 'mixers' has repeats: {list(self.mixers)}")
        if "sliding_window" in self.mixers and not self.windows:
            problems.append("field 'windows' must list window sizes when 'sliding_window' is used")
        scalars = ("vocab_size", "max_seq_len", "head_dim", "conv_kernel", "pool_size")
        for name in (*scalars, "ssm_state", "chunk_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                problems.append(f"field '{name}' must be a positive integer, got {value!r}")
        if not isinstance(self.causal, bool):
            problems.append(f"field 'causal' must be true or false, got {self.causal!r}")
        return problems

    # ---------------------------------------------------------------- layer options
    @property
    def max_depth(self) -> int:
        return self.exits[-1]

    def layer_options(self) -> list[LayerArch]:
        """Every distinct choice for one layer, in a fixed order."""
        options = []
        for mixer in self.mixers:
            spec = MIXERS[mixer]
            for heads in self.heads if spec.uses_heads else (None,):
                for window in self.windows if spec.uses_window else (None,):
                    for ffn in self.ffn:
                        options.append(LayerArch(mixer, heads, window, ffn))
        return options

    @property
    def log10_size(self) -> float:
        """log10 of the number of distinct archs in the space."""
        per_layer = math.log10(len(self.layer_options()))
        # log10(sum_e per_layer**e) computed stably via the largest term.
        terms = [e * per_layer for e in self.exits]
        top = max(terms)
        rest = sum(10 ** (t - top) for t in terms)
        return math.log10(len(self.d_model)) + top + math.log10(rest)

    # ---------------------------------------------------------------- validation
    def validate(self, arch: Arch) -> Arch:
        """Check that `arch` is a member of this space; return it unchanged.

        Raises `ArchError` listing every field that is out of the space and what is allowed.
        """
        problems: list[str] = []
        if arch.d_model not in self.d_model:
            problems.append(f"d_model: {arch.d_model} is not one of {list(self.d_model)}")
        if arch.depth not in self.exits:
            problems.append(
                f"layers: {arch.depth} layers is not an exit of the space; "
                f"allowed {list(self.exits)}"
            )
        for i, layer in enumerate(arch.layers):
            where = f"layers[{i}]"
            if layer.mixer not in self.mixers:
                problems.append(f"{where}.mixer: '{layer.mixer}' is not one of {list(self.mixers)}")
                continue
            spec = MIXERS[layer.mixer]
            if spec.uses_heads and layer.heads not in self.heads:
                problems.append(f"{where}.heads: {layer.heads} is not one of {list(self.heads)}")
            if not spec.uses_heads and layer.heads is not None:
                problems.append(f"{where}.heads: mixer '{layer.mixer}' has no heads; omit 'heads'")
            if spec.uses_window and layer.window not in self.windows:
                problems.append(
                    f"{where}.window: {layer.window} is not one of {list(self.windows)}"
                )
            if not spec.uses_window and layer.window is not None:
                problems.append(f"{where}.window: mixer '{layer.mixer}' has no window; omit it")
            if layer.ffn not in self.ffn:
                problems.append(f"{where}.ffn: {layer.ffn} is not one of {list(self.ffn)}")
        if problems:
            raise ArchError("arch not in space: " + "; ".join(problems))
        return arch

    def contains(self, arch: Arch) -> bool:
        try:
            self.validate(arch)
        except ArchError:
            return False
        return True

    # ---------------------------------------------------------------- sampling
    def sample(
        self,
        seed: int | None = None,
        rng: np.random.Generator | None = None,
        mixer: str | None = None,
        layer_mixers: Sequence[str] | None = None,
    ) -> Arch:
        """One arch drawn uniformly per choice (width, exit, then each layer's choices).

        Pass `seed` for a reproducible draw, or `rng` to continue a generator's stream.
        With `mixer`, every layer uses that mixer (the other choices are still drawn).
        With `layer_mixers`, layer i uses `layer_mixers[i]`, and the depth is their number
        (an exit of the space).
        """
        if rng is None:
            rng = np.random.default_rng(seed)
        for name in [mixer] if layer_mixers is None else list(layer_mixers):
            if name is not None and name not in self.mixers:
                raise ArchError(f"mixer '{name}' is not one of {list(self.mixers)}")
        if layer_mixers is not None and len(layer_mixers) not in self.exits:
            raise ArchError(f"{len(layer_mixers)} layer mixers: not an exit of {self.exits}")
        d_model = int(rng.choice(self.d_model))
        depth = len(layer_mixers) if layer_mixers is not None else int(rng.choice(self.exits))
        layers = []
        for i in range(depth):
            name = layer_mixers[i] if layer_mixers is not None else mixer
            name = name or str(rng.choice(self.mixers))
            spec = MIXERS[name]
            heads = int(rng.choice(self.heads)) if spec.uses_heads else None
            window = int(rng.choice(self.windows)) if spec.uses_window else None
            ffn = int(rng.choice(self.ffn))
            layers.append(LayerArch(name, heads, window, ffn))
        return Arch(d_model, tuple(layers))

    def sample_many(self, n: int, seed: int = 0) -> list[Arch]:
        """`n` archs from one seeded stream (duplicates possible in tiny spaces)."""
        rng = np.random.default_rng(seed)
        return [self.sample(rng=rng) for _ in range(n)]

    def _extreme(self, pick: int, mixers: Sequence[str] | None) -> Arch:
        # pick = -1 for the largest, 0 for the smallest choice of every dimension.
        depth = self.exits[pick]
        if mixers is None:
            ranked = [m for m in MIXERS if m in self.mixers]
            mixers = [ranked[0] if pick == -1 else ranked[-1]] * depth
        elif len(mixers) != depth or set(mixers) - set(self.mixers):
            raise ArchError(f"{list(mixers)}: need {depth} mixers, each one of {list(self.mixers)}")
        layers = []
        for mixer in mixers:
            spec = MIXERS[mixer]
            layers.append(
                LayerArch(
                    mixer=mixer,
                    heads=self.heads[pick] if spec.uses_heads else None,
                    window=self.windows[pick] if spec.uses_window else None,
                    ffn=self.ffn[pick],
                )
            )
        return Arch(self.d_model[pick], tuple(layers))

    def largest(self, mixers: Sequence[str] | None = None) -> Arch:
        """Max width, deepest exit, and in every layer the highest-capacity mixer at max size.

        With `mixers` (one per layer of the deepest exit), those mixers at max size instead.
        """
        return self._extreme(-1, mixers)

    def smallest(self, mixers: Sequence[str] | None = None) -> Arch:
        """Min width, earliest exit, and in every layer the cheapest mixer at min size.

        With `mixers` (one per layer of the earliest exit), those mixers at min size instead.
        """
        return self._extreme(0, mixers)

    # ---------------------------------------------------------------- features
    @property
    def encoding_size(self) -> int:
        return 2 + self.max_depth * (len(self.mixers) + 4)

    def encode(self, arch: Arch) -> np.ndarray:
        """A fixed-length float32 feature vector for predictors.

        Layout: [d_model/max, depth/max] then, per layer slot up to the max depth, a
        one-hot mixer, heads/max, window/max, ffn/max and an `active` flag (zeros for
        layers past the exit).
        """
        vec = np.zeros(self.encoding_size, dtype=np.float32)
        vec[0] = arch.d_model / self.d_model[-1]
        vec[1] = arch.depth / self.max_depth
        width = len(self.mixers) + 4
        max_window = self.windows[-1] if self.windows else 1
        max_ffn = self.ffn[-1] or 1
        for i, layer in enumerate(arch.layers):
            base = 2 + i * width
            vec[base + self.mixers.index(layer.mixer)] = 1.0
            vec[base + len(self.mixers)] = (layer.heads or 0) / self.heads[-1]
            vec[base + len(self.mixers) + 1] = (layer.window or 0) / max_window
            vec[base + len(self.mixers) + 2] = layer.ffn / max_ffn
            vec[base + len(self.mixers) + 3] = 1.0
        return vec

    def encode_many(self, archs: list[Arch]) -> np.ndarray:
        """(n, encoding_size) float32 matrix of `encode` rows."""
        return (
            np.stack([self.encode(a) for a in archs])
            if archs
            else np.zeros((0, self.encoding_size), dtype=np.float32)
        )

    # ---------------------------------------------------------------- analytic counts
    def param_count(self, arch: Arch) -> int:
        """Parameters of the extracted model of `arch`, from closed-form per-part counts."""
        d, v = arch.d_model, self.vocab_size
        total = v * d + self.max_seq_len * d  # token and position embeddings
        for layer in arch.layers:
            e = (layer.heads or 0) * self.head_dim
            h = layer.heads or 0
            if layer.mixer != "skip":
                total += 2 * d  # pre-mixer LayerNorm
            if layer.mixer in ("attention", "sliding_window", "linear_attention"):
                total += 4 * e * d + 3 * e + d  # packed qkv with bias, output proj with bias
            elif layer.mixer == "glu":
                total += 3 * e * d + 2 * e + d  # packed [u; g] with bias, output with bias
            elif layer.mixer == "ssm":
                n = self.ssm_state
                total += 3 * e * d + 2 * n * d + h * d + 3 * h  # xz, bc, dt, out; dt_bias, A, D
            elif layer.mixer == "conv":
                total += self.conv_kernel * d + d
            if layer.ffn:
                total += 2 * d + 2 * layer.ffn * d + layer.ffn + d  # LayerNorm, two linears
        total += 2 * d + v * d + v  # exit LayerNorm and unembedding
        return total
