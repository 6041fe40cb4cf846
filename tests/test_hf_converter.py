"""Keras <-> Hugging Face state-dict converter without torch: tables, layouts, files, strictness."""

from __future__ import annotations

import json
import os
import sys
import warnings

import numpy as np
import pytest
from conftest import cli, randomize, tiny_model
from tf_mobilenet_v1.converters import hf

from tf_mobilenet_v1 import (
    MobileNetV1Config,
    MobileNetV1ForImageClassification,
    MobileNetV1Model,
    layer_specs,
)
from tf_mobilenet_v1.loaders import hf as hf_loader
from tf_mobilenet_v1.loaders.hf_names import (
    TRANSFORMS,
    conv_hwio_to_oihw,
    depthwise_hwc1_to_c1hw,
    hf_table,
    logits_conv_to_linear,
)

TINY = dict(depth_multiplier=0.25, num_labels=5)


@pytest.fixture(scope="module")
def clf():
    return randomize(MobileNetV1ForImageClassification(tf_padding=False, **TINY), seed=1)


@pytest.fixture(scope="module")
def backbone():
    return tiny_model(MobileNetV1Model, seed=2)


def assert_same_weights(a, b):
    wa = {w.path: np.asarray(w.numpy()) for w in a.weights}
    wb = {w.path: np.asarray(w.numpy()) for w in b.weights}
    assert wa.keys() == wb.keys()
    for path, value in wa.items():
        assert value.dtype == wb[path].dtype, path
        assert np.array_equal(value, wb[path]), path


# ----- the table -----
def test_table_is_derived_from_layer_specs():
    cfg = MobileNetV1Config(**TINY)
    specs = layer_specs(depth_multiplier=0.25)
    rows = {r.hf_key: r for r in hf_table(cfg)}
    assert len(rows) == 6 * len(specs) + 2  # kernel + 5 batch-norm tensors per layer + head
    assert rows["mobilenet_v1.conv_stem.convolution.weight"].hf_shape == (8, 3, 3, 3)
    assert rows["mobilenet_v1.conv_stem.convolution.weight"].keras_path == "Conv2d_0/conv/kernel"
    for i in range(1, 14):
        dw = rows[f"mobilenet_v1.layer.{2 * i - 2}.convolution.weight"]
        pw = rows[f"mobilenet_v1.layer.{2 * i - 1}.convolution.weight"]
        dw_spec, pw_spec = specs[2 * i - 1], specs[2 * i]
        assert dw.keras_path == f"Conv2d_{i}_depthwise/depthwise/kernel"
        assert dw.hf_shape == (dw_spec.in_channels, 1, 3, 3)
        assert pw.keras_path == f"Conv2d_{i}_pointwise/conv/kernel"
        assert pw.hf_shape == (pw_spec.out_channels, pw_spec.in_channels, 1, 1)
        bn = rows[f"mobilenet_v1.layer.{2 * i - 1}.normalization.running_var"]
        assert bn.keras_path == f"Conv2d_{i}_pointwise/BatchNorm/moving_variance"
    assert rows["classifier.weight"].hf_shape == (5, 256)
    assert rows["classifier.weight"].keras_path == "Logits/kernel"
    assert rows["mobilenet_v1.layer.25.normalization.num_batches_tracked"].keras_path is None

    bare = {r.hf_key for r in hf_table(cfg, with_head=False)}
    assert bare == {k.removeprefix("mobilenet_v1.") for k in rows if not k.startswith("class")}


def test_table_covers_exactly_the_keras_variables(clf, backbone):
    for model, head in ((clf, True), (backbone, False)):
        paths = {r.keras_path for r in hf_table(model.config, head)} - {None}
        assert paths == {w.path for w in model.weights}


def test_layout_transforms_place_every_element_and_invert_exactly():
    rng = np.random.default_rng(0)
    k = rng.normal(size=(3, 3, 4, 6)).astype(np.float32)  # h, w, in, out
    w = conv_hwio_to_oihw(k)
    assert w.shape == (6, 4, 3, 3) and w[5, 2, 1, 0] == k[1, 0, 2, 5]
    d = rng.normal(size=(3, 3, 7, 1)).astype(np.float32)
    dt = depthwise_hwc1_to_c1hw(d)
    assert dt.shape == (7, 1, 3, 3) and dt[6, 0, 2, 1] == d[2, 1, 6, 0]
    lg = rng.normal(size=(1, 1, 8, 5)).astype(np.float32)  # C -> N
    lin = logits_conv_to_linear(lg)
    assert lin.shape == (5, 8) and lin[4, 7] == lg[0, 0, 7, 4]
    for name, arr in (("conv", k), ("depthwise", d), ("linear", lg), ("identity", k[0, 0, 0])):
        t = TRANSFORMS[name]
        back = t.to_keras(t.to_hf(arr))
        assert back.shape == arr.shape and np.array_equal(back, arr), name


# ----- Keras -> state dict -----
def test_state_dict_layouts_and_values(clf):
    sd = hf.keras_to_state_dict(clf)
    assert len(sd) == 164
    stem = clf.get_layer("Conv2d_0").conv.kernel.numpy()
    assert np.array_equal(sd["mobilenet_v1.conv_stem.convolution.weight"],
                          stem.transpose(3, 2, 0, 1))
    dw = clf.get_layer("Conv2d_4_depthwise").conv.kernel.numpy()  # (3, 3, C, 1)
    assert sd["mobilenet_v1.layer.6.convolution.weight"].shape == (dw.shape[2], 1, 3, 3)
    assert sd["mobilenet_v1.layer.6.convolution.weight"][5, 0, 0, 2] == dw[0, 2, 5, 0]
    bn = clf.get_layer("Conv2d_13_pointwise").bn
    assert np.array_equal(sd["mobilenet_v1.layer.25.normalization.running_var"],
                          bn.moving_variance.numpy())
    logits = clf.get_layer("Logits")
    assert np.array_equal(sd["classifier.weight"], logits.kernel.numpy()[0, 0].T)
    assert np.array_equal(sd["classifier.bias"], logits.bias.numpy())
    nbt = sd["mobilenet_v1.conv_stem.normalization.num_batches_tracked"]
    assert nbt.dtype == np.int64 and nbt.shape == () and nbt == 0
    for key, value in sd.items():
        assert value.flags.c_contiguous, key
        if not key.endswith("num_batches_tracked"):
            assert value.dtype == np.float32, key


def test_backbone_state_dict_has_no_prefix_and_no_head(backbone):
    sd = hf.keras_to_state_dict(backbone)
    assert len(sd) == 162
    assert "conv_stem.convolution.weight" in sd
    assert not any(k.startswith(("mobilenet_v1.", "classifier")) for k in sd)


def test_fused_model_is_refused(clf):
    with pytest.raises(ValueError, match="folded"):
        hf.keras_to_state_dict(clf.folded())


# ----- round trips -----
def test_in_memory_round_trip_is_bit_exact(clf, backbone):
    for model, cls in ((clf, MobileNetV1ForImageClassification), (backbone, MobileNetV1Model)):
        fresh = cls(model.config)
        report = hf_loader.state_dict_to_keras(hf.keras_to_state_dict(model), fresh)
        assert_same_weights(model, fresh)
        assert len(report.loaded) == len(model.weights)
        assert len(report.ignored) == 27 and not report.dropped and not report.left_at_init


def test_save_hf_directory(tmp_path, clf):
    dst = tmp_path / "hf"
    assert hf.save_hf(clf, dst) == str(dst)
    assert sorted(os.listdir(dst)) == ["config.json", "model.safetensors",
                                       "preprocessor_config.json"]
    config = json.loads((dst / "config.json").read_text())
    assert config["model_type"] == "mobilenet_v1"
    assert config["architectures"] == ["MobileNetV1ForImageClassification"]
    for key, value in clf.config.to_dict().items():
        assert config[key] == value, key
    assert config["classifier_dropout_prob"] == 0.001  # ours, not HF's 0.999
    assert config["label2id"] == {f"LABEL_{i}": i for i in range(5)}

    from safetensors import safe_open

    with safe_open(str(dst / "model.safetensors"), framework="numpy") as f:
        assert f.metadata() == {"format": "pt"}
        keys = set(f.keys())
        stem = f.get_tensor("mobilenet_v1.conv_stem.convolution.weight")
    assert keys == set(hf.keras_to_state_dict(clf))
    assert stem.shape == (8, 3, 3, 3)

    loaded = hf_loader.load_hf(dst)
    assert loaded.config.to_dict() == clf.config.to_dict()
    assert_same_weights(clf, loaded)
    assert hf_loader.is_hf_source(dst)


def test_exported_config_labels_and_preprocessor(tmp_path):
    model = MobileNetV1ForImageClassification(depth_multiplier=0.25, image_size=128)
    hf.save_hf(model, tmp_path / "hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["id2label"]["0"] == "background" and len(config["id2label"]) == 1001
    assert config["label2id"]["background"] == 0
    assert config["id2label"]["1"] == model.config.id2label[1]
    pre = json.loads((tmp_path / "hf" / "preprocessor_config.json").read_text())
    assert pre == {
        "image_processor_type": "MobileNetV1ImageProcessor",
        "do_resize": True, "size": {"shortest_edge": 160}, "resample": 2,
        "do_center_crop": True, "crop_size": {"height": 128, "width": 128},
        "do_rescale": True, "rescale_factor": 1 / 255,
        "do_normalize": True, "image_mean": [0.5] * 3, "image_std": [0.5] * 3,
    }


def test_backbone_directory_round_trip(tmp_path, backbone):
    hf.save_hf(backbone, tmp_path / "hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["architectures"] == ["MobileNetV1Model"]
    assert_same_weights(backbone, hf_loader.load_hf(tmp_path / "hf", cls=MobileNetV1Model))


def test_safetensors_file_round_trip_with_inferred_config(tmp_path, clf):
    path = tmp_path / "weights.safetensors"
    hf.save_hf(clf, path)
    assert os.listdir(tmp_path) == ["weights.safetensors"]  # no temporaries left behind
    loaded = hf_loader.load_hf(path, tf_padding=False)
    assert loaded.config.depth_multiplier == 0.25 and loaded.config.num_labels == 5
    assert loaded.config.tf_padding is False
    assert_same_weights(clf, loaded)


def test_directory_without_config_infers_it(tmp_path, clf):
    (tmp_path / "d").mkdir()
    hf.save_hf(clf, tmp_path / "d" / "model.safetensors")
    assert hf_loader.is_hf_source(tmp_path / "d")
    loaded = hf_loader.load_hf(tmp_path / "d")
    assert loaded.config.num_labels == 5 and loaded.config.tf_padding is True  # default
    assert_same_weights(clf, loaded)


def test_export_warns_where_transformers_computes_differently(tmp_path):
    with pytest.warns(UserWarning, match="output_stride=16"):
        hf.save_hf(MobileNetV1Model(depth_multiplier=0.25, output_stride=16), tmp_path / "a")
    with pytest.warns(UserWarning, match="global_pool=False"):
        hf.save_hf(MobileNetV1ForImageClassification(depth_multiplier=0.25, global_pool=False,
                                                     image_size=96), tmp_path / "b/")
    assert sorted(os.listdir(tmp_path)) == ["a", "b"]
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert config["output_stride"] == 16  # kept, so our own import restores it
    assert hf_loader.load_hf(tmp_path / "a", cls=MobileNetV1Model).config.output_stride == 16


def test_hf_style_config_json_is_read(tmp_path, clf):
    """A config.json as transformers writes it: its own keys, list image_size, HF dropout."""
    dst = tmp_path / "hf"
    hf.save_hf(clf, dst)
    config = json.loads((dst / "config.json").read_text())
    for key in ("num_labels", "output_stride", "global_pool", "output_hidden_states"):
        del config[key]
    config.update(image_size=[160, 160], dtype="float32", transformers_version="5.0.0",
                  classifier_dropout_prob=0.999)
    (dst / "config.json").write_text(json.dumps(config))
    with pytest.warns(UserWarning, match="classifier_dropout_prob"):
        loaded = hf_loader.load_hf(dst)
    assert loaded.config.image_size == 160 and loaded.config.num_labels == 5
    assert loaded.config.classifier_dropout_prob == 0.999
    assert_same_weights(clf, loaded)


def test_wrong_model_type_is_refused(tmp_path, clf):
    dst = tmp_path / "hf"
    hf.save_hf(clf, dst)
    config = json.loads((dst / "config.json").read_text())
    (dst / "config.json").write_text(json.dumps({**config, "model_type": "mobilenet_v2"}))
    with pytest.raises(ValueError, match="mobilenet_v2"):
        hf_loader.load_hf(dst)


# ----- writing safely -----

def test_bin_output_without_torch_says_what_to_install(tmp_path, clf, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` raise ImportError
    with pytest.raises(ImportError, match="pip install torch"):
        hf.save_hf(clf, tmp_path / "w.bin")
    with pytest.raises(ImportError, match="pip install torch"):
        hf.save_hf(clf, tmp_path / "hf", pytorch_bin=True)
    (tmp_path / "x.bin").write_bytes(b"not read")
    with pytest.raises(ImportError, match="pip install torch"):
        hf_loader.load_hf(tmp_path / "x.bin")
    assert os.listdir(tmp_path) == ["x.bin"]


# ----- strictness -----
def _weights(model):
    return [np.array(w.numpy()) for w in model.weights]


def test_wrong_variant_names_key_and_both_shapes(clf):
    target = MobileNetV1ForImageClassification(depth_multiplier=0.5, num_labels=5)
    before = _weights(target)
    with pytest.raises(ValueError) as info:
        hf_loader.state_dict_to_keras(hf.keras_to_state_dict(clf), target)
    first = str(info.value).splitlines()[0]
    assert "mobilenet_v1.conv_stem.convolution.weight" in first
    assert "(8, 3, 3, 3)" in first and "(16, 3, 3, 3)" in first
    assert "mobilenet_v1_0.5_224" in first
    assert "classifier.weight has shape (5, 256) in the state dict but the model needs (5, 512)" \
        in str(info.value)
    assert all(np.array_equal(a, b) for a, b in zip(before, _weights(target), strict=True))


def test_missing_unexpected_and_non_float_are_all_reported(clf):
    sd = hf.keras_to_state_dict(clf)
    del sd["mobilenet_v1.layer.3.normalization.running_mean"]
    sd["mobilenet_v1.layer.26.convolution.weight"] = np.zeros((1, 1, 1, 1), np.float32)
    sd["classifier.bias"] = sd["classifier.bias"].astype(np.int32)
    target = MobileNetV1ForImageClassification(clf.config)
    with pytest.raises(hf_loader.StateDictMismatchError) as info:
        hf_loader.state_dict_to_keras(sd, target)
    err = info.value
    assert err.missing == ["mobilenet_v1.layer.3.normalization.running_mean"]
    assert err.unexpected == ["mobilenet_v1.layer.26.convolution.weight"]
    assert [k for k, _ in err.mismatched] == ["classifier.bias"]
    text = str(err)
    assert "1 mismatched, 1 missing, 1 unexpected" in text.splitlines()[0]
    assert "int32" in text and "layer.26" in text and "layer.3.normalization.running_mean" in text


def test_non_tensor_values_are_refused(clf):
    sd = hf.keras_to_state_dict(clf)
    sd["classifier.bias"] = [0.0] * 5
    with pytest.raises(ValueError, match="classifier.bias.*not a tensor"):
        hf_loader.state_dict_to_keras(sd, MobileNetV1ForImageClassification(clf.config))


def test_num_batches_tracked_is_ignored(clf):
    sd = hf.keras_to_state_dict(clf)
    for k in [k for k in sd if k.endswith("num_batches_tracked")][:10]:
        sd[k] = np.array(12345, np.int64)  # any count is fine
    for k in [k for k in sd if k.endswith("num_batches_tracked")][10:]:
        del sd[k]  # and so is none
    fresh = MobileNetV1ForImageClassification(clf.config)
    report = hf_loader.state_dict_to_keras(sd, fresh)
    assert len(report.ignored) == 10
    assert_same_weights(clf, fresh)


def test_classification_state_dict_into_backbone_drops_head(clf):
    backbone = MobileNetV1Model(clf.config)
    with pytest.warns(UserWarning, match="classifier.bias, classifier.weight were not loaded"):
        report = hf_loader.state_dict_to_keras(hf.keras_to_state_dict(clf), backbone)
    assert report.dropped == ["classifier.bias", "classifier.weight"]
    source = {w.path: w.numpy() for w in clf.weights}
    assert len(backbone.weights) == len(source) - 2
    for w in backbone.weights:
        assert np.array_equal(w.numpy(), source[w.path]), w.path


def test_bare_backbone_state_dict_into_either_model(backbone):
    sd = hf.keras_to_state_dict(backbone)
    same = MobileNetV1Model(backbone.config)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the matching case must be silent
        hf_loader.state_dict_to_keras(sd, same)
    assert_same_weights(backbone, same)

    clf = MobileNetV1ForImageClassification(backbone.config)
    logits_before = [np.array(w) for w in clf.get_layer("Logits").get_weights()]
    with pytest.warns(UserWarning, match="only the backbone"):
        report = hf_loader.state_dict_to_keras(sd, clf)
    assert report.left_at_init == ["Logits/bias", "Logits/kernel"]
    for a, b in zip(logits_before, clf.get_layer("Logits").get_weights(), strict=True):
        assert np.array_equal(a, b)
    loaded = {w.path: w.numpy() for w in clf.weights}
    for w in backbone.weights:
        assert np.array_equal(w.numpy(), loaded[w.path]), w.path


def test_prefixed_state_dict_without_classifier_is_incomplete(clf):
    sd = {k: v for k, v in hf.keras_to_state_dict(clf).items() if not k.startswith("classifier")}
    with pytest.raises(ValueError, match="classifier.weight is missing"):
        hf_loader.state_dict_to_keras(sd, MobileNetV1ForImageClassification(clf.config))


# ----- config inference -----
@pytest.mark.parametrize(
    "fields",
    [
        dict(depth_multiplier=0.25),
        dict(depth_multiplier=0.5, num_labels=1000),
        dict(depth_multiplier=0.75, num_labels=3),
        dict(depth_multiplier=1.0),
        dict(depth_multiplier=0.35, num_channels=1),
        dict(depth_multiplier=1.4, num_labels=10),
        dict(depth_multiplier=0.25, min_depth=16),
    ],
)
def test_infer_config_recovers_the_variant(fields):
    cfg = MobileNetV1Config(**fields)
    for head in (True, False):
        shapes = {r.hf_key: r.hf_shape for r in hf_table(cfg, head)}
        inferred = hf_loader.infer_config(shapes)
        assert inferred.depth_multiplier == cfg.depth_multiplier
        assert inferred.num_channels == cfg.num_channels
        if head:
            assert inferred.num_labels == cfg.num_labels
        assert {r.hf_key: r.hf_shape for r in hf_table(inferred, head)} == shapes


def test_infer_config_finds_an_equivalent_unusual_width():
    cfg = MobileNetV1Config(depth_multiplier=0.3, min_depth=4)
    shapes = {r.hf_key: r.hf_shape for r in hf_table(cfg)}
    inferred = hf_loader.infer_config(shapes)
    assert {r.hf_key: r.hf_shape for r in hf_table(inferred)} == shapes


def test_infer_config_rejects_other_models():
    with pytest.raises(ValueError, match="not a Hugging Face MobileNet V1 state dict"):
        hf_loader.infer_config({"encoder.weight": (4, 4)})
    cfg = MobileNetV1Config(depth_multiplier=0.25)
    shapes = {r.hf_key: r.hf_shape for r in hf_table(cfg)}
    shapes["mobilenet_v1.layer.7.convolution.weight"] = (33, 32, 1, 1)
    with pytest.raises(ValueError, match="no depth_multiplier"):
        hf_loader.infer_config(shapes)


def test_load_hf_from_numpy_dict_with_overrides(clf):
    sd = hf.keras_to_state_dict(clf)
    loaded = hf_loader.load_hf(sd, tf_padding=False, image_size=96)
    assert loaded.config.tf_padding is False and loaded.config.image_size == 96
    assert_same_weights(clf, loaded)
    with pytest.raises(ValueError, match=r"\(8, 3, 3, 3\).*\(24, 3, 3, 3\)"):
        hf_loader.load_hf(sd, depth_multiplier=0.75)


def test_bfloat16_safetensors_widen_exactly(tmp_path, clf):
    import ml_dtypes  # a TensorFlow dependency
    from safetensors.numpy import save_file

    sd = hf.keras_to_state_dict(clf)
    half = {k: v.astype(ml_dtypes.bfloat16) if v.dtype == np.float32 else v
            for k, v in sd.items()}
    save_file(half, str(tmp_path / "half.safetensors"))
    loaded = hf_loader.load_hf(tmp_path / "half.safetensors")
    widened = hf.keras_to_state_dict(loaded)
    for key, value in half.items():
        assert np.array_equal(widened[key], value.astype(np.float32)), key
    assert not np.array_equal(widened["classifier.weight"], sd["classifier.weight"])


def test_is_hf_source(tmp_path):
    assert hf_loader.is_hf_source({})
    assert hf_loader.is_hf_source(tmp_path / "w.safetensors")
    assert hf_loader.is_hf_source("x/pytorch_model.bin")
    assert not hf_loader.is_hf_source(tmp_path)  # an empty directory
    (tmp_path / "config.json").write_text("{}")
    assert not hf_loader.is_hf_source(tmp_path)  # config but no weights
    (tmp_path / "pytorch_model.bin").write_bytes(b"")
    assert hf_loader.is_hf_source(tmp_path)
    assert not hf_loader.is_hf_source(tmp_path / "model.keras")
    assert not hf_loader.is_hf_source("mobilenet_v1_0.25_128")
    with pytest.raises(ValueError, match="not a Hugging Face source"):
        hf_loader.load_hf(tmp_path / "model.keras")
    with pytest.raises(FileNotFoundError):
        hf_loader.load_hf(tmp_path / "missing.safetensors")


def test_corrupt_safetensors_is_a_value_error(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage")
    with pytest.raises(ValueError, match="cannot read"):
        hf_loader.load_hf(bad)


# ----- command line -----
def test_cli_convert_keras_to_hf_and_back(tmp_path, clf, capsys):

    src = tmp_path / "model.keras"
    clf.save(src)
    hf_dir = tmp_path / "hf_dir"
    assert cli("convert", str(src), str(hf_dir) + os.sep).returncode == 0
    assert (hf_dir / "model.safetensors").is_file()
    back = tmp_path / "back.keras"
    assert cli("convert", str(hf_dir), str(back)).returncode == 0
    import keras

    assert_same_weights(clf, keras.saving.load_model(back))
    capsys.readouterr()
    assert cli("convert", str(src), str(hf_dir)).returncode == 1  # exists, no --force
    assert "already exists" in capsys.readouterr().err
    assert cli("convert", str(src), str(tmp_path / "w.safetensors")).returncode == 0
    assert_same_weights(clf, hf_loader.load_hf(tmp_path / "w.safetensors", tf_padding=False))
    assert cli("convert", tmp_path / "w.safetensors", tmp_path / "w.keras").returncode == 0
    assert_same_weights(clf, keras.saving.load_model(tmp_path / "w.keras"))
