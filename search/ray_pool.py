"""`RayPool`: evaluations on long-lived Ray actors that survive losing some of them.

Each actor (`eval_worker.EvalWorker`) holds one `Evaluator` built once from a payload put
in the object store once, so an evaluation ships only its arch. The pool keeps one
evaluation in flight per actor (plus `prefetch`), retries an arch whose actor died
(killed, out of memory, node lost) on another actor, and replaces dead actors while the
cluster has room for them. Its interface is `InProcessPool`'s (see workers.py).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from nas.search_space import Arch

from .eval_worker import EvalResult, actor_class, one_line
from .evaluator import EvalPayload


@dataclass
class _Job:
    key: int
    arch: Arch
    attempts: int = 0  # dispatches so far
    errors: list[str] = field(default_factory=list)  # why earlier attempts failed


@dataclass
class _Actor:
    handle: Any
    started: float  # time.monotonic() at creation
    info: dict[str, Any] = field(default_factory=dict)  # from ready(): pid, node, worker
    in_flight: int = 0  # evaluations sent and not yet returned
    dead: bool = False


# ---------------------------------------------------------------------- Ray pool
class RayPool:
    """Evaluates on `workers` long-lived Ray actors (Ray must already be connected).

    Each actor asks Ray for 1 CPU and uses `threads_per_worker` torch threads. It runs one
    evaluation at a time; with `prefetch` p, up to p more wait in its queue, so that it
    never idles for a round trip to the driver (at the cost of `size` = workers x (1 + p)
    archs out at once, which the driver then asks the sampler for).

    An arch whose actor dies is retried on another one, up to `max_attempts` dispatches
    in all; then its result has loss None and the error. Dead actors are replaced (at most
    `workers * max_attempts` replacements in a pool's life); an actor that has not started
    within `start_timeout_s` (no free CPU left in the cluster) is given up, and the pool
    goes on with the live ones. With none left, pending archs fail instead of hanging.
    """

    def __init__(
        self,
        payload: EvalPayload,
        workers: int,
        threads_per_worker: int = 1,
        max_attempts: int = 3,
        start_timeout_s: float = 60.0,
        prefetch: int = 0,
    ):
        import ray

        if workers < 1 or threads_per_worker < 1 or max_attempts < 1 or prefetch < 0:
            raise ValueError(
                "RayPool needs workers, threads_per_worker, max_attempts >= 1 and prefetch "
                f">= 0, got {workers}, {threads_per_worker}, {max_attempts}, {prefetch}"
            )
        if not ray.is_initialized():
            raise RuntimeError("RayPool needs a connected Ray; call connect_ray first")
        self.threads = threads_per_worker
        self.max_attempts = max_attempts
        self.start_timeout_s = start_timeout_s
        self.depth = 1 + prefetch  # evaluations out per actor
        self.payload_ref = ray.put(payload)  # once; every actor reads this one object
        self._replacements_left = workers * max_attempts
        self._queue: deque[_Job] = deque()
        self._starting: dict[Any, _Actor] = {}  # ready() ref -> actor being created
        self._live: list[_Actor] = []  # started and not lost
        self._running: dict[Any, tuple[_Job, _Actor]] = {}  # evaluate() ref -> (job, actor)
        self._done: list[EvalResult] = []  # results made outside ray.wait (give-ups)
        self.lost: list[str] = []  # why actors were lost, oldest first (for reports)
        for _ in range(workers):
            self._start_actor()

    # ------------------------------------------------------------------ public
    @property
    def size(self) -> int:
        """Evaluations the pool takes at once: live actors (started or starting) x (1 +
        prefetch)."""
        return (len(self._starting) + len(self._live)) * self.depth

    def submit(self, key: int, arch: Arch) -> None:
        """Queue `arch` under `key`; it runs as soon as an actor is free."""
        self._queue.append(_Job(key, arch))
        self._dispatch()

    def pending(self) -> int:
        """Archs submitted whose result `wait` has not returned yet."""
        return len(self._queue) + len(self._running) + len(self._done)

    def wait(self, timeout: float | None = None) -> list[EvalResult]:
        """Block until at least one result is in (or `timeout` seconds pass) and return
        every result that is in. [] when nothing is pending."""
        import ray

        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self._dispatch()
            if self._done or not (self._queue or self._running):
                out, self._done = self._done, []
                return out
            waiting = list(self._running) + list(self._starting)
            if not waiting:
                self._fail_queue("no evaluation worker is left")
                out, self._done = self._done, []
                return out
            now = time.monotonic()
            step = self._next_start_deadline() - now
            if deadline is not None:
                step = min(step, deadline - now)
            step_s = None if step == float("inf") else max(0.0, step)  # None: until one is in
            done, _ = ray.wait(waiting, num_returns=1, timeout=step_s)
            if done:  # also take whatever else finished meanwhile
                first = set(done)
                rest = [ref for ref in waiting if ref not in first]
                more, _ = ray.wait(rest, num_returns=len(rest), timeout=0) if rest else ([], [])
                done += more
            for ref in done:
                if ref in self._running:
                    self._finish(ref)
                else:
                    self._started(ref)
            self._give_up_slow_starts()
            if self._done or (deadline is not None and time.monotonic() >= deadline):
                out, self._done = self._done, []
                return out

    def running(self) -> dict[int, dict[str, Any]]:
        """{key: where it runs} for the archs sent to an actor (evaluating, or queued there
        with prefetch): the actor's pid, node_id (hex), node and worker (as in `EvalResult`)."""
        return {job.key: dict(actor.info) for job, actor in self._running.values()}

    def worker_stats(self, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Each live actor's counters: pid, node, worker, payload_id (the object it read),
        builds (evaluators it built) and evaluations. Waits for actors still starting."""
        import ray

        actors = self._live + list(self._starting.values())
        return ray.get([a.handle.stats.remote() for a in actors], timeout=timeout)

    def close(self) -> None:
        """Stop every actor; whatever was pending is dropped. Safe to call twice."""
        import ray

        for actor in self._live + list(self._starting.values()):
            ray.kill(actor.handle, no_restart=True)
        self._live, self._starting, self._running = [], {}, {}
        self._queue.clear()
        self._done = []

    def __enter__(self) -> RayPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ internals
    def _start_actor(self) -> None:
        handle = (
            actor_class()
            .options(scheduling_strategy="SPREAD")
            .remote([self.payload_ref], self.threads)
        )
        self._starting[handle.ready.remote()] = _Actor(handle, time.monotonic())

    def _replace_actor(self) -> None:
        if self._replacements_left > 0:
            self._replacements_left -= 1
            self._start_actor()

    def _dispatch(self) -> None:
        while self._queue:
            free = [a for a in self._live if a.in_flight < self.depth]
            if not free:
                return
            actor = min(free, key=lambda a: a.in_flight)  # the least busy first
            job = self._queue.popleft()
            job.attempts += 1
            actor.in_flight += 1
            self._running[actor.handle.evaluate.remote(job.arch)] = (job, actor)

    def _started(self, ref: Any) -> None:
        import ray

        actor = self._starting.pop(ref)
        try:
            info = ray.get(ref)
        except ray.exceptions.RayError as err:  # died while starting (killed, node lost)
            self._lose(actor, f"an actor died while starting: {one_line(err)}")
            self._replace_actor()
            return
        if info["error"]:  # its evaluator cannot be built; a replacement would fail alike
            self._lose(actor, f"an actor could not build its evaluator: {info['error']}")
            return
        actor.info = info
        self._live.append(actor)

    def _finish(self, ref: Any) -> None:
        import ray

        job, actor = self._running.pop(ref)
        actor.in_flight -= 1
        try:
            loss, error, seconds = ray.get(ref)
        except ray.exceptions.RayTaskError as err:  # raised in the actor, which still lives
            loss, error, seconds = None, one_line(getattr(err, "cause", None) or err), 0.0
        except ray.exceptions.RayError as err:  # the actor (or its node) died
            if not actor.dead:  # its other prefetched evaluations fail alike: lose it once
                self._live.remove(actor)
                self._lose(actor, f"{actor.info.get('worker', 'an actor')} died: {one_line(err)}")
                self._replace_actor()
            job.errors.append(one_line(err))
            if job.attempts < self.max_attempts:
                self._queue.appendleft(job)  # first in line for the next free actor
            else:
                self._done.append(self._failed(job, actor))
            return
        self._done.append(
            EvalResult(
                job.key,
                job.arch,
                loss,
                error,
                actor.info["node"],
                actor.info["worker"],
                seconds,
                job.attempts,
            )
        )

    def _failed(self, job: _Job, actor: _Actor | None) -> EvalResult:
        reason = job.errors[-1] if job.errors else "not evaluated"
        error = f"evaluation failed after {job.attempts} attempt(s): {reason}"
        info = actor.info if actor is not None else {}
        return EvalResult(
            job.key,
            job.arch,
            None,
            error,
            info.get("node", ""),
            info.get("worker", ""),
            0.0,
            job.attempts,
        )

    def _lose(self, actor: _Actor, why: str) -> None:
        import ray

        actor.dead = True
        self.lost.append(why)
        ray.kill(actor.handle, no_restart=True)  # make sure it holds no CPU any more

    def _next_start_deadline(self) -> float:
        starts = [a.started for a in self._starting.values()]
        return min(starts) + self.start_timeout_s if starts else float("inf")

    def _give_up_slow_starts(self) -> None:
        now = time.monotonic()
        for ref, actor in list(self._starting.items()):
            if now - actor.started >= self.start_timeout_s:
                del self._starting[ref]
                self._lose(actor, f"an actor did not start within {self.start_timeout_s:g} s")

    def _fail_queue(self, why: str) -> None:
        reason = why + (f" ({self.lost[-1]})" if self.lost else "")
        while self._queue:
            job = self._queue.popleft()
            job.errors.append(reason)
            self._done.append(self._failed(job, None))
