"""The official 1.0_224 weights shipped in the package: offline, and exactly our conversion."""

from __future__ import annotations

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
    assert sorted(os.listdir(path)) == ["config.json", "model.safetensors",
                                        "preprocessor_config.json"]
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


@pytest.mark.slow
def test_from_pretrained_needs_no_network(monkeypatch):
    _offline(monkeypatch)
    model = MobileNetV1ForImageClassification.from_pretrained(NAME)
    assert model.config.variant == NAME and model.config.num_labels == 1001
    assert model.config.id2label[653] == "military uniform"
