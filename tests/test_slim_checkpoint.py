"""TF-slim checkpoints: name table, every source form, strictness, allow-list, EMA, writing."""

from __future__ import annotations

import io
import os
import shutil
import tarfile

import numpy as np
import pytest
import tensorflow as tf
from conftest import fixture_path, randomize, tiny_model
from tf_mobilenet_v1.converters.slim import save_slim_checkpoint

from tf_mobilenet_v1 import MobileNetV1ForImageClassification, MobileNetV1Model, layer_specs
from tf_mobilenet_v1.architecture import model_weight_shapes
from tf_mobilenet_v1.loaders.slim import read_slim, slim_name_map
from tf_mobilenet_v1.loaders.tf_checkpoint import DATA_SUFFIX, read_checkpoint

OFFICIAL = ("official", "mobilenet_v1_0.25_128")
PREFIX = "mobilenet_v1_0.25_128.ckpt"


def _ckpt() -> str:
    return str(fixture_path(*OFFICIAL) / PREFIX)


def _write_raw(prefix: str, tensors: dict[str, np.ndarray]) -> str:
    """Write arbitrary named tensors as a V2 checkpoint (how hand-made test inputs are built)."""
    names = sorted(tensors)
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=[tf.constant(tensors[n]) for n in names])
    return prefix


def _tiny(seed=0, **fields):
    return tiny_model(seed=seed, **{"num_labels": 5, **fields})


# ----- the name table -----
def test_name_table_is_derived_and_matches_the_official_checkpoint():
    table = slim_name_map()
    specs = layer_specs()
    assert len(table) == 5 * len(specs) + 2 == 137
    assert len(slim_name_map(head=False)) == 135
    assert table["MobilenetV1/Conv2d_1_depthwise/depthwise_weights"] == \
        "Conv2d_1_depthwise/depthwise/kernel"
    assert table["MobilenetV1/Logits/Conv2d_1c_1x1/biases"] == "Logits/bias"
    names = set(read_checkpoint(_ckpt()))
    assert names == set(table) | {"global_step"}


def test_keras_paths_and_shapes_equal_the_models():
    model = _tiny()
    shapes = model_weight_shapes(model.config)
    assert {v.path: tuple(v.shape) for v in model.weights} == shapes
    assert set(shapes) == set(slim_name_map().values())
    fused = model.folded()
    assert {v.path: tuple(v.shape) for v in fused.weights} == \
        model_weight_shapes(model.config, folded=True)
    backbone = MobileNetV1Model(model.config)
    assert {v.path for v in backbone.weights} == set(model_weight_shapes(model.config,
                                                                          head=False))


# ----- reading every form -----
@pytest.mark.parametrize("form", ["prefix", "index_file", "directory", "tarball"])
def test_every_form_reads_the_same_tensors(form):
    ref = read_slim(_ckpt()).tensors
    if form == "prefix":
        src = _ckpt()
    elif form == "index_file":
        src = _ckpt() + ".index"
    elif form == "directory":
        src = str(fixture_path(*OFFICIAL))
    else:
        src = str(fixture_path("official", "mobilenet_v1_0.25_128_frozen.tgz"))
    got = read_slim(src)
    assert set(got.tensors) == set(ref)
    for name, value in ref.items():
        np.testing.assert_array_equal(got.tensors[name], value, err_msg=name)
    assert got.resolution == 128 and got.alpha_hint == 0.25
    cfg = got.infer_config()
    assert (cfg.depth_multiplier, cfg.image_size, cfg.num_labels) == (0.25, 128, 1001)


def test_frozen_graph_pb_equals_checkpoint():
    pb = read_slim(str(fixture_path("official", "mobilenet_v1_0.25_224", "frozen_graph.pb")))
    ck = read_slim(str(fixture_path("official", "mobilenet_v1_0.25_224")
                       / "mobilenet_v1_0.25_224.ckpt"))
    assert set(pb.tensors) == set(ck.tensors) == set(slim_name_map())
    for name in ck.tensors:
        np.testing.assert_array_equal(pb.tensors[name], ck.tensors[name], err_msg=name)
    assert pb.resolution == 224


def test_frozen_graph_resolution_from_placeholder_when_unnamed(tmp_path):
    pb = tmp_path / "graph.pb"
    shutil.copy(fixture_path("official", "mobilenet_v1_0.25_224", "frozen_graph.pb"), pb)
    got = read_slim(str(pb))
    assert got.resolution == 224 and got.alpha_hint is None
    assert got.infer_config().image_size == 224


def test_2018_layout_tarball(tmp_path):
    """A 2018-style tarball (./<name>.ckpt.*, no directory) is read without extraction."""
    src = fixture_path("official", "mobilenet_v1_0.25_224")
    tgz = tmp_path / "mobilenet_v1_0.25_224.tgz"
    with tarfile.open(tgz, "w:gz") as tar:
        for suffix in (".index", DATA_SUFFIX):
            tar.add(src / f"mobilenet_v1_0.25_224.ckpt{suffix}",
                    arcname=f"./mobilenet_v1_0.25_224.ckpt{suffix}")
        tar.add(src / "frozen_graph.pb", arcname="./mobilenet_v1_0.25_224_frozen.pb")
    got = read_slim(str(tgz))
    assert got.source.endswith(":./mobilenet_v1_0.25_224.ckpt")  # checkpoint preferred
    assert got.resolution == 224
    before = set(os.listdir(tmp_path))
    assert before == {"mobilenet_v1_0.25_224.tgz"}


def test_tarball_member_paths_cannot_escape(tmp_path):
    src = fixture_path(*OFFICIAL)
    tgz = tmp_path / "sub" / "evil.tgz"
    tgz.parent.mkdir()
    with tarfile.open(tgz, "w:gz") as tar:
        for suffix in (".index", DATA_SUFFIX):
            tar.add(src / f"{PREFIX}{suffix}", arcname=f"../../escaped.ckpt{suffix}")
    got = read_slim(str(tgz))
    assert len(got.tensors) == 137
    assert not list(tmp_path.rglob("escaped*"))
    assert not (tmp_path.parent / "escaped.ckpt.index").exists()


# ----- strictness: allow-list, EMA, quantization -----
def test_allow_list_ema_slots_and_quant_ranges(tmp_path):
    model = _tiny(seed=1)
    base = read_checkpoint(save_slim_checkpoint(model, str(tmp_path / "base.ckpt")))
    raw = dict(base)
    kernel = "MobilenetV1/Conv2d_3_pointwise/weights"
    raw[kernel + "/ExponentialMovingAverage"] = base[kernel] + 1.0
    raw[kernel + "/RMSProp"] = np.ones_like(base[kernel])
    raw[kernel + "/RMSProp_1"] = np.ones_like(base[kernel])
    raw[kernel + "/Momentum"] = np.ones_like(base[kernel])
    raw["MobilenetV1/Conv2d_3_pointwise/weights_quant/min"] = np.float32(-0.5)
    raw["MobilenetV1/Conv2d_3_pointwise/weights_quant/max"] = np.float32(0.75)
    raw["MobilenetV1/Conv2d_3_pointwise/act_quant/min"] = np.float32(0.0)
    raw["MobilenetV1/Conv2d_3_pointwise/act_quant/max"] = np.float32(6.0)
    prefix = _write_raw(str(tmp_path / "mobilenet_v1_0.25_32_quant.ckpt"), raw)

    plain = read_slim(prefix)
    np.testing.assert_array_equal(plain.tensors[kernel], base[kernel])
    assert plain.ema_used == []
    assert plain.quant_ranges == {
        "MobilenetV1/Conv2d_3_pointwise/act_quant": (0.0, 6.0),
        "MobilenetV1/Conv2d_3_pointwise/weights_quant": (-0.5, 0.75),
    }
    assert plain.ignored[kernel + "/RMSProp"] == "optimizer slot"
    assert plain.ignored["global_step"] == "global step"

    ema = read_slim(prefix, use_ema=True)
    np.testing.assert_array_equal(ema.tensors[kernel], base[kernel] + 1.0)
    assert ema.ema_used == [kernel]

    loaded = MobileNetV1ForImageClassification.from_pretrained(prefix, use_ema=True)
    np.testing.assert_array_equal(
        loaded.get_layer("Conv2d_3_pointwise").conv.kernel.numpy(), base[kernel] + 1.0)
    assert loaded.quant_ranges["MobilenetV1/Conv2d_3_pointwise/weights_quant"] == (-0.5, 0.75)
    assert loaded.config.image_size == 32


def test_use_ema_without_shadows_warns():
    with pytest.warns(UserWarning, match="no ExponentialMovingAverage"):
        got = read_slim(_ckpt(), use_ema=True)
    assert got.ema_used == []


def test_unused_tensor_is_an_error(tmp_path):
    raw = read_checkpoint(_ckpt())
    raw["MobilenetV1/Conv2d_14_pointwise/weights"] = np.zeros((1, 1, 4, 4), np.float32)
    prefix = _write_raw(str(tmp_path / "extra.ckpt"), raw)
    with pytest.raises(ValueError, match="does not use, e.g. MobilenetV1/Conv2d_14_pointwise"):
        read_slim(prefix)


def test_missing_tensor_is_an_error(tmp_path):
    raw = read_checkpoint(_ckpt())
    del raw["MobilenetV1/Conv2d_7_depthwise/BatchNorm/moving_variance"]
    prefix = _write_raw(str(tmp_path / "missing.ckpt"), raw)
    with pytest.raises(ValueError, match="lacks 1 MobileNet V1 tensor.*Conv2d_7_depthwise"):
        read_slim(prefix)


def test_half_a_head_is_an_error(tmp_path):
    raw = read_checkpoint(_ckpt())
    del raw["MobilenetV1/Logits/Conv2d_1c_1x1/biases"]
    prefix = _write_raw(str(tmp_path / "halfhead.ckpt"), raw)
    with pytest.raises(ValueError, match="Logits/Conv2d_1c_1x1/biases"):
        read_slim(prefix)


def test_other_architecture_is_an_error(tmp_path):
    prefix = _write_raw(str(tmp_path / "inception.ckpt"), {
        "InceptionV3/Conv2d_1a_3x3/weights": np.zeros((3, 3, 3, 32), np.float32),
        "global_step": np.int64(7),
    })
    with pytest.raises(ValueError, match="not a TF-slim MobileNet V1 model.*InceptionV3"):
        read_slim(prefix)


def test_truncated_data_file_is_an_error(tmp_path):
    for suffix in (".index", DATA_SUFFIX):
        shutil.copy(_ckpt() + suffix, tmp_path / f"t.ckpt{suffix}")
    data = tmp_path / f"t.ckpt{DATA_SUFFIX}"
    with open(data, "r+b") as f:
        f.truncate(os.path.getsize(data) // 3)
    with pytest.raises(ValueError, match="truncated or corrupt"):
        read_slim(str(tmp_path / "t.ckpt"))


def test_missing_path_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_slim(str(tmp_path / "nothing.ckpt"))


def test_directory_without_checkpoint_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        read_slim(str(tmp_path))


def test_tarball_without_model_is_an_error(tmp_path):
    tgz = tmp_path / "labels_only.tgz"
    with tarfile.open(tgz, "w:gz") as tar:
        data = b"0:background\n"
        info = tarfile.TarInfo("mobilenet_v1_0.25_128/labels.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(ValueError, match="holds no MobileNet V1 checkpoint.*labels.txt"):
        read_slim(str(tgz))


def test_truncated_tarball_is_an_error(tmp_path):
    tgz = tmp_path / "mobilenet_v1_0.25_128_frozen.tgz"
    shutil.copy(fixture_path("official", "mobilenet_v1_0.25_128_frozen.tgz"), tgz)
    with open(tgz, "r+b") as f:
        f.truncate(os.path.getsize(tgz) // 2)
    with pytest.raises(ValueError, match="truncated or corrupt"):
        read_slim(str(tgz))


def test_corrupt_and_folded_graphs_are_errors(tmp_path):
    junk = tmp_path / "junk.pb"
    junk.write_bytes(b"\xff" * 64)
    with pytest.raises(ValueError, match="not a frozen TensorFlow GraphDef"):
        read_slim(str(junk))
    with tarfile.open(fixture_path("official", "mobilenet_v1_0.25_128_frozen.tgz")) as tar:
        data = tar.extractfile("mobilenet_v1_0.25_128/quantized_graph.pb").read()
    folded = tmp_path / "quantized_graph.pb"
    folded.write_bytes(data)
    with pytest.raises(ValueError, match="quantized_graph.pb cannot be read"):
        read_slim(str(folded))


# ----- inference -----
@pytest.mark.parametrize("alpha", [0.25, 0.5, 0.75])
def test_depth_multiplier_and_classes_are_inferred(tmp_path, alpha):
    model = _tiny(depth_multiplier=alpha, num_labels=7)
    prefix = save_slim_checkpoint(model, str(tmp_path / "anon.ckpt"))
    cfg = read_slim(prefix).infer_config()
    assert (cfg.depth_multiplier, cfg.num_labels, cfg.num_channels) == (alpha, 7, 3)
    assert cfg.image_size == 224  # nothing names a resolution: the default


def test_misnamed_alpha_warns_and_uses_tensors(tmp_path):
    prefix = save_slim_checkpoint(_tiny(), str(tmp_path / "mobilenet_v1_0.5_96.ckpt"))
    with pytest.warns(UserWarning, match="named for depth multiplier 0.5"):
        cfg = read_slim(prefix).infer_config()
    assert cfg.depth_multiplier == 0.25 and cfg.image_size == 96


# ----- writing -----
def test_slim_keras_slim_is_bit_exact(tmp_path):
    model = MobileNetV1ForImageClassification.from_pretrained(_ckpt())
    out = save_slim_checkpoint(model, str(tmp_path / "again.ckpt"))
    original, written = read_checkpoint(_ckpt()), read_checkpoint(out)
    assert set(original) == set(written)
    for name in slim_name_map():
        assert written[name].dtype == original[name].dtype == np.float32
        np.testing.assert_array_equal(written[name], original[name], err_msg=name)
    assert sorted(os.listdir(tmp_path)) == ["again.ckpt" + DATA_SUFFIX, "again.ckpt.index"]


def test_keras_slim_keras_is_bit_exact(tmp_path):
    model = _tiny(seed=3)
    prefix = save_slim_checkpoint(model, str(tmp_path / "mobilenet_v1_0.25_32.ckpt"))
    again = MobileNetV1ForImageClassification.from_pretrained(prefix)
    assert again.config.num_labels == 5 and again.config.image_size == 32
    for a, b in zip(model.weights, again.weights, strict=True):
        assert a.path == b.path
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    backbone = MobileNetV1Model(model.config)
    randomize(backbone, 4)
    prefix = save_slim_checkpoint(backbone, str(tmp_path / "base.ckpt"))
    assert "MobilenetV1/Logits/Conv2d_1c_1x1/weights" not in read_checkpoint(prefix)


def test_writer_strips_index_and_refuses_bad_models(tmp_path):
    model = _tiny()
    dst = str(tmp_path / "w.ckpt")
    save_slim_checkpoint(model, dst)
    save_slim_checkpoint(_tiny(seed=9), dst + ".index", force=True)  # .index is stripped
    np.testing.assert_array_equal(
        read_checkpoint(dst)["MobilenetV1/Conv2d_0/weights"],
        _tiny(seed=9).get_layer("Conv2d_0").conv.kernel.numpy())
    with pytest.raises(ValueError, match="batch-norm-folded"):
        save_slim_checkpoint(model.folded(), str(tmp_path / "f.ckpt"))
    partial = MobileNetV1Model(model.config, feature_layers=["Conv2d_5_pointwise"])
    with pytest.raises(ValueError, match="not a complete MobileNet V1"):
        save_slim_checkpoint(partial, str(tmp_path / "p.ckpt"))
    assert sorted(os.listdir(tmp_path)) == ["w.ckpt" + DATA_SUFFIX, "w.ckpt.index"]

