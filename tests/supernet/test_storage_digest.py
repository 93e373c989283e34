"""A saved model's config records its weights' SHA-256; a changed weights file is refused."""

from __future__ import annotations

import hashlib
import json
import struct

import pytest
import torch

import nas
from nas import CheckpointError, Supernet
from nas.supernet.storage import CONFIG_FILE, DIGEST_KEY, WEIGHTS_FILE


@pytest.fixture
def saved(tiny_space, tmp_path):
    net = Supernet(tiny_space, seed=0)
    with torch.no_grad():  # no zero biases or unit norms that a wrong byte could hide in
        for p in net.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) * 0.05)
    model = net.extract(tiny_space.sample_many(5, seed=1)[-1]).eval()
    nas.save(model, tmp_path / "m")
    return model, tmp_path / "m"


def _one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


def test_round_trip_is_exact_and_records_the_digest(saved):
    model, folder = saved
    config = json.loads((folder / CONFIG_FILE).read_text())
    assert config[DIGEST_KEY] == hashlib.sha256((folder / WEIGHTS_FILE).read_bytes()).hexdigest()
    again = nas.load(folder)
    assert again.state_dict().keys() == model.state_dict().keys()
    for name, tensor in model.state_dict().items():
        assert torch.equal(again.state_dict()[name], tensor), name
    tokens = torch.randint(0, 256, (2, 12))
    with torch.no_grad():
        assert torch.equal(again(tokens), model(tokens))


def test_one_flipped_byte_in_the_tensor_data_is_refused(saved):
    _, folder = saved
    weights = folder / WEIGHTS_FILE
    data = bytearray(weights.read_bytes())
    header = struct.unpack("<Q", data[:8])[0]
    start = 8 + header  # the tensor data follows the JSON header
    data[start + (len(data) - start) // 2] ^= 0x01  # a low mantissa bit: still a valid float
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError) as exc:
        nas.load(folder)
    message = _one_line(exc)
    assert "weights do not match the digest" in message and "re-extract" in message
    assert str(weights) in message


@pytest.mark.parametrize("cut", [1, 1000])
def test_truncated_weights_are_refused(saved, cut):
    _, folder = saved
    weights = folder / WEIGHTS_FILE
    weights.write_bytes(weights.read_bytes()[:-cut])
    with pytest.raises(CheckpointError) as exc:
        nas.load(folder)
    assert str(weights) in _one_line(exc)


def test_a_config_without_a_digest_is_refused(saved):
    _, folder = saved
    config = json.loads((folder / CONFIG_FILE).read_text())
    del config[DIGEST_KEY]
    (folder / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="digest") as exc:
        nas.load(folder)
    _one_line(exc)


def test_unknown_mixer_names_it_and_the_valid_ones(saved):
    _, folder = saved
    config = json.loads((folder / CONFIG_FILE).read_text())
    config["arch"]["layers"][0]["mixer"] = "mamba9"
    (folder / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(CheckpointError) as exc:
        nas.load(folder)
    message = _one_line(exc)
    assert "'mamba9'" in message and "attention" in message and "ssm" in message
