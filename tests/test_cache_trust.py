"""The fast path's cache entries are trusted only when this user's key signed them: a planted
label, processor or model (its SHA-256 fixed up in the JSON) is said once and rebuilt, never
shown; an entry copied from another cache is not trusted either."""

from __future__ import annotations

import hashlib
import json
import os
import shutil

import numpy as np
import pytest
from conftest import cli, require_module, tiny_model
from PIL import Image

from tf_mobilenet_v1 import fast_predict


@pytest.fixture(scope="module")
def signed(tmp_path_factory):
    """A small HF directory, a photo, and ``root/cache`` (with ``root/cache.key``) holding its
    signed entry, built by a first run; with that run's JSON output."""
    require_module("ai_edge_litert")
    from tf_mobilenet_v1.converters.hf import save_hf

    base = tmp_path_factory.mktemp("trust")
    hf = base / "hf"
    save_hf(tiny_model(seed=4, image_size=64), str(hf))
    image = base / "a.png"
    pixels = np.random.default_rng(0).integers(0, 256, (70, 50, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(image)
    root = base / "root"
    run = _predict(root, hf, image)
    assert run.returncode == 0 and run.errors == [], run.stderr
    assert sorted(p.name for p in root.iterdir()) == ["cache", "cache.key"]
    return root, hf, image, json.loads(run.stdout)


def _predict(root, hf, image):
    env = {fast_predict.ENV_CACHE: str(root / "cache"), fast_predict.ENV_SWITCH: None}
    return cli("predict", image, "--weights", hf, "--json", env=env)


def _entry(root):
    (meta,) = (root / "cache").glob("*.json")
    return meta, meta.with_suffix(".tflite")


def _copy(signed, tmp_path, key: bool = True):
    """A copy of the signed cache in ``tmp_path/root`` (with its key, unless not ``key``)."""
    root = tmp_path / "root"
    shutil.copytree(signed[0] / "cache", root / "cache")
    if key:
        shutil.copy2(signed[0] / "cache.key", root / "cache.key")
    return root


def _swap_model(meta: dict, tflite) -> dict:
    """Another model's bytes in the entry, and their SHA-256 in its JSON."""
    from tf_mobilenet_v1.converters.tflite import convert_tflite

    other = convert_tflite(tiny_model(seed=9, image_size=64), quantize="none",
                           outputs="logits", with_metadata=False)
    tflite.write_bytes(other)
    return {**meta, "tflite_sha256": hashlib.sha256(other).hexdigest()}


def _plant_labels(meta: dict, tflite) -> dict:
    return {**meta, "id2label": {k: "PLANTED" for k in meta["id2label"]}}


def _plant_processor(meta: dict, tflite) -> dict:
    return {**meta, "processor": {**meta["processor"], "image_mean": [0.9, 0.1, 0.5]}}


@pytest.mark.parametrize("plant", [_plant_labels, _plant_processor, _swap_model],
                         ids=["labels", "processor", "model"])
def test_a_planted_entry_is_refused(signed, tmp_path, monkeypatch, capsys, plant):
    hf = signed[1]
    root = _copy(signed, tmp_path)
    meta_file, tflite = _entry(root)
    meta = json.loads(meta_file.read_text())
    forged = plant(meta, tflite)
    meta_file.write_text(json.dumps(forged))
    # The forgery is consistent (not mere damage) and would change what predict prints.
    content = tflite.read_bytes()
    assert fast_predict._checked(meta_file.read_bytes(), content, meta["key"]) is not None
    probe = np.random.default_rng(1).uniform(-1, 1, (1, 64, 64, 3)).astype(np.float32)
    engines = [fast_predict._engine(c, m, "model")
               for c, m in ((content, forged), ((signed[0] / "cache" / tflite.name)
                                                .read_bytes(), meta))]
    assert engines[0].id2label != engines[1].id2label or \
        engines[0].processor.to_dict() != engines[1].processor.to_dict() or \
        not np.allclose(engines[0].logits(probe), engines[1].logits(probe))

    monkeypatch.setenv(fast_predict.ENV_CACHE, str(root / "cache"))
    fast_predict._SAID.clear()
    assert fast_predict.open_cached(str(hf), "model") is None
    assert f"not using the cached fast model {meta_file}: it is not signed" in \
        capsys.readouterr().err


def test_predict_says_a_planted_entry_and_prints_the_weights_own_results(signed, tmp_path,
                                                                        monkeypatch):
    """End to end (once: each rebuild is a conversion): one warning line, the original
    output, and a rebuilt entry with the weights' own labels and processor."""
    _, hf, image, want = signed
    root = _copy(signed, tmp_path)
    meta_file, tflite = _entry(root)
    meta = json.loads(meta_file.read_text())
    meta_file.write_text(json.dumps(_plant_labels(meta, tflite)))
    run = _predict(root, hf, image)
    assert run.returncode == 0 and json.loads(run.stdout) == want
    assert len(run.errors) == 1 and run.errors[0].startswith(
        f"mobilenet-v1: warning: not using the cached fast model {meta_file}: it is not signed")
    rebuilt = json.loads(meta_file.read_text())  # a conversion is not byte-reproducible
    assert [rebuilt[k] for k in ("id2label", "processor")] == \
        [meta[k] for k in ("id2label", "processor")]
    monkeypatch.setenv(fast_predict.ENV_CACHE, str(root / "cache"))
    assert fast_predict.open_cached(str(hf), "model") is not None


def test_an_entry_copied_from_another_cache_is_not_trusted(signed, tmp_path, monkeypatch,
                                                           capsys):
    """Without the key it was signed with (the key stays beside its own cache) or under
    another key, the same entry is not opened; with its own key it is."""
    hf = str(signed[1])
    root = _copy(signed, tmp_path, key=False)
    monkeypatch.setenv(fast_predict.ENV_CACHE, str(root / "cache"))
    assert fast_predict.open_cached(hf, "model") is None  # no key: nothing is signed
    assert capsys.readouterr().err == ""
    assert fast_predict._secret(create=True) is not None  # this "machine"'s own key
    assert (root / "cache.key").stat().st_mode & 0o777 == 0o600
    assert (root / "cache.key").read_bytes() != (signed[0] / "cache.key").read_bytes()
    assert fast_predict.open_cached(hf, "model") is None
    assert "not signed with this user's key" in capsys.readouterr().err
    shutil.copy2(signed[0] / "cache.key", root / "cache.key")
    assert fast_predict.open_cached(hf, "model") is not None


@pytest.mark.parametrize("damage", ["readable", "short", "link"])
def test_a_key_others_could_read_or_plant_is_not_used(signed, tmp_path, monkeypatch, capsys,
                                                      damage):
    root = _copy(signed, tmp_path)
    key = root / "cache.key"
    if damage == "readable":
        key.chmod(0o644)
    elif damage == "short":
        key.write_bytes(key.read_bytes()[:16])
    else:
        key.unlink()
        key.symlink_to(signed[0] / "cache.key")  # the right bytes, through a planted link
    monkeypatch.setenv(fast_predict.ENV_CACHE, str(root / "cache"))
    fast_predict._SAID.clear()
    assert fast_predict.open_cached(str(signed[1]), "model") is None
    assert fast_predict._secret(create=True) is None  # nor replaced by a new one
    err = capsys.readouterr().err
    assert err.count(f"not using the cache: its key {key}") == 1, err
    assert os.path.islink(key) == (damage == "link")
