"""`nas latency --measure`: the host's drift since the profile, beside the measurement."""

from __future__ import annotations

import json

import pytest

from conftest import make_tiny_space
from nas.cli import main
from nas.search.fingerprint import Workload
from nas.search.measure import MeasureConfig
from nas.search.profile import ProfileConfig, build_profile, save_profile

QUICK = MeasureConfig(runs=3, warmup_iters=1, warmup_s=0.0, max_attempts=1, max_waits=0)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny space file, an arch file and a quick profile of that space built here."""
    root = tmp_path_factory.mktemp("latency")
    space = make_tiny_space(d_model=(16,), exits=(1, 2))
    (root / "tiny.json").write_text(json.dumps(space.to_dict()))
    (root / "arch.json").write_text(space.sample(seed=4).to_json())
    config = ProfileConfig(n_train=4, n_holdout=3, measure=QUICK, kernel_measure=QUICK)
    profile = build_profile(space, Workload(seq_len=8, threads=1), config)
    save_profile(profile, root / "profile.json")
    return root


def _latency(files, *extra: str) -> list[str]:
    return [
        "latency",
        str(files / "arch.json"),
        "--space",
        str(files / "tiny.json"),
        "--profile",
        str(files / "profile.json"),
        "--measure",
        *extra,
    ]


def test_measure_json_reports_drift_and_the_scaled_prediction(files, capsys):
    assert main(_latency(files, "--json")) == 0
    out = json.loads(capsys.readouterr().out)
    # Every field `nas latency --measure --json` had before drift is still there.
    for key in ("arch_id", "predicted_ms", "measured_ms", "error_pct", "measurement", "profile"):
        assert key in out
    drift = out["drift"]
    assert drift["n"] == 3 and len(drift["now_ms"]) == 3 and len(drift["then_ms"]) == 3
    assert drift["scale"] == (drift["ratio"] if drift["applied"] else 1.0)
    assert out["predicted_scaled_ms"] == pytest.approx(out["predicted_ms"] * drift["scale"])
    # The error of each prediction, recomputed from the reported numbers.
    measured = out["measured_ms"]
    assert out["error_refers_to"] == "predicted_ms"
    assert out["error_pct"] == pytest.approx((out["predicted_ms"] - measured) / measured * 100)
    assert out["error_scaled_pct"] == pytest.approx(
        (out["predicted_scaled_ms"] - measured) / measured * 100
    )


def test_measure_text_prints_the_drift_line(files, capsys):
    assert main(_latency(files)) == 0
    text = capsys.readouterr().out
    assert "host drift: measured" in text and "of its archs" in text
    assert "(raw prediction)" in text and "drift-scaled prediction" in text


def test_without_measure_nothing_is_re_timed(files, capsys):
    argv = [a for a in _latency(files, "--json") if a != "--measure"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert "drift" not in out and "measured_ms" not in out


def test_without_a_full_profile_the_quick_one_a_search_built_is_used(
    files, tmp_path, monkeypatch, capsys
):
    """`nas latency` reads the quick profile `nas search` left in the cache rather than
    spend minutes building the full one; a full profile, once there, takes precedence."""
    from dataclasses import replace

    from nas.search import measured_code
    from nas.search.fingerprint import environment
    from nas.search.profile import load_profile, profile_key, profile_path
    from nas.search.quick_profile import quick_profile_config
    from nas.search_space import SearchSpace

    monkeypatch.setenv("NAS_CACHE_DIR", str(tmp_path))
    space = SearchSpace.from_file(files / "tiny.json")
    env = environment(Workload(seq_len=8, threads=1))
    measured = load_profile(files / "profile.json")

    def cache_as(config: ProfileConfig):
        """The fixture's profile filed as if built with `config` (its key and path)."""
        path = profile_path(space, env, config)
        key = profile_key(space, env, config)
        digest = measured_code.code_digest()
        save_profile(replace(measured, key=key, config=config, code_digest=digest), path)
        return path

    quick = cache_as(quick_profile_config())
    argv = ["latency", str(files / "arch.json"), "--space", str(files / "tiny.json")]
    argv += ["--seq-len", "8", "--threads", "1", "--json"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["profile"] == str(quick)
    assert "using the quick profile `nas search` built" in captured.err
    full = cache_as(ProfileConfig())
    assert full != quick
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["profile"] == str(full) and not captured.err
