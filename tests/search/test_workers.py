"""Evaluation pools against the evaluator run directly, and connecting to Ray.

Real Ray, real worker processes: each Ray test starts (and stops) a local instance.
"""

from __future__ import annotations

import math
import secrets
import time

import numpy as np
import pytest

from conftest import make_tiny_space
from nas.core.errors import ClusterError
from nas.search.evaluator import EvalPayload, Evaluator, payload_from_net
from nas.search.ray_cluster import _sync_auth_with_environment, connect_ray
from nas.search.workers import InProcessPool, RayPool
from nas.search_space import Arch, LayerArch, NasError
from nas.supernet import Supernet


def make_payload(n_batches: int = 2, batch: int = 2, seq_len: int = 16) -> EvalPayload:
    """A fresh supernet over the tiny space and fixed random-token batches."""
    space = make_tiny_space()
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, space.vocab_size, size=(n_batches, batch, seq_len + 1))
    return payload_from_net(Supernet(space, seed=0), tokens[..., :-1], tokens[..., 1:])


def collect(pool, keys: set[int], timeout_s: float = 60.0) -> dict:
    """Wait on `pool` until every key in `keys` has a result; {key: result}."""
    results = {}
    deadline = time.monotonic() + timeout_s
    while set(results) != keys:
        left = deadline - time.monotonic()
        assert left > 0, f"results missing for keys {sorted(keys - set(results))}"
        for result in pool.wait(timeout=left):
            assert result.key not in results, f"key {result.key} returned twice"
            results[result.key] = result
    return results


def set_auth(monkeypatch, mode: str) -> None:
    """Choose Ray's auth mode for this test. A token comes from the environment, so
    nothing is written under ~/.ray."""
    monkeypatch.setenv("RAY_AUTH_MODE", mode)
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    if mode == "token":
        monkeypatch.setenv("RAY_AUTH_TOKEN", secrets.token_hex(32))
    else:
        monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)


def stop_ray(ctx, monkeypatch) -> None:
    """Stop Ray, then put this process's Ray config back to 'disabled' while the token is
    still set (a token-mode config without a token aborts Ray's lingering threads)."""
    ctx.shutdown()
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    _sync_auth_with_environment()


@pytest.fixture
def payload() -> EvalPayload:
    return make_payload()


@pytest.fixture
def archs() -> list[Arch]:
    space = make_tiny_space()
    return [space.largest(), space.smallest(), *space.sample_many(3, seed=1)]


def test_in_process_pool_matches_the_evaluator(payload, archs, one_thread):
    reference = Evaluator(payload)
    pool = InProcessPool(payload)
    assert pool.size == 1
    for key, arch in enumerate(archs):
        pool.submit(key, arch)
    assert pool.pending() == len(archs)
    results = collect(pool, set(range(len(archs))))
    assert pool.pending() == 0 and pool.wait() == []
    for key, arch in enumerate(archs):
        r = results[key]
        assert r.arch == arch and r.error == "" and r.attempts == 1
        assert r.loss == pytest.approx(reference.loss(arch), rel=1e-6)
        assert r.node and r.worker.startswith("in-process pid") and r.seconds > 0
    pool.close()


def test_in_process_pool_reports_a_bad_arch(payload, tiny_space):
    bad = Arch(d_model=999, layers=(LayerArch("conv", ffn=0),))
    pool = InProcessPool(payload)
    pool.submit(7, bad)
    [result] = pool.wait()
    assert result.key == 7 and result.loss is None and result.attempts == 1
    assert "ArchError" in result.error and "\n" not in result.error


@pytest.mark.parametrize("auth", ["token", "disabled"])
def test_ray_pool_matches_the_evaluator(payload, archs, monkeypatch, auth):
    set_auth(monkeypatch, auth)
    ctx = connect_ray(None, 2)
    try:
        assert ctx.started and ctx.cpus == 2 and ctx.nodes == 1
        import ray
        from ray._raylet import AuthenticationMode, get_authentication_mode

        want = AuthenticationMode.TOKEN if auth == "token" else AuthenticationMode.DISABLED
        assert get_authentication_mode() == want
        # This process is connected now: asking again reuses the connection (and will not
        # stop it), asking for another cluster is an error.
        again = connect_ray(None, 2)
        assert not again.started and again.address == ctx.address
        with pytest.raises(ClusterError, match="already connected"):
            connect_ray("10.1.2.3:6379", None)

        pool = RayPool(payload, workers=2)
        assert pool.size == 2
        bad = Arch(d_model=999, layers=(LayerArch("conv", ffn=0),))
        for key, arch in enumerate([*archs, bad]):
            pool.submit(key, arch)
        results = collect(pool, set(range(len(archs) + 1)))
        reference = Evaluator(payload)
        for key, arch in enumerate(archs):
            r = results[key]
            assert r.arch == arch and r.error == "" and r.attempts == 1
            assert r.loss == pytest.approx(reference.loss(arch), rel=1e-5)
            assert r.worker.startswith("actor ") and " pid " in r.worker and r.seconds > 0
            assert " node " in r.node
        # An evaluator error is the arch's fault: reported once, not retried.
        assert results[len(archs)].loss is None and results[len(archs)].attempts == 1
        assert "ArchError" in results[len(archs)].error
        assert pool.pending() == 0 and pool.wait(timeout=1) == []

        # The payload went into the object store once: both actors read that one object
        # and built their evaluator once, however many archs they scored.
        stats = pool.worker_stats()
        assert len(stats) == 2 and len({s["pid"] for s in stats}) == 2
        assert {s["payload_id"] for s in stats} == {pool.payload_ref.hex()}
        assert [s["builds"] for s in stats] == [1, 1]
        assert sum(s["evaluations"] for s in stats) == len(archs) + 1
        assert {r.worker for r in results.values()} <= {s["worker"] for s in stats}
        pool.close()
        pool.close()
        assert ray.is_initialized()

        if auth == "disabled":  # (prefetch has nothing to do with auth: once is enough)
            # With prefetch, each actor holds a second arch in its queue: same losses.
            pool = RayPool(payload, workers=2, prefetch=1)
            assert pool.size == 4
            for key, arch in enumerate(archs):
                pool.submit(key, arch)
            results = collect(pool, set(range(len(archs))))
            for key, arch in enumerate(archs):
                assert results[key].loss == pytest.approx(reference.loss(arch), rel=1e-5)
            pool.close()
    finally:
        stop_ray(ctx, monkeypatch)
    import ray

    assert not ray.is_initialized()


@pytest.mark.parametrize("address", ["127.0.0.1:1", "auto"])
def test_connect_ray_fails_fast_on_a_dead_address(monkeypatch, address):
    set_auth(monkeypatch, "disabled")
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")  # where "auto" looks first
    start = time.monotonic()
    with pytest.raises(ClusterError, match=rf"{address}.*ray start --head") as err:
        connect_ray(address, None, wait_s=2.0)
    assert time.monotonic() - start < 30
    assert isinstance(err.value, NasError) and "\n" not in str(err.value)
    import ray

    assert not ray.is_initialized()


@pytest.mark.parametrize("address", ["foo", "10.0.0.1", "host:port", "1.2.3.4:99999", ":80"])
def test_connect_ray_rejects_a_malformed_address(address):
    with pytest.raises(ClusterError, match="fix --address") as err:
        connect_ray(address, None, wait_s=0.5)
    assert address in str(err.value) and "\n" not in str(err.value)


def test_pool_rejects_nonsense(payload):
    with pytest.raises(ValueError):
        RayPool(payload, workers=0)
    assert math.isfinite(InProcessPool(payload).evaluator.loss(make_tiny_space().smallest()))
