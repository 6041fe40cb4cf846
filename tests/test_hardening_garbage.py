"""Hardening round two: tensors no MobileNet V1 has, weights or configs that would load
silently into garbage, and inputs that ``model.predict`` would turn into confident nonsense."""

from __future__ import annotations

import json
import os
import struct
import warnings

import numpy as np
import pytest
from conftest import cli, fixture_path, tiny_model

from converters.hf import save_hf
from tf_mobilenet_v1 import MobileNetV1ImageProcessor
from tf_mobilenet_v1.errors import InputRangeWarning
from tf_mobilenet_v1.loaders.dispatch import load_any


def _safetensors(path, dtype: str, nbytes: int = 4):
    header = json.dumps({"w": {"dtype": dtype, "shape": [nbytes], "data_offsets": [0, nbytes]}})
    header = header.encode() + b" " * (-len(header) % 8)
    path.write_bytes(struct.pack("<Q", len(header)) + header + bytes(nbytes))


@pytest.mark.parametrize("dtype", ["F8_E4M3", "F8_E5M2", "U8", "I8", "BOOL"])
def test_safetensors_of_an_unusual_dtype(tmp_path, dtype):
    path = tmp_path / "odd.safetensors"
    _safetensors(path, dtype)
    line = cli("info", path).one_line_error()
    assert f"entry 'w' is dtype {dtype}, which MobileNet V1 weights never are" in line


def _odd_torch_tensors():
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch deprecates its quantized tensors
        return {
            "float8_e4m3fn": torch.zeros(4, dtype=torch.float8_e4m3fn),
            "qint8": torch.quantize_per_tensor(torch.zeros(4), 0.1, 0, torch.qint8),
            "sparse_coo": torch.zeros(4, 4).to_sparse(),
            "sparse_csr": torch.zeros(4, 4).to_sparse_csr(),
        }


@pytest.mark.interop
@pytest.mark.parametrize("kind", ["float8_e4m3fn", "qint8", "sparse_coo", "sparse_csr"])
def test_bin_with_float8_quantized_or_sparse_tensors(tmp_path, kind):
    from conftest import require_module

    torch = require_module("torch")
    path = tmp_path / "odd.bin"
    torch.save({"w": _odd_torch_tensors()[kind]}, path)
    line = cli("info", path).one_line_error()
    what = f"a {kind} tensor" if kind.startswith("sparse") else f"dtype {kind}"
    assert f"entry 'w' is {what}, which MobileNet V1 weights never are" in line


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("form", [".keras", ".weights.h5"])
def test_keras_files_with_non_finite_weights_are_refused(tmp_path, bad, form):
    model = tiny_model()
    w = model.get_layer("Conv2d_3_pointwise").conv.kernel
    value = np.asarray(w.numpy())
    value.flat[7] = bad
    w.assign(value)
    path = tmp_path / f"diverged_0.25_32{form}"
    model.save(path) if form == ".keras" else model.save_weights(path)
    line = cli("predict", "--weights", path, fixture_path("images", "burger.jpg")).one_line_error()
    assert "holds NaN or infinite values in Conv2d_3_pointwise/conv/kernel" in line
    with pytest.raises(ValueError, match="NaN or infinite"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a bare .weights.h5 does not know its image size
        load_any(str(path))


@pytest.fixture
def hf_dir(tmp_path):
    return save_hf(tiny_model(), tmp_path / "hf")


def test_dangling_config_json_is_an_error(hf_dir, tmp_path):
    config = os.path.join(hf_dir, "config.json")
    os.remove(config)
    os.symlink(tmp_path / "moved_away.json", config)
    with pytest.raises(ValueError, match="symbolic link to .*moved_away.json, which does not"):
        load_any(hf_dir)


def test_fifo_config_json_is_an_error(hf_dir):
    config = os.path.join(hf_dir, "config.json")
    os.remove(config)
    os.mkfifo(config)
    line = cli("info", hf_dir).one_line_error()
    assert "config.json is a named pipe (FIFO), not a regular file" in line


@pytest.mark.parametrize("text, reason", [
    ("[" * 100_000 + "]" * 100_000, "nests too deeply"),
    ('{"image_size": ' + "9" * 5000 + "}", "number too large"),
])
def test_hostile_json_errors_name_the_file(hf_dir, text, reason):
    config = os.path.join(hf_dir, "config.json")
    with open(config, "w") as f:
        f.write(text)
    line = cli("info", hf_dir).one_line_error()
    assert f"cannot read config {config}: " in line and reason in line


@pytest.fixture(scope="module")
def burger():
    """Official 1.0_224 (bundled) and the burger photo, preprocessed the model's way."""
    from tf_mobilenet_v1 import MobileNetV1ForImageClassification

    model = MobileNetV1ForImageClassification.from_pretrained("mobilenet_v1_1.0_224")
    pixels = MobileNetV1ImageProcessor()(str(fixture_path("images", "burger.jpg")))
    return model, pixels["pixel_values"]


@pytest.mark.slow
def test_raw_pixels_warn_once_and_normalized_ones_not(burger):
    model, x = burger
    raw = np.round((x + 1) * 127.5).astype(np.uint8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        good = model.decode(model.predict(x), 1)[0][0][1]
        assert not caught
        for batch in (raw, raw, raw.astype(np.float32)):
            bad = model.decode(model.predict(batch), 1)[0][0][1]
    assert good == "cheeseburger" and bad != "cheeseburger"  # why the warning matters
    ranged = [w for w in caught if issubclass(w.category, InputRangeWarning)]
    assert len(ranged) == 1, [str(w.message) for w in caught]
    assert "got uint8 pixels" in str(ranged[0].message)
    assert "[-1, 1]" in str(ranged[0].message)
    assert ranged[0].filename == __file__  # points at the caller's line


@pytest.mark.parametrize("spatial_squeeze", [True, False])
def test_empty_batch(spatial_squeeze):
    model = tiny_model(spatial_squeeze=spatial_squeeze)
    out = model.predict(np.zeros((0, 32, 32, 3), np.float32))
    assert out.shape == ((0, 1001) if spatial_squeeze else (0, 1, 1, 1001))
    assert out.dtype == np.float32
    assert model.predict_proba(np.zeros((0, 32, 32, 3), np.float32)).shape[0] == 0


def test_empty_batch_with_hidden_states():
    model = tiny_model(output_hidden_states=True)
    out = model.predict(np.zeros((0, 32, 32, 3), np.float32))
    assert out["logits"].shape == (0, 1001)
    assert all(h.shape[0] == 0 for h in out["hidden_states"])
