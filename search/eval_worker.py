"""One evaluation, wherever it runs: its result, and the body of a Ray evaluation actor.

`timed_loss` evaluates one arch and turns an evaluator error into the result's line;
`EvalWorker` is the Ray actor that holds one `Evaluator` built once from the payload in
the object store. Both pools (workers.py) return `EvalResult`s.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

from nas.search_space import Arch

from .evaluator import Evaluator


@dataclass
class EvalResult:
    """The outcome of evaluating one arch."""

    key: int  # the id the driver gave (a trial number)
    arch: Arch
    loss: float | None  # mean validation CE, nats/token; None when it failed
    error: str  # "" when ok, else one line
    node: str  # where it ran: "IP node <node id prefix>"; the hostname in-process
    worker: str  # which worker: "actor <id prefix> pid N"; "in-process pid N"
    seconds: float  # evaluation time inside the worker, s
    attempts: int  # times it was dispatched (1 unless its worker died)


def one_line(err: BaseException) -> str:
    """`Type: first line of its message` for `err`, as a result's error field."""
    text = str(err).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(err).__name__}: {first}" if first else type(err).__name__


def timed_loss(evaluator: Evaluator, arch: Arch) -> tuple[float | None, str, float]:
    """(loss, error line, seconds). An evaluator error (a bad arch) is a result, not a
    crash: it would fail the same way anywhere, so it is reported rather than retried."""
    start = time.perf_counter()
    try:
        loss, error = float(evaluator.loss(arch)), ""
    except Exception as err:  # noqa: BLE001 - any evaluator error becomes the result's line
        loss, error = None, one_line(err)
    return loss, error, time.perf_counter() - start


class EvalWorker:
    """The body of a Ray evaluation actor: one `Evaluator`, many archs.

    It receives the payload's ObjectRef wrapped in a list, so that Ray hands over the ref
    itself and the actor reads the payload from the object store (zero-copy on its node).
    """

    def __init__(self, payload_ref: list[Any], threads: int):
        import ray
        import torch

        torch.set_num_threads(threads)  # workers share the node's cores; no oversubscription
        self.payload_id = payload_ref[0].hex()  # which object it read, for checks
        self.builds = 0
        self.evaluations = 0
        self.start_error = ""
        ctx = ray.get_runtime_context()
        node_id = ctx.get_node_id()
        self.info = {
            "pid": os.getpid(),
            "node_id": node_id,
            "node": f"{ray.util.get_node_ip_address()} node {node_id[:8]}",
            "worker": f"actor {ctx.get_actor_id()[:8]} pid {os.getpid()}",
        }
        try:
            self.evaluator: Evaluator | None = Evaluator(ray.get(payload_ref[0]))
            self.builds += 1
        except Exception as err:  # noqa: BLE001 - reported by ready(); the pool stops using it
            self.evaluator, self.start_error = None, one_line(err)

    def ready(self) -> dict[str, Any]:
        """Where this actor runs, and the error that stopped its evaluator from building."""
        return {**self.info, "error": self.start_error}

    def stats(self) -> dict[str, Any]:
        """Counters for checks: which payload object it holds, how often it built and ran."""
        return {
            **self.info,
            "payload_id": self.payload_id,
            "builds": self.builds,
            "evaluations": self.evaluations,
        }

    def evaluate(self, arch: Arch) -> tuple[float | None, str, float]:
        """(loss, error line, seconds) of `arch`."""
        assert self.evaluator is not None, "the pool never sends work to an actor that failed"
        self.evaluations += 1
        return timed_loss(self.evaluator, arch)


_ACTOR_CLASS: Any = None


def actor_class() -> Any:
    """`EvalWorker` as a Ray actor class (made on first use, so importing this module
    never imports Ray)."""
    global _ACTOR_CLASS
    if _ACTOR_CLASS is None:
        import ray

        _ACTOR_CLASS = ray.remote(num_cpus=1, max_restarts=0, max_task_retries=0)(EvalWorker)
    return _ACTOR_CLASS
