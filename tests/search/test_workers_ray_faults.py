"""RayPool under faults: a worker killed mid-evaluation, a node removed mid-run.

Real Ray and real processes; the faults are real (SIGKILL, a node's processes killed).
Evaluations are made slow (many validation batches) so that a fault lands mid-evaluation.
"""

from __future__ import annotations

import os
import signal
import time

import pytest
from test_workers import collect, make_payload, set_auth, stop_ray

from conftest import make_tiny_space
from nas.search.evaluator import Evaluator
from nas.search.ray_cluster import connect_ray
from nas.search.workers import RayPool

SLOW_BATCHES = 800  # the largest tiny arch then takes about a second per evaluation


@pytest.fixture(scope="module")
def slow_payload():
    return make_payload(n_batches=SLOW_BATCHES, batch=4, seq_len=32)


def wait_until_running(pool: RayPool, key: int, results: dict, timeout_s: float = 30) -> dict:
    """Wait (collecting results meanwhile) until `key` runs on an actor; where it runs."""
    deadline = time.monotonic() + timeout_s
    while key not in pool.running():
        assert time.monotonic() < deadline, f"key {key} never started"
        results.update({r.key: r for r in pool.wait(timeout=0.1)})
    return pool.running()[key]


@pytest.fixture(scope="class")
def local_ray():
    """One local Ray of 2 CPUs for the kill tests (starting Ray costs seconds); stopped
    before the cluster test, which must not find this process connected."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        set_auth(monkeypatch, "disabled")
        ctx = connect_ray(None, 2)
        yield ctx
        stop_ray(ctx, monkeypatch)


class TestKilledWorker:
    """SIGKILL to the actor process while it evaluates."""

    def test_a_killed_worker_is_retried_on_another(self, local_ray, slow_payload):
        space = make_tiny_space()
        slow, others = space.largest(), space.sample_many(3, seed=2)
        pool = RayPool(slow_payload, workers=2)
        results: dict = {}
        pool.submit(0, slow)
        victim = wait_until_running(pool, 0, results)
        time.sleep(0.3)  # inside the evaluation, which takes about a second
        os.kill(victim["pid"], signal.SIGKILL)
        for key, arch in enumerate(others, start=1):
            pool.submit(key, arch)
        results.update(collect(pool, {0, 1, 2, 3}))

        killed = results[0]
        assert killed.attempts == 2 and killed.error == ""
        assert killed.worker != victim["worker"] and str(victim["pid"]) not in killed.worker
        assert killed.loss == pytest.approx(Evaluator(slow_payload).loss(slow), rel=1e-5)
        for key in (1, 2, 3):
            assert results[key].loss is not None and results[key].attempts == 1
        assert len(pool.lost) == 1 and victim["worker"] in pool.lost[0]
        assert pool.size == 2  # the dead actor was replaced
        pool.close()

    def test_a_killed_worker_with_prefetch_loses_no_arch(self, local_ray, slow_payload):
        # Two archs out per actor: the killed actor's evaluating and queued archs both
        # go to the other actor (or its replacement).
        space = make_tiny_space()
        archs = [space.largest()] * 4
        pool = RayPool(slow_payload, workers=2, prefetch=1)
        results: dict = {}
        for key, arch in enumerate(archs):
            pool.submit(key, arch)
        victim = wait_until_running(pool, 0, results)
        while len(pool.running()) < 4 and len(results) == 0:  # both actors loaded
            results.update({r.key: r for r in pool.wait(timeout=0.1)})
        doomed = [k for k, info in pool.running().items() if info["pid"] == victim["pid"]]
        time.sleep(0.2)
        os.kill(victim["pid"], signal.SIGKILL)
        results.update(collect(pool, {0, 1, 2, 3}))
        assert {r.loss for r in results.values()} == {results[0].loss}
        for key in doomed:
            assert results[key].attempts == 2 and victim["worker"] != results[key].worker
        assert len(doomed) >= 1 and len(pool.lost) == 1
        pool.close()

    def test_a_worker_killed_on_its_last_attempt_fails_its_arch(self, local_ray, slow_payload):
        pool = RayPool(slow_payload, workers=1, max_attempts=1)
        results: dict = {}
        pool.submit(0, make_tiny_space().largest())
        victim = wait_until_running(pool, 0, results)
        time.sleep(0.2)
        os.kill(victim["pid"], signal.SIGKILL)
        results.update(collect(pool, {0}))
        assert results[0].loss is None and results[0].attempts == 1
        assert "failed after 1 attempt" in results[0].error and "\n" not in results[0].error
        assert pool.pending() == 0
        pool.close()


def test_a_removed_node_loses_no_arch(monkeypatch, slow_payload):
    from ray.cluster_utils import Cluster

    set_auth(monkeypatch, "disabled")
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    ctx = None
    try:
        other = cluster.add_node(num_cpus=1)
        ctx = connect_ray(cluster.address, None)
        assert not ctx.started and ctx.nodes == 2 and ctx.cpus == 2
        head_id, other_id = cluster.head_node.node_id, other.node_id
        pool = RayPool(slow_payload, workers=2)
        # SPREAD puts one actor on each node; one arch each, both nodes used.
        assert {s["node_id"] for s in pool.worker_stats(timeout=30)} == {head_id, other_id}
        space = make_tiny_space()
        archs = [space.largest(), *space.sample_many(5, seed=3)]
        pool.submit(0, space.smallest())  # both actors are idle: one arch each
        pool.submit(1, space.smallest())
        before = collect(pool, {0, 1})
        assert {r.node.split(" node ")[1] for r in before.values()} == {
            head_id[:8],
            other_id[:8],
        }

        results: dict = {}
        for key in (2, 3):
            pool.submit(key, archs[0])
        wait_until_running(pool, 3, results)
        wait_until_running(pool, 2, results)
        [on_other] = [k for k, info in pool.running().items() if info["node_id"] == other_id]
        time.sleep(0.2)
        cluster.remove_node(other)
        for key in (4, 5, 6, 7):
            pool.submit(key, archs[key - 2])
        results.update(collect(pool, {2, 3, 4, 5, 6, 7}, timeout_s=90))
        for key, r in results.items():
            assert r.loss is not None, (key, r.error)
            assert r.node.endswith(head_id[:8])  # every one finished on the head
        assert results[on_other].attempts == 2
        assert results[on_other].loss == results[5 - on_other].loss  # same arch, same node
        pool.close()
    finally:
        if ctx is not None:
            stop_ray(ctx, monkeypatch)
        import ray

        ray.shutdown()
        cluster.shutdown()
