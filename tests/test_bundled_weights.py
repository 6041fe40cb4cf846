"""The official 1.0_224 weights shipped in the package: offline, and exactly our conversion."""

from __future__ import annotations

import json
import os
import stat

import keras
import numpy as np
import pytest
from conftest import fixture_path
from safetensors.numpy import load_file

from tf_mobilenet_v1 import MobileNetV1ForImageClassification, registry

NAME = "mobilenet_v1_1.0_224"


def _offline(monkeypatch):
    def no_network(**kwargs):
        raise AssertionError("the bundled weights must not be downloaded")
    monkeypatch.setattr(keras.utils, "get_file", no_network)


def test_bundled_directory_is_an_hf_model_with_readable_files():
    path = registry.bundled_path(NAME)
    assert path is not None and registry.download(NAME) == path
    assert sorted(os.listdir(path)) == ["config.json", "fast.json", "fast.tflite",
                                        "model.safetensors", "preprocessor_config.json"]
    for name in os.listdir(path):  # a shared install must be readable by every user
        assert os.stat(os.path.join(path, name)).st_mode & stat.S_IROTH
    assert registry.bundled_path("mobilenet_v1_0.5_160") is None
    assert registry.cached_path(NAME) == path


@pytest.mark.slow
def test_bundle_is_bit_exact_with_a_fresh_conversion(tmp_path, monkeypatch):
    from tf_mobilenet_v1.converters.bundle import build_bundle

    src = fixture_path("official", NAME)
    fresh = build_bundle(str(src), str(tmp_path / "fresh"))
    ours = load_file(os.path.join(registry.bundled_path(NAME), "model.safetensors"))
    theirs = load_file(os.path.join(fresh, "model.safetensors"))
    assert sorted(ours) == sorted(theirs) and len(ours) > 100
    for k in ours:
        np.testing.assert_array_equal(ours[k], theirs[k], err_msg=k)
    for name in ("config.json", "preprocessor_config.json"):
        with open(os.path.join(registry.bundled_path(NAME), name), encoding="utf-8") as a, \
                open(os.path.join(fresh, name), encoding="utf-8") as b:
            assert a.read() == b.read(), name
    # The fast model: the same entry and the same arithmetic (its tensor names carry Keras's
    # per-process model counter, so the bytes may differ).
    from tf_mobilenet_v1 import fast_predict
    from tf_mobilenet_v1.litert import make_interpreter

    metas, outputs = [], []
    x = np.random.default_rng(1).uniform(-1, 1, (1, 224, 224, 3)).astype(np.float32)
    for folder in (registry.bundled_path(NAME), fresh):
        with open(os.path.join(folder, "fast.json"), encoding="utf-8") as f:
            metas.append({k: v for k, v in json.load(f).items() if k != "tflite_sha256"})
        with open(os.path.join(folder, "fast.tflite"), "rb") as f:
            interpreter = make_interpreter(f.read())
        interpreter.allocate_tensors()
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(interpreter.get_output_details()[0]["index"]))
    assert metas[0] == metas[1] and metas[0]["format"] == fast_predict.FORMAT
    np.testing.assert_array_equal(outputs[0], outputs[1])


def test_the_shipped_fast_model_is_these_weights_for_this_version(tmp_path, monkeypatch):
    """predict's first run on the bundled weights converts nothing: their fast model ships
    beside them, keyed by exactly these files and this package version (a version bump or
    new weights without `python -m tf_mobilenet_v1.converters.bundle --fast-model-only`
    fails here), and it is read from the package's own folder only."""
    import shutil

    from tf_mobilenet_v1 import fast_predict

    monkeypatch.setenv(fast_predict.ENV_CACHE, str(tmp_path / "cache"))
    monkeypatch.delenv(fast_predict.ENV_SWITCH, raising=False)
    path = registry.bundled_path(NAME)
    key = fast_predict.cache_key(fast_predict.weight_files(path))
    content, meta = fast_predict._read_shipped(fast_predict.weight_files(path), key)
    assert meta["key"] == key and meta["num_labels"] == 1001 and len(content) > 16_000_000
    engine = fast_predict.open_cached(NAME, "model")
    assert engine is not None and not (tmp_path / "cache").exists()  # nothing built
    # The same files elsewhere (a copy, or a download someone planted fast.* in) are built
    # and cached as any user folder is, never trusted for their fast.json.
    copy = tmp_path / "copy"
    shutil.copytree(path, copy)
    assert fast_predict.open_cached(str(copy), "model") is None
    copy.joinpath("fast.json").write_text("{}")  # the shipped one is ignored here, not read
    assert fast_predict.open_cached(str(copy), "model") is None


@pytest.mark.slow
def test_the_shipped_fast_model_gives_the_keras_logits():
    from tf_mobilenet_v1 import fast_predict
    from tf_mobilenet_v1.engines import KerasEngine

    engine = fast_predict.open_cached(NAME, "model")
    model = MobileNetV1ForImageClassification.from_pretrained(NAME)
    x = np.random.default_rng(0).uniform(-1, 1, (2, 224, 224, 3)).astype(np.float32)
    got = np.concatenate([engine.logits(x[i:i + 1]) for i in range(2)])
    np.testing.assert_allclose(got, KerasEngine(model).logits(x), atol=1e-4, rtol=0)


@pytest.mark.slow
def test_from_pretrained_needs_no_network(monkeypatch):
    _offline(monkeypatch)
    model = MobileNetV1ForImageClassification.from_pretrained(NAME)
    assert model.config.variant == NAME and model.config.num_labels == 1001
    assert model.config.id2label[653] == "military uniform"
