"""Supernet checkpoints: exact round trip without pickle, atomic writes, clear errors."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from conftest import make_tiny_space
from nas import CheckpointError, Supernet
from nas.supernet import checkpoint as ckpt_mod
from nas.supernet.checkpoint import load_supernet, read_checkpoint, restore, save_checkpoint
from nas.supernet.training import TrainConfig, make_optimizer

pytestmark = pytest.mark.usefixtures("one_thread")


def _trained(space, steps=2):
    net = Supernet(space, seed=0)
    opt = make_optimizer(net, TrainConfig())
    x = torch.randint(0, 256, (2, 8))
    for _ in range(steps):
        opt.zero_grad()
        for arch in (space.largest(), space.smallest()):
            net(x, arch).square().mean().backward()
        opt.step()
    return net, opt


def _state(rng_seed=0):
    import numpy as np

    return {"step": 2, "arch_rng": np.random.default_rng(rng_seed).bit_generator.state}


def test_round_trip_is_exact_and_needs_no_pickle(tiny_space, tmp_path, request):
    net, opt = _trained(tiny_space)
    path = save_checkpoint(tmp_path / "checkpoint.safetensors", net, opt, _state())
    request.getfixturevalue("no_unpickling")  # from here on, any unpickling raises
    ckpt = read_checkpoint(path, tiny_space)
    assert ckpt.step == 2 and ckpt.state == _state()
    fresh = Supernet(tiny_space, seed=1)
    fresh_opt = make_optimizer(fresh, TrainConfig())
    restore(ckpt, fresh, fresh_opt)
    for (name, a), b in zip(net.state_dict().items(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    saved, loaded = opt.state_dict(), fresh_opt.state_dict()
    assert saved["param_groups"] == loaded["param_groups"]
    assert saved["state"].keys() == loaded["state"].keys()
    for index, entry in saved["state"].items():
        for key, value in entry.items():
            assert torch.equal(value, loaded["state"][index][key])


def test_load_supernet_for_search(tiny_space, tmp_path):
    net, opt = _trained(tiny_space)
    save_checkpoint(tmp_path / "checkpoint.safetensors", net, opt, _state())
    loaded = load_supernet(tmp_path)  # a run folder works as well as the file
    assert not loaded.training and loaded.space == tiny_space
    x = torch.randint(0, 256, (2, 8))
    arch = tiny_space.sample(seed=4)
    torch.testing.assert_close(loaded(x, arch), net.eval()(x, arch))


def test_load_supernet_rebuilds_a_ffn_per_mixer_layout(tiny_space, tmp_path):
    net = Supernet(tiny_space, seed=2, ffn_per_mixer=True)
    state = {**_state(), "config": {"ffn_per_mixer": True}}
    save_checkpoint(tmp_path / "checkpoint.safetensors", net, None, state)
    loaded = load_supernet(tmp_path)
    assert loaded.ffn_per_mixer
    x = torch.randint(0, 256, (2, 8))
    arch = tiny_space.sample(seed=5)
    torch.testing.assert_close(loaded(x, arch), net.eval()(x, arch))
    # The layout must match the weights: a shared-FFN supernet cannot take them.
    with pytest.raises(CheckpointError, match="do not fit"):
        restore(read_checkpoint(tmp_path), Supernet(tiny_space))


def test_bad_checkpoints_raise_one_line(tiny_space, tmp_path):
    net, opt = _trained(tiny_space)
    path = save_checkpoint(tmp_path / "checkpoint.safetensors", net, opt, _state())
    good = path.read_bytes()
    cases = {
        "not found": lambda: path.unlink(),
        "truncated or corrupted": lambda: path.write_bytes(good[: len(good) // 2]),
        "header": lambda: path.write_bytes(good[:5]),
        "digest": lambda: path.write_bytes(good[:-10] + bytes(b ^ 0xFF for b in good[-10:])),
        "another search space": lambda: None,
    }
    for match, damage in cases.items():
        path.write_bytes(good)
        damage()
        other = make_tiny_space(d_model=(16, 48)) if match == "another search space" else None
        with pytest.raises(CheckpointError) as info:
            read_checkpoint(path, other or tiny_space)
        message = str(info.value)
        assert "\n" not in message and str(path) in message
        if match != "header":
            assert match in message
    # Metadata edited in place (same length, so the file still parses) is caught too.
    assert b'\\"step\\": 2' in good
    path.write_bytes(good.replace(b'\\"step\\": 2', b'\\"step\\": 7'))
    with pytest.raises(CheckpointError, match="do not match its digest"):
        read_checkpoint(path)
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(CheckpointError, match="not a nas supernet checkpoint"):
        read_checkpoint(path)
    # A checkpoint of an older format (same length, so the file still parses) says so.
    current = ckpt_mod.FORMAT.encode()
    older = current[:-1] + (b"0" if current[-1:] != b"0" else b"9")
    path.write_bytes(good.replace(current, older))
    with pytest.raises(CheckpointError, match="from another version of nas"):
        read_checkpoint(path)


def test_a_failed_write_leaves_the_previous_checkpoint(tiny_space, tmp_path, monkeypatch):
    net, opt = _trained(tiny_space, steps=1)
    path = save_checkpoint(tmp_path / "checkpoint.safetensors", net, opt, _state())
    before = path.read_bytes()

    def crash(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt_mod, "save_file", crash)
    with pytest.raises(OSError):
        save_checkpoint(path, net, opt, {"step": 3})
    assert path.read_bytes() == before and read_checkpoint(path).step == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.safetensors"]
