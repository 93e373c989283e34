"""The token-mixer names a space may choose from, and which per-layer choices each uses.

This is the search space's view of the mixers: names and choice structure only. The
supernet's registry (supernet/mixers.py) maps the same names to weights and kernels, and
a test checks that the two agree.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MixerChoices:
    uses_heads: bool  # the layer's `heads` choice sets the mixer's inner width
    uses_window: bool  # the layer's `window` choice applies


# Ordered from most to least capacity: `SearchSpace.largest()` takes the first mixer the
# space allows and `smallest()` the last, so the sandwich rule trains the true extremes.
MIXERS: dict[str, MixerChoices] = {
    "attention": MixerChoices(uses_heads=True, uses_window=False),
    "ssm": MixerChoices(uses_heads=True, uses_window=False),
    "linear_attention": MixerChoices(uses_heads=True, uses_window=False),
    "sliding_window": MixerChoices(uses_heads=True, uses_window=True),
    "glu": MixerChoices(uses_heads=True, uses_window=False),
    "conv": MixerChoices(uses_heads=False, uses_window=False),
    "pool": MixerChoices(uses_heads=False, uses_window=False),
    "skip": MixerChoices(uses_heads=False, uses_window=False),
}
