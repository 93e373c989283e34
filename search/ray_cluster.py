"""Connecting to Ray: start a private local instance, or join a running cluster.

`connect_ray(None, n)` starts a local Ray of `n` CPUs for this process alone and shuts it
down with the returned context. `connect_ray("auto")` or `connect_ray("HOST:PORT")` joins
a cluster someone started with `ray start --head` and leaves it running afterwards.

Two Ray 2.60 behaviours shape this module:

- `ray.init(address=...)` on an address where nothing answers retries for many minutes
  (about 35 s per attempt, 20 attempts). So the GCS port is probed with plain TCP first,
  within `wait_s`, and a dead address fails fast with a `ClusterError`.
- Ray reads `RAY_AUTH_MODE` into a per-process config once, at import, while the servers
  it spawns read the environment afresh. If the variable changed since (a test, a CLI
  flag), the two disagree and a token-mode GCS aborts for want of a token. So the config
  is refreshed from the environment before every `ray.init`.

A note on exposure: Ray replaces a loopback node address (127.0.0.1) by the machine's
address on Linux and its servers listen on every interface, so a local instance is
reachable from the network; token authentication (`RAY_AUTH_MODE=token`, Ray's default
for local clusters) is what keeps others out.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import time
from dataclasses import dataclass
from typing import Any

from nas.core.errors import ClusterError

_HOST_PORT = re.compile(r"^(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.\-]+):(?P<port>\d{1,5})$")
_PROBE_INTERVAL_S = 0.5  # between TCP probes of a port that does not answer yet
DEFAULT_WAIT_S = 20.0  # how long an address may take to answer, unless NAS_RAY_WAIT_S says


@dataclass
class RayContext:
    """A connection to Ray. `shutdown()` stops Ray only if this process started it."""

    address: str  # GCS address HOST:PORT of the cluster
    started: bool  # True when connect_ray started this Ray (and shutdown stops it)
    nodes: int  # alive nodes when connected
    cpus: float  # total CPUs of the cluster when connected

    def shutdown(self) -> None:
        """Disconnect; stop the local Ray if this context started it. Safe to call twice."""
        import ray

        if self.started and ray.is_initialized():
            ray.shutdown()
        self.started = False

    def __enter__(self) -> RayContext:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


def connect_ray(
    address: str | None, num_cpus: int | None, *, wait_s: float | None = None
) -> RayContext:
    """Start or join Ray for this process.

    `address=None` starts a private local Ray with `num_cpus` CPUs (None: all of this
    machine's), no dashboard and quiet logs. `address="auto"` joins the cluster named by
    `RAY_ADDRESS` or the last `ray start` on this machine; `"HOST:PORT"` joins the cluster
    whose GCS listens there (`num_cpus` is then ignored: the cluster has its own). If this
    process is already connected, that connection is reused and left running.

    Raises `ClusterError` (one line naming the address and the fix) for a malformed address,
    or when no Ray answers there within `wait_s` seconds (None: `default_wait_s()`), or
    Ray refuses the connection.
    """
    import ray

    if address is not None and not isinstance(address, str):
        raise ClusterError(f"Ray address must be a string, got {address!r}")
    if address is not None:
        address = address.strip()
    if ray.is_initialized():
        return _reuse(address)
    if num_cpus is not None and num_cpus < 1:
        raise ClusterError(f"a local Ray needs at least 1 CPU, got num_cpus={num_cpus}")
    _sync_auth_with_environment()
    quiet = {"log_to_driver": False, "logging_level": logging.ERROR}
    if address is None:
        try:
            # "local" rather than None: ray.init would otherwise join whatever RAY_ADDRESS
            # names. Ray turns the loopback node address into the machine's (see above).
            ray.init(
                address="local",
                num_cpus=num_cpus,
                include_dashboard=False,
                _node_ip_address="127.0.0.1",
                **quiet,
            )
        except (RuntimeError, ConnectionError, ValueError, OSError) as err:
            raise ClusterError(
                f"could not start a local Ray: {_first_line(err)}; check /tmp/ray/session_latest/"
                "logs, or start one with `ray start --head` and pass --address auto"
            ) from err
        return _context(started=True)

    _require_answer(address, wait_s)
    try:
        ray.init(address=address, **quiet)
    except Exception as err:  # noqa: BLE001 - any refusal (auth, version, timeout) is one line
        raise ClusterError(
            f"could not join the Ray cluster at {address}: {_first_line(err)}; check that it "
            "runs the same Ray version and auth mode (RAY_AUTH_MODE, RAY_AUTH_TOKEN)"
        ) from err
    return _context(started=False)


def check_address(address: str, wait_s: float | None = None) -> None:
    """`ClusterError` unless a Ray cluster answers at `address` ("auto" or HOST:PORT)
    within `wait_s` seconds: a cheap check before a search spends minutes elsewhere."""
    _require_answer(address.strip(), wait_s)


def default_wait_s() -> float:
    """`$NAS_RAY_WAIT_S`, else 20 s: long enough for a head that is still starting."""
    value = os.environ.get("NAS_RAY_WAIT_S", "").strip()
    if not value:
        return DEFAULT_WAIT_S
    try:
        wait_s = float(value)
    except ValueError:
        wait_s = -1.0
    if not 0 <= wait_s < float("inf"):
        raise ClusterError(f"NAS_RAY_WAIT_S={value!r} is not a number of seconds >= 0")
    return wait_s


def _require_answer(address: str, wait_s: float | None) -> None:
    """`ClusterError` unless something listens at the address's GCS port within wait_s."""
    wait_s = default_wait_s() if wait_s is None else wait_s
    target = _resolve(address)
    if not _answers(target, wait_s):
        raise ClusterError(
            f"no Ray cluster answers at {address}"
            + (f" ({target})" if target != address else "")
            + f" within {wait_s:g} s; start one with `ray start --head` or drop --address"
            + " (NAS_RAY_WAIT_S sets the wait)"
        )


def _reuse(address: str | None) -> RayContext:
    """The connection this process already has, if it is the one asked for."""
    import ray

    current = str(ray.get_runtime_context().gcs_address)
    if address not in (None, "auto") and address != current and _resolve(address) != current:
        raise ClusterError(
            f"this process is already connected to Ray at {current}, not {address}; "
            "drop --address or run in a fresh process"
        )
    return _context(started=False)


def _resolve(address: str) -> str:
    """The HOST:PORT that `ray.init(address)` will dial: "auto" read from RAY_ADDRESS or the
    last `ray start`, and a loopback host replaced by the node's address as Ray does."""
    if address != "auto" and not _HOST_PORT.match(address):
        raise ClusterError(
            f"Ray address {address!r} is not 'auto' or HOST:PORT (e.g. 10.0.0.5:6379, the GCS "
            "port that `ray start --head` prints); fix --address"
        )
    if address != "auto" and not 0 < int(address.rsplit(":", 1)[1]) < 65536:
        raise ClusterError(f"Ray address {address!r} has no valid port (1-65535); fix --address")
    try:
        # Private, but it is exactly what ray.init does with the address.
        from ray._private.services import canonicalize_bootstrap_address
    except ImportError:  # another Ray layout: dial what we were given
        return address
    try:
        resolved = canonicalize_bootstrap_address(address)
    except ConnectionError as err:  # "auto" with nothing started here
        raise ClusterError(
            f"no running Ray cluster found for --address {address}; start one with "
            "`ray start --head`, set RAY_ADDRESS, or drop --address"
        ) from err
    except ValueError as err:
        raise ClusterError(f"Ray address {address!r}: {_first_line(err)}; fix --address") from err
    return resolved or address


def _answers(host_port: str, wait_s: float) -> bool:
    """Whether a TCP connection to HOST:PORT succeeds within `wait_s` seconds (retried
    every half second, for a head that is still starting)."""
    host, port = host_port.rsplit(":", 1)
    host = host.strip("[]")
    deadline = time.monotonic() + max(0.0, wait_s)
    attempts = max(1, int(wait_s / _PROBE_INTERVAL_S) + 1)  # bounded even if the clock stalls
    for _ in range(attempts):
        left = deadline - time.monotonic()
        try:
            with socket.create_connection((host, int(port)), timeout=max(0.2, min(2.0, left))):
                return True
        except OSError:
            pass
        if time.monotonic() + _PROBE_INTERVAL_S > deadline:
            return False
        time.sleep(_PROBE_INTERVAL_S)
    return False


def _sync_auth_with_environment() -> None:
    """Make this process's Ray config read RAY_AUTH_MODE / RAY_AUTH_TOKEN* as they are now.

    Ray caches them at import; its spawned servers read the environment. Mismatched, a
    token-mode GCS starts without a token and aborts. Ray's own tests refresh the same way
    (ray._private.authentication_test_utils.reset_auth_token_state).
    """
    try:
        from ray._raylet import AuthenticationTokenLoader, Config
    except ImportError:  # a Ray without token auth: nothing to refresh
        return
    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


def _context(started: bool) -> RayContext:
    import ray

    resources: dict[str, Any] = ray.cluster_resources()
    alive = sum(1 for node in ray.nodes() if node.get("Alive"))
    return RayContext(
        address=str(ray.get_runtime_context().gcs_address),
        started=started,
        nodes=alive,
        cpus=float(resources.get("CPU", 0.0)),
    )


def _first_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0]
