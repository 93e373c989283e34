"""The fixed constants of a network, shared by the supernet and every extracted model.

An extracted model stores these (plus its arch) as its JSON config, which is all it
needs to rebuild itself: no search space, no supernet.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from nas.core.errors import CheckpointError
from nas.search_space import SearchSpace


@dataclass(frozen=True)
class NetConstants:
    vocab_size: int  # tokens
    max_seq_len: int  # rows of the position table, tokens
    head_dim: int  # width of one head
    ssm_state: int  # state size N of the selective scan
    conv_kernel: int  # depthwise-conv kernel size, tokens
    pool_size: int  # pooling window, tokens
    chunk_size: int  # chunk length of the O(T) kernels
    causal: bool  # causal (True) or bidirectional kernels

    @classmethod
    def from_space(cls, space: SearchSpace) -> NetConstants:
        return cls(**{f.name: getattr(space, f.name) for f in fields(cls)})

    @classmethod
    def from_dict(cls, data: Any, source: str) -> NetConstants:
        names = [f.name for f in fields(cls)]
        if not isinstance(data, dict) or any(n not in data for n in names):
            raise CheckpointError(f"{source}: 'constants' must hold {names}")
        return cls(**{n: data[n] for n in names})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def dims(self, d_model: int, heads: int | None = None, ffn: int = 0) -> dict[str, int]:
        """Concrete size of every symbolic dim (see params.ParamSpec) for one layer."""
        heads = heads or 0
        return {
            "d": d_model,
            "E": heads * self.head_dim,
            "H": heads,
            "F": ffn,
            "N": self.ssm_state,
            "K": self.conv_kernel,
            "V": self.vocab_size,
            "T": self.max_seq_len,
        }
