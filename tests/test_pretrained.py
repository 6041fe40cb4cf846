"""from_pretrained / load_any: exactness against Google's references from every source form,
config overrides, head handling, Keras and Hugging Face dispatch, and the convert CLI."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tarfile
import types

import keras
import numpy as np
import pytest
from conftest import cli, fixture_path
from tf_mobilenet_v1.converters.slim import save_slim_checkpoint

from tf_mobilenet_v1 import MobileNetV1ForImageClassification, MobileNetV1Model
from tf_mobilenet_v1.architecture import hidden_state_names
from tf_mobilenet_v1.loaders.dispatch import PretrainedWarning, load_any
from tf_mobilenet_v1.loaders.tf_checkpoint import DATA_SUFFIX

TOL = 1e-4
SLIM_REF = ("slim_reference", "mobilenet_v1_0.5_160")
ENDPOINTS = ("Conv2d_0", "Conv2d_1_depthwise", "Conv2d_5_pointwise", "Conv2d_11_pointwise",
             "Conv2d_13_pointwise")


def _official(res: int):
    return fixture_path("official", f"mobilenet_v1_0.25_{res}")


def _slim_ckpt() -> str:
    return str(fixture_path(*SLIM_REF) / "mobilenet_v1_0.5_160.ckpt")


def _maxdiff(a, b) -> float:
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())


SOURCES = {
    "128-checkpoint": (128, lambda: _official(128) / "mobilenet_v1_0.25_128.ckpt"),
    "128-directory": (128, lambda: _official(128)),
    "128-tarball": (128, lambda: fixture_path("official", "mobilenet_v1_0.25_128_frozen.tgz")),
    "224-checkpoint": (224, lambda: _official(224) / "mobilenet_v1_0.25_224.ckpt"),
    "224-directory": (224, lambda: _official(224)),
    "224-frozen_graph": (224, lambda: _official(224) / "frozen_graph.pb"),
}


@pytest.mark.parametrize("form", list(SOURCES))
def test_official_logits_from_every_source(form):
    res, path = SOURCES[form]
    ref = np.load(_official(res) / "reference_logits.npz")
    model = MobileNetV1ForImageClassification.from_pretrained(str(path()))
    assert model.config.variant == f"mobilenet_v1_0.25_{res}"
    logits = np.asarray(model(ref["inputs"], training=False))
    diff = _maxdiff(logits, ref["logits"])
    print(f"{form}: max |logit diff| vs reference_logits.npz = {diff:.2e}")
    assert diff < TOL
    top5 = json.loads((_official(res) / "reference.json").read_text())["top5"]
    for image, row in zip(ref["images"], logits, strict=True):
        assert int(row.argmax()) == top5[str(image)][0][0], image
    decoded = model.decode(logits, top_k=1)
    assert decoded[0][0][1] == "chickadee" and decoded[1][0][1] == "cheeseburger"


def test_slim_reference_endpoints():
    ref = np.load(fixture_path(*SLIM_REF, "reference_outputs.npz"))
    with pytest.warns(PretrainedWarning, match="left out on purpose"):
        backbone = MobileNetV1Model.from_pretrained(_slim_ckpt(), feature_layers=ENDPOINTS)
    feats = backbone(ref["inputs"], training=False)
    for name in ENDPOINTS:
        diff = _maxdiff(feats[name], ref[name])
        print(f"slim 0.5_160 {name}: {diff:.2e}")
        assert diff < TOL, name

    model = MobileNetV1ForImageClassification.from_pretrained(
        _slim_ckpt(), global_pool=False, output_hidden_states=True)
    assert model.config.image_size == 160 and model.config.depth_multiplier == 0.5
    probe = keras.Model(model.input, {"AvgPool_1a": model.get_layer("AvgPool_1a").output,
                                      "logits": model.output})
    out = {**probe(ref["inputs"], training=False),
           **model.backbone(ref["inputs"], training=False)}
    hidden = dict(zip(hidden_state_names(), out["hidden_states"], strict=True))
    for name in ENDPOINTS[1:]:
        assert _maxdiff(hidden[name], ref[name]) < TOL, name
    for name, value in (("AvgPool_1a", out["AvgPool_1a"]), ("Logits", out["logits"])):
        diff = _maxdiff(value, ref[name])
        print(f"slim 0.5_160 {name} (global_pool=False): {diff:.2e}")
        assert diff < TOL, name
    probs = model.predict_proba(ref["inputs"], verbose=0)
    assert _maxdiff(probs, ref["Predictions"]) < 1e-6


def test_slim_reference_global_pool_at_161():
    ref = np.load(fixture_path(*SLIM_REF, "reference_global_pool_161.npz"))
    model = MobileNetV1ForImageClassification.from_pretrained(_slim_ckpt(),
                                                              output_hidden_states=True)
    assert model.config.global_pool
    diff = _maxdiff(model(ref["inputs"], training=False), ref["Logits"])
    print(f"slim 0.5_160 global_pool at 161x161: Logits {diff:.2e}")
    assert diff < TOL
    hidden = model.backbone(ref["inputs"], training=False)["hidden_states"]
    assert _maxdiff(hidden[-1], ref["Conv2d_13_pointwise"]) < TOL


def test_slim_reference_output_stride_16():
    ref = np.load(fixture_path(*SLIM_REF, "reference_base_os16_same.npz"))
    with pytest.warns(PretrainedWarning):
        model = MobileNetV1Model.from_pretrained(_slim_ckpt(), output_stride=16)
    out = model(ref["inputs"], training=False)["last_hidden_state"]
    diff = _maxdiff(out, ref["Conv2d_13_pointwise"])
    print(f"slim 0.5_160 output_stride=16 Conv2d_13_pointwise: {diff:.2e}")
    assert out.shape == (2, 10, 10, 512) and diff < TOL


def test_overrides_build_variants_around_the_same_weights():
    src = str(_official(128) / "mobilenet_v1_0.25_128.ckpt")
    base = MobileNetV1ForImageClassification.from_pretrained(src)
    x = np.load(_official(128) / "reference_logits.npz")["inputs"][:2]
    for overrides in ({"tf_padding": False}, {"output_stride": 16}, {"global_pool": False},
                      {"output_hidden_states": True}):
        variant = MobileNetV1ForImageClassification.from_pretrained(src, **overrides)
        for key, value in overrides.items():
            assert getattr(variant.config, key) == value
        for a, b in zip(base.weights, variant.weights, strict=True):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
        logits = variant(x, training=False)
        assert logits.shape == (2, 1001)
        if overrides == {"output_hidden_states": True}:
            assert len(variant.backbone(x, training=False)["hidden_states"]) == 26
            np.testing.assert_array_equal(logits, base(x, training=False))
        if overrides == {"tf_padding": False}:
            assert _maxdiff(logits, base(x, training=False)) > 1e-3  # really another padding


def test_new_num_labels_gets_a_fresh_head():
    src = str(_official(128) / "mobilenet_v1_0.25_128.ckpt")
    base = MobileNetV1ForImageClassification.from_pretrained(src)
    with pytest.warns(PretrainedWarning, match="1001 classes; the new 10-class Logits head"):
        model = MobileNetV1ForImageClassification.from_pretrained(src, num_labels=10)
    assert model.output_shape == (None, 10) and model.config.id2label[3] == "LABEL_3"
    np.testing.assert_array_equal(model.get_layer("Conv2d_13_pointwise").conv.kernel.numpy(),
                                  base.get_layer("Conv2d_13_pointwise").conv.kernel.numpy())


@pytest.mark.parametrize("form", ["hf_dir", "safetensors", "keras", "slim"])
def test_num_labels_gives_a_fresh_head_from_every_form(tmp_path, form):
    """The README's fine-tuning line holds for each source: the backbone loads, the head is
    new (with one warning), whatever the form."""
    from conftest import tiny_model
    from tf_mobilenet_v1.converters.hf import save_hf
    from tf_mobilenet_v1.converters.slim import save_slim_checkpoint

    base = tiny_model(seed=2)
    src = str(tmp_path / {"hf_dir": "hf", "safetensors": "m.safetensors", "keras": "m.keras",
                          "slim": "m.ckpt"}[form])
    {"keras": base.save, "slim": lambda p: save_slim_checkpoint(base, p)}.get(
        form, lambda p: save_hf(base, p))(src)
    with pytest.warns(PretrainedWarning, match="1001 classes; the new 10-class Logits head"):
        model = MobileNetV1ForImageClassification.from_pretrained(src, num_labels=10)
    assert model.output_shape == (None, 10) and model.config.id2label[3] == "LABEL_3"
    for layer in ("Conv2d_0", "Conv2d_13_pointwise"):
        np.testing.assert_array_equal(model.get_layer(layer).conv.kernel.numpy(),
                                      base.get_layer(layer).conv.kernel.numpy())


def test_wrong_alpha_names_the_tensor_and_both_shapes():
    with pytest.raises(ValueError) as e:
        MobileNetV1ForImageClassification.from_pretrained(
            str(_official(128) / "mobilenet_v1_0.25_128.ckpt"), depth_multiplier=0.5)
    msg = str(e.value)
    assert "MobilenetV1/Conv2d_0/weights has shape (3, 3, 3, 8)" in msg
    assert "(depth_multiplier=0.5) needs (3, 3, 3, 16)" in msg


def test_a_given_config_must_agree_with_the_weights():
    from tf_mobilenet_v1 import MobileNetV1Config

    src = str(_official(128) / "mobilenet_v1_0.25_128.ckpt")
    with pytest.raises(ValueError, match=r"Conv2d_0/weights has shape \(3, 3, 3, 8\).*"
                                         r"needs \(3, 3, 3, 24\)"):
        MobileNetV1ForImageClassification.from_pretrained(
            src, config=MobileNetV1Config.from_variant("mobilenet_v1_0.75_128"))
    cfg = MobileNetV1Config.from_variant("mobilenet_v1_0.25_160")
    model = MobileNetV1ForImageClassification.from_pretrained(src, config=cfg, global_pool=False)
    assert model.config.image_size == 160 and not model.config.global_pool


def test_backbone_checkpoint(tmp_path):
    backbone = MobileNetV1Model(depth_multiplier=0.25, image_size=32)
    prefix = save_slim_checkpoint(backbone, str(tmp_path / "base.ckpt"))
    loaded = load_any(prefix)
    assert type(loaded) is MobileNetV1Model
    with pytest.raises(ValueError, match="no classifier head.*num_labels=N"):
        MobileNetV1ForImageClassification.from_pretrained(prefix)
    with pytest.warns(PretrainedWarning, match="no classifier; the new 4-class"):
        clf = MobileNetV1ForImageClassification.from_pretrained(prefix, num_labels=4)
    np.testing.assert_array_equal(clf.get_layer("Conv2d_0").conv.kernel.numpy(),
                                  backbone.get_layer("Conv2d_0").conv.kernel.numpy())


def test_load_any_picks_the_class():
    assert type(load_any(str(_official(224)))) is MobileNetV1ForImageClassification


def test_keras_files_as_sources(tmp_path):
    ref = np.load(_official(128) / "reference_logits.npz")
    model = MobileNetV1ForImageClassification.from_pretrained(str(_official(128)))
    expected = np.asarray(model(ref["inputs"], training=False))
    keras_path = str(tmp_path / "m.keras")
    h5_path = str(tmp_path / "mobilenet_v1_0.25_128.weights.h5")
    model.save(keras_path)
    model.save_weights(h5_path)
    for src in (keras_path, h5_path):
        again = load_any(src)
        assert type(again) is MobileNetV1ForImageClassification
        assert again.config.variant == "mobilenet_v1_0.25_128"
        np.testing.assert_array_equal(np.asarray(again(ref["inputs"], training=False)), expected)
        with pytest.warns(PretrainedWarning, match="left out on purpose"):
            backbone = MobileNetV1Model.from_pretrained(src, output_hidden_states=True)
        assert len(backbone(ref["inputs"][:1])["hidden_states"]) == 26
        with pytest.raises(ValueError, match="use_ema applies to TF-slim"):
            load_any(src, use_ema=True)
    fused = MobileNetV1ForImageClassification.from_pretrained(h5_path, fold_batchnorm=True)
    assert fused.fold_batchnorm
    assert _maxdiff(fused(ref["inputs"], training=False), expected) < 1e-4


def test_fused_source_cannot_be_unfolded(tmp_path):
    model = MobileNetV1ForImageClassification(depth_multiplier=0.25, image_size=32,
                                              num_labels=3).folded()
    path = str(tmp_path / "fused.weights.h5")
    model.save_weights(path)
    again = load_any(path)
    assert again.fold_batchnorm
    with pytest.raises(ValueError, match="cannot be unfolded"):
        MobileNetV1ForImageClassification.from_pretrained(path, fold_batchnorm=False)


def test_hugging_face_sources_go_to_loaders_hf(tmp_path, monkeypatch):
    calls = []

    def load_hf(path, cls=MobileNetV1ForImageClassification, **overrides):
        calls.append((path, cls, overrides))
        return cls(depth_multiplier=0.25, image_size=32, **overrides)

    import tf_mobilenet_v1.loaders.hf as real

    def hf_source(path, use_ema, overrides):  # the form's reader, on the stub's load_hf
        from tf_mobilenet_v1.loaders.source import model_source

        own = MobileNetV1ForImageClassification if real.has_classifier(path) \
            else MobileNetV1Model
        return model_source(load_hf(path, own), path)

    stub = types.SimpleNamespace(load_hf=load_hf, is_hf_source=real.is_hf_source,
                                 has_classifier=real.has_classifier, hf_source=hf_source)
    monkeypatch.setitem(sys.modules, "tf_mobilenet_v1.loaders.hf", stub)
    from safetensors.numpy import save_file

    hf_dir = tmp_path / "hf"
    hf_dir.mkdir()
    (hf_dir / "config.json").write_text("{}")
    save_file({"classifier.weight": np.zeros((2, 2), np.float32)},
              str(hf_dir / "model.safetensors"))
    bare = tmp_path / "backbone.safetensors"
    save_file({"mobilenet_v1.conv_stem.convolution.weight": np.zeros((1,), np.float32)},
              str(bare))
    assert type(load_any(str(hf_dir))) is MobileNetV1ForImageClassification
    assert type(load_any(str(bare))) is MobileNetV1Model
    model = MobileNetV1Model.from_pretrained(str(hf_dir), output_stride=16)
    assert model.config.output_stride == 16
    # With overrides, the source loads as it is (here a classifier) and the one assembly step
    # makes the backbone variant.
    assert [(c[1], c[2]) for c in calls] == [(MobileNetV1ForImageClassification, {}),
                                             (MobileNetV1Model, {}),
                                             (MobileNetV1ForImageClassification, {})]
    with pytest.raises(ValueError, match="use_ema applies to TF-slim"):
        load_any(str(hf_dir), use_ema=True)


def test_hugging_face_round_trip_through_converters_hf(tmp_path):
    from conftest import randomize
    from tf_mobilenet_v1.converters.hf import save_hf

    model = randomize(MobileNetV1ForImageClassification(depth_multiplier=0.25, image_size=32,
                                                        num_labels=6), 5)
    save_hf(model, str(tmp_path / "hf"))
    x = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    expected = np.asarray(model(x, training=False))
    for src in (tmp_path / "hf", tmp_path / "hf" / "model.safetensors"):
        again = load_any(str(src))
        assert type(again) is MobileNetV1ForImageClassification
        assert _maxdiff(again(x, training=False), expected) < 1e-5
    fused = MobileNetV1ForImageClassification.from_pretrained(str(tmp_path / "hf"),
                                                              fold_batchnorm=True)
    assert fused.fold_batchnorm and _maxdiff(fused(x, training=False), expected) < 1e-4


def test_bad_arguments_and_paths(tmp_path):
    with pytest.raises(TypeError, match="unknown argument 'colour'"):
        MobileNetV1ForImageClassification.from_pretrained(str(_official(128)), colour=1)
    with pytest.raises(FileNotFoundError, match="does not exist; pass a registry name"):
        load_any(str(tmp_path / "nope.ckpt"))
    with pytest.raises(ValueError, match="unknown official checkpoint"):
        load_any("mobilenet_v1_2.0_224")
    not_mobilenet = tmp_path / "other.keras"
    keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]).save(not_mobilenet)
    with pytest.raises(ValueError, match="not a MobileNet V1 model"):
        load_any(str(not_mobilenet))


# ----- the convert CLI -----
@pytest.mark.parametrize("suffix", [".keras", ".weights.h5"])
def test_cli_convert_tarball_to_keras(tmp_path, suffix):
    src = str(fixture_path("official", "mobilenet_v1_0.25_128_frozen.tgz"))
    dst = tmp_path / f"mobilenet_v1_0.25_128{suffix}"
    assert cli("convert", src, str(dst)).returncode == 0
    assert sorted(os.listdir(tmp_path)) == [dst.name]
    ref = np.load(_official(128) / "reference_logits.npz")
    direct = np.asarray(MobileNetV1ForImageClassification.from_pretrained(src)(ref["inputs"]))
    converted = load_any(str(dst))
    logits = np.asarray(converted(ref["inputs"], training=False))
    np.testing.assert_array_equal(logits, direct)
    assert _maxdiff(logits, ref["logits"]) < TOL
    assert cli("convert", src, str(dst)).returncode == 1  # exists, no --force


def test_cli_convert_tarball_to_slim_checkpoint_is_bit_exact(tmp_path):
    from tf_mobilenet_v1.loaders.slim import slim_name_map
    from tf_mobilenet_v1.loaders.tf_checkpoint import read_checkpoint

    src = str(fixture_path("official", "mobilenet_v1_0.25_128_frozen.tgz"))
    dst = str(tmp_path / "mobilenet_v1_0.25_128.ckpt")
    assert cli("convert", src, dst).returncode == 0
    written = read_checkpoint(dst)
    original = read_checkpoint(str(_official(128) / "mobilenet_v1_0.25_128.ckpt"))
    for name in slim_name_map():  # the 2017 frozen graph and checkpoint hold the same bits
        np.testing.assert_array_equal(written[name], original[name], err_msg=name)


def _bad_sources(tmp_path):
    truncated = tmp_path / "mobilenet_v1_0.25_128_frozen.tgz"
    shutil.copy(fixture_path("official", "mobilenet_v1_0.25_128_frozen.tgz"), truncated)
    with open(truncated, "r+b") as f:
        f.truncate(os.path.getsize(truncated) // 2)
    empty = tmp_path / "empty.tgz"
    with tarfile.open(empty, "w:gz"):
        pass
    bad_data = tmp_path / "bad"
    bad_data.mkdir()
    for suffix in (".index", DATA_SUFFIX):
        shutil.copy(_official(128) / f"mobilenet_v1_0.25_128.ckpt{suffix}",
                    bad_data / f"m.ckpt{suffix}")
    with open(bad_data / f"m.ckpt{DATA_SUFFIX}", "r+b") as f:
        f.truncate(1000)
    return {"missing": str(tmp_path / "missing.ckpt"), "truncated tarball": str(truncated),
            "tarball without model": str(empty), "truncated data": str(bad_data / "m.ckpt")}


def test_cli_convert_bad_sources_fail_cleanly(tmp_path, capsys):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    for what, src in _bad_sources(tmp_path).items():
        for dst in ("m.keras", "m.weights.h5", "m.ckpt"):
            assert cli("convert", src, str(out_dir / dst)).returncode == 1, (what, dst)
            err = capsys.readouterr().err.strip()
            assert err.startswith("mobilenet-v1: error: ") and "\n" not in err, err
    assert os.listdir(out_dir) == []
