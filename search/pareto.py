"""The Pareto front of points that minimise two objectives (validation loss, latency).

A point is dominated when another is no worse in both coordinates and better in at least
one. Equal points do not dominate each other, so only the first of a group of equal
points (lowest index) is kept: a front lists each trade-off once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["pareto_front"]


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the non-dominated `(loss, latency)` points, sorted by latency ascending.

    Both coordinates are minimised. Along the returned order the latency increases and
    the loss strictly decreases. Of several equal points only the first (lowest index) is
    returned. Infinite values are allowed; a NaN coordinate raises `ValueError` (it orders
    against nothing, so no front can be defined). O(n log n).
    """
    for i, (loss, latency) in enumerate(points):
        if math.isnan(loss) or math.isnan(latency):
            raise ValueError(f"pareto_front: point {i} has a NaN coordinate ({loss}, {latency})")
    # By latency, then loss, then index: the first point of a latency group has its least
    # loss, and the first of equal points has the lowest index.
    order = sorted(range(len(points)), key=lambda i: (points[i][1], points[i][0], i))
    front: list[int] = []
    best_loss = math.inf
    for i in order:
        loss = points[i][0]
        # Any earlier point in `order` has latency <= this one's, so this point survives
        # only by a strictly lower loss than every one of them.
        if loss < best_loss or (not front and loss == math.inf):
            front.append(i)
            best_loss = loss
    return front
