"""nas.save / nas.load: safetensors + JSON, no pickle, clear errors on bad folders."""

from __future__ import annotations

import json

import pytest
import torch

import nas
from nas import CheckpointError, Supernet


def _model(space):
    return Supernet(space, seed=0).extract(space.sample_many(5, seed=1)[-1]).eval()


def test_round_trip_without_supernet_or_pickle(tiny_space, tmp_path, request):
    model = _model(tiny_space)
    nas.save(model, tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        "config.json",
        "model.safetensors",
    ]
    request.getfixturevalue("no_unpickling")  # from here on, any unpickling raises
    again = nas.load(tmp_path / "m")
    tokens = torch.randint(0, 256, (2, 20))
    torch.testing.assert_close(again(tokens), model(tokens))
    assert again.arch == model.arch
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["arch"] == model.arch.to_dict()


@pytest.mark.parametrize("weights_only", [True, False])
def test_the_no_pickle_guard_trips_on_torch_load(tmp_path, no_unpickling, weights_only):
    """The guard the round trips rely on must catch torch.load, which unpickles through
    an Unpickler rather than pickle.load(s): were it to miss it, those tests would pass
    even if loading went through a pickle."""
    import io
    import pickle

    torch.save({"w": torch.ones(3)}, tmp_path / "w.pt")
    with pytest.raises(no_unpickling):
        torch.load(tmp_path / "w.pt", weights_only=weights_only)
    data = pickle.dumps([1, 2])
    with pytest.raises(no_unpickling):
        pickle.Unpickler(io.BytesIO(data)).load()
    with pytest.raises(no_unpickling):
        pickle.loads(data)


def test_bad_folders_raise_checkpoint_error(tiny_space, tmp_path):
    nas.save(_model(tiny_space), tmp_path / "m")
    weights, config = tmp_path / "m" / "model.safetensors", tmp_path / "m" / "config.json"
    with pytest.raises(CheckpointError, match="not found"):
        nas.load(tmp_path / "nothing")
    good = weights.read_bytes()
    weights.write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="unreadable safetensors"):
        nas.load(tmp_path / "m")
    weights.write_bytes(good)
    text = config.read_text()
    config.write_text(text[:-20])
    with pytest.raises(CheckpointError, match="not valid JSON"):
        nas.load(tmp_path / "m")
    other = json.loads(text)
    other["arch"]["d_model"] = 16 if other["arch"]["d_model"] == 32 else 32
    config.write_text(json.dumps(other))
    with pytest.raises(CheckpointError, match="has shape"):
        nas.load(tmp_path / "m")
    config.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(CheckpointError, match="not a nas model config"):
        nas.load(tmp_path / "m")


def test_save_rejects_a_supernet(tiny_space, tmp_path):
    with pytest.raises(TypeError, match="extracted model"):
        nas.save(Supernet(tiny_space), tmp_path / "x")
