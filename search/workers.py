"""Evaluation pools: where the search's archs get their inherited losses.

The driver submits (key, arch) pairs and collects `EvalResult`s as they finish:

- `InProcessPool` evaluates in this process, one arch at a time (`--workers 0`: no Ray).
- `RayPool` runs long-lived Ray actors, each holding one `Evaluator` built once from a
  payload put in the object store once, so an evaluation ships only its arch. It keeps
  one evaluation in flight per actor, retries an arch whose actor died (killed, out of
  memory, node lost) on another actor, and replaces dead actors while the cluster has
  room for them.

Both pools have `size`, `submit`, `wait`, `pending` and `close`; `submit` never blocks
(archs beyond `size` queue), and `wait` returns at least one result unless nothing is
pending or its timeout passes.

`RayPool` lives in ray_pool.py and the actor's body in eval_worker.py; this module holds
`InProcessPool` and re-exports their names.
"""

from __future__ import annotations

import os
import socket
from collections import deque

from nas.search_space import Arch

from .eval_worker import EvalResult, EvalWorker, timed_loss
from .evaluator import EvalPayload, Evaluator
from .ray_pool import RayPool


# ---------------------------------------------------------------------- in-process
class InProcessPool:
    """Evaluates in this process, one arch per `wait` call. No Ray involved."""

    def __init__(self, payload: EvalPayload):
        self.evaluator = Evaluator(payload)
        self.size = 1  # evaluations that can run at once
        self._queue: deque[tuple[int, Arch]] = deque()
        self._node = socket.gethostname()
        self._worker = f"in-process pid {os.getpid()}"

    def submit(self, key: int, arch: Arch) -> None:
        """Queue `arch` under `key`; it is evaluated by a later `wait`."""
        self._queue.append((key, arch))

    def wait(self, timeout: float | None = None) -> list[EvalResult]:
        """Evaluate the oldest queued arch and return its result ([] if none is queued).

        `timeout` is accepted for the common interface; an evaluation is not interrupted."""
        if not self._queue:
            return []
        key, arch = self._queue.popleft()
        loss, error, seconds = timed_loss(self.evaluator, arch)
        return [EvalResult(key, arch, loss, error, self._node, self._worker, seconds, 1)]

    def pending(self) -> int:
        """Archs submitted and not yet returned by `wait`."""
        return len(self._queue)

    def close(self) -> None:
        """Drop whatever is still queued."""
        self._queue.clear()

    def __enter__(self) -> InProcessPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["EvalResult", "EvalWorker", "InProcessPool", "RayPool"]
