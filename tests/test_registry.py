"""The registry of 32 official checkpoints and its download path (no real network access)."""

from __future__ import annotations

import os
import shutil
import tarfile

import keras
import numpy as np
import pytest
from conftest import fixture_path

from tf_mobilenet_v1 import (
    MobileNetV1ForImageClassification,
    MobileNetV1ImageProcessor,
    count_macs,
    count_params,
    registry,
)
from tf_mobilenet_v1.architecture import layer_specs
from tf_mobilenet_v1.loaders.tf_checkpoint import DATA_SUFFIX

# slim's table says 34 million MACs for 0.25_192, but the architecture gives 30.2 million (all
# other rows agree within 3% or rounding); the published figure is kept as published.
_MACS_TYPO = {"mobilenet_v1_0.25_192", "mobilenet_v1_0.25_192_quant"}


def test_32_entries_with_urls_and_figures():
    assert len(registry.CHECKPOINTS) == 32
    assert len(registry.names(quantized=False)) == len(registry.names(quantized=True)) == 16
    for name, c in registry.CHECKPOINTS.items():
        assert c.name == name
        assert c.url == f"http://download.tensorflow.org/models/mobilenet_v1_2018_08_02/{name}.tgz"
        assert c.depth_multiplier in (0.25, 0.5, 0.75, 1.0)
        assert c.resolution in (128, 160, 192, 224)
        assert name.endswith("_quant") == c.quantized
        assert 0 < c.top1 < c.top5 < 100
    top = registry.get("mobilenet_v1_1.0_224")
    assert (top.million_macs, top.million_params, top.top1, top.top5) == (569, 4.24, 70.9, 89.9)
    q = registry.get("mobilenet_v1_0.25_128_quant")
    assert (q.million_macs, q.million_params, q.top1, q.top5) == (14, 0.47, 39.5, 64.4)


def test_figures_agree_with_the_architecture():
    for name, c in registry.CHECKPOINTS.items():
        specs = layer_specs(depth_multiplier=c.depth_multiplier)
        params = count_params(specs, 1001)
        assert abs(params - c.params) / params < 0.01, name
        macs = count_macs(specs, c.resolution, 1001) / 1e6
        if name not in _MACS_TYPO:  # published figures are rounded to whole millions
            assert abs(macs - c.million_macs) <= max(0.5, 0.03 * macs), (name, macs)


def test_names_are_canonicalized_and_unknown_names_get_suggestions():
    assert registry.canonical_name("MobileNet_v1_0.50_160") == "mobilenet_v1_0.5_160"
    assert registry.canonical_name("mobilenet_v1_1_224_quant") == "mobilenet_v1_1.0_224_quant"
    assert registry.canonical_name("mobilenet_v1_0.3_224") is None
    with pytest.raises(ValueError, match="did you mean mobilenet_v1_0.25_224"):
        registry.get("mobilenet_v1_0.25_225")


def test_offline_download_fails_with_one_clear_sentence(monkeypatch, tmp_path):
    def offline(**kwargs):
        raise Exception("URL fetch failure on http://x: None -- [Errno -3] name resolution")

    monkeypatch.setattr(keras.utils, "get_file", offline)
    with pytest.raises(OSError) as e:
        registry.download("mobilenet_v1_0.5_160", cache_dir=str(tmp_path))
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith("could not download mobilenet_v1_0.5_160")
    assert "no network?" in msg and "pass a local checkpoint, .tgz or Hugging Face" in msg
    with pytest.raises(OSError, match="could not download"):
        MobileNetV1ForImageClassification.from_pretrained("mobilenet_v1_0.5_160")


def test_download_arguments(monkeypatch, tmp_path):
    calls = []
    fake = tmp_path / "mobilenet_v1_0.25_224.tgz"
    _release_tarball(fake)

    def get_file(**kwargs):
        calls.append(kwargs)
        return str(fake)

    monkeypatch.setattr(keras.utils, "get_file", get_file)
    assert registry.download("mobilenet_v1_0.25_224") == str(fake)
    assert calls == [{"fname": "mobilenet_v1_0.25_224.tgz",
                      "origin": registry.get("mobilenet_v1_0.25_224").url,
                      "cache_subdir": "tf_mobilenet_v1", "cache_dir": None}]


def _release_tarball(dst):
    """A 2018-layout release tarball made from the 0.25_224 fixture checkpoint."""
    src = fixture_path("official", "mobilenet_v1_0.25_224")
    with tarfile.open(dst, "w:gz") as tar:
        for suffix in (".index", DATA_SUFFIX):
            tar.add(src / f"mobilenet_v1_0.25_224.ckpt{suffix}",
                    arcname=f"./mobilenet_v1_0.25_224.ckpt{suffix}")
        tar.add(src / "labels.txt", arcname="./mobilenet_v1_0.25_224_info.txt")
    return dst


def test_from_pretrained_by_name_loads_the_cached_tarball(monkeypatch, tmp_path):
    cached = _release_tarball(tmp_path / "mobilenet_v1_0.25_224.tgz")
    monkeypatch.setattr(keras.utils, "get_file", lambda **kw: str(cached))
    model = MobileNetV1ForImageClassification.from_pretrained("mobilenet_v1_0.25_224")
    ref = np.load(fixture_path("official", "mobilenet_v1_0.25_224", "reference_logits.npz"))
    diff = float(np.abs(np.asarray(model(ref["inputs"])) - ref["logits"]).max())
    print(f"registry name -> cached tgz: max |logit diff| = {diff:.2e}")
    assert diff < 1e-4
    assert model.config.variant == "mobilenet_v1_0.25_224"
    # the record carries the weights' preprocessing, and every path reads it from there
    entry = registry.get("mobilenet_v1_0.25_224")
    assert model.image_processor.to_dict() == entry.processor
    assert MobileNetV1ImageProcessor.for_model(model).to_dict() == entry.processor


def test_each_record_carries_its_processor_and_labels():
    for entry in registry.CHECKPOINTS.values():
        assert entry.num_labels == 1001
        assert entry.processor == MobileNetV1ImageProcessor.for_variant(entry.resolution).to_dict()
        assert MobileNetV1ImageProcessor.from_pretrained(entry.name).to_dict() == entry.processor


def test_corrupt_cached_download_names_the_file(monkeypatch, tmp_path):
    cached = _release_tarball(tmp_path / "mobilenet_v1_0.25_224.tgz")
    with open(cached, "r+b") as f:
        f.truncate(os.path.getsize(cached) // 2)
    monkeypatch.setattr(keras.utils, "get_file", lambda **kw: str(cached))
    with pytest.raises(ValueError) as e:
        MobileNetV1ForImageClassification.from_pretrained("mobilenet_v1_0.25_224")
    assert f"the cached download {cached}" in str(e.value)
    assert "delete" in str(e.value)


def test_cached_tarball_holding_no_model_is_rejected(monkeypatch, tmp_path):
    cached = tmp_path / "mobilenet_v1_0.5_128.tgz"
    with tarfile.open(cached, "w:gz") as tar:
        tar.add(fixture_path("official", "mobilenet_v1_0.25_224", "labels.txt"),
                arcname="labels.txt")
    monkeypatch.setattr(keras.utils, "get_file", lambda **kw: str(cached))
    with pytest.raises(ValueError, match=f"cached download {cached} is not a usable.*delete"):
        registry.download("mobilenet_v1_0.5_128")


def test_checksum_mismatch_is_detected(monkeypatch, tmp_path):
    # The fixture is the 2017 tarball, so it cannot match the 2018 release's published checksum.
    cached = tmp_path / "mobilenet_v1_0.25_128.tgz"
    shutil.copy(fixture_path("official", "mobilenet_v1_0.25_128_frozen.tgz"), cached)
    monkeypatch.setattr(keras.utils, "get_file", lambda **kw: str(cached))
    with pytest.raises(ValueError, match=f"cached download {cached} has .* bytes.*delete"):
        registry.download("mobilenet_v1_0.25_128")
    entry = registry.get("mobilenet_v1_0.25_128")
    size = os.path.getsize(cached)
    # Same size, wrong bytes: the digest must catch it.
    monkeypatch.setattr(registry, "_CHECKSUMS", {})
    fake = registry.OfficialCheckpoint(**{**entry.__dict__,
                                          "checksum": ("sha256", "0" * 64, size)})
    with pytest.raises(ValueError, match="fails its sha256 check"):
        registry.verify_download(fake, str(cached))
    good = registry.OfficialCheckpoint(**{**entry.__dict__, "checksum": (
        "sha256", registry.file_digest(str(cached), "sha256"), size)})
    registry.verify_download(good, str(cached))


def test_published_checksums_are_well_formed():
    with_sums = {n: c.checksum for n, c in registry.CHECKPOINTS.items() if c.checksum}
    assert set(with_sums) == {"mobilenet_v1_0.25_128", "mobilenet_v1_0.5_160",
                              "mobilenet_v1_0.5_224", "mobilenet_v1_1.0_224"}
    for algorithm, digest, size in with_sums.values():
        assert len(digest) == {"sha256": 64, "sha384": 96}[algorithm]
        int(digest, 16)
        assert size > 1_000_000
