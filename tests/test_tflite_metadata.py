"""TFLite metadata: our writer's flatbuffer read back field by field, compared with Google's
hosted model (the fixture with metadata), packing, and the validator's refusals.

The real clients (Task Library, MediaPipe) reading these files: tests/test_clients.py.
"""

import os

import numpy as np
import pytest
from conftest import fixture_path, require_module
from tf_mobilenet_v1.converters import tflite as tfl
from tf_mobilenet_v1.converters import tflite_metadata as tfm

require_module("ai_edge_litert")

SIZE = 64
GOOGLE = ("tflite", "mobilenet_v1_0.25_224_1_metadata_1.tflite")


@pytest.fixture(scope="module")
def tiny(tiny64):
    return tiny64


@pytest.fixture(scope="module")
def models(tiny64_tflite):
    return {"float": tiny64_tflite["none_probs"], "uint8": tiny64_tflite["int8_probs"],
            "logits": tiny64_tflite["none"], "features": tiny64_tflite["features"]}


def test_round_trip_of_every_field():
    meta = tfm.ModelMeta(
        name="n", description="d", version="v", author="a", license="l",
        inputs=[tfm.TensorMeta("image", "in", content="image", image_size=(40, 30),
                               mean=[1.0, 2.0, 3.0], std=[4.0, 5.0, 6.0],
                               stats_min=[-1.0], stats_max=[1.0])],
        outputs=[tfm.TensorMeta("out", "o", stats_min=[0.0], stats_max=[1.0],
                                files=[tfm.AssociatedFile("labels.txt", "names")])])
    raw = tfm.build_metadata(meta)
    assert raw[4:8] == b"M001"  # the schema's file identifier
    model = tfm.populate(_plain_model(), raw, {"labels.txt": b"a\nb\n"})
    got = tfm.read_metadata(model)
    assert {k: got[k] for k in ("name", "description", "version", "author", "license",
                                "min_parser_version")} == {
        "name": "n", "description": "d", "version": "v", "author": "a", "license": "l",
        "min_parser_version": "1.0.0"}
    (inp,), (out,) = got["inputs"], got["outputs"]
    assert inp == {"name": "image", "description": "in", "content": "ImageProperties",
                   "color_space": "RGB", "default_size": (40, 30),
                   "normalization": {"mean": [1.0, 2.0, 3.0], "std": [4.0, 5.0, 6.0]},
                   "stats": {"max": [1.0], "min": [-1.0]}, "associated_files": []}
    assert out["content"] == "FeatureProperties" and "normalization" not in out
    assert out["associated_files"] == [{"name": "labels.txt", "description": "names",
                                        "type": "TENSOR_AXIS_LABELS"}]
    assert got["packed_files"] == {"labels.txt": b"a\nb\n"}


def _plain_model() -> bytes:
    """A one-op TFLite model without metadata."""
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([1, 4], tf.float32)])
    def f(x):
        return {"y": tf.nn.relu(x)}

    return tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()],
                                                           tf.Module()).convert()


def test_float_classifier_metadata_has_what_clients_need(tiny, models):
    meta = tfm.validate(models["float"])
    assert meta["name"] == "MobileNet V1 image classifier (mobilenet_v1_0.25_64)"
    assert meta["version"].startswith("tf_mobilenet_v1 ") and "Apache" in meta["license"]
    assert meta["author"] and "1001 categories" in meta["description"]
    assert meta["min_parser_version"] == "1.0.0"
    (inp,), (out,) = meta["inputs"], meta["outputs"]
    assert inp["content"] == "ImageProperties" and inp["color_space"] == "RGB"
    assert inp["default_size"] == (SIZE, SIZE)
    assert inp["normalization"] == {"mean": [127.5], "std": [127.5]}
    assert inp["stats"] == {"max": [1.0], "min": [-1.0]}
    assert out["name"] == "probability" and out["stats"] == {"max": [1.0], "min": [0.0]}
    assert out["associated_files"][0]["type"] == "TENSOR_AXIS_LABELS"
    packed = meta["packed_files"]["labels.txt"].decode().splitlines()
    assert packed == [tiny.config.id2label[i] for i in range(1001)]
    labels = os.path.join(os.path.dirname(models["float"]), "labels.txt")
    assert open(labels, encoding="utf-8").read().splitlines() == packed


def test_same_structure_as_googles_hosted_model(models):
    """Every field Google's own metadata sets, ours sets the same way."""
    theirs = tfm.read_metadata(fixture_path(*GOOGLE))
    ours = tfm.read_metadata(models["float"])
    for t_key in ("inputs", "outputs"):
        (t,), (o,) = theirs[t_key], ours[t_key]
        for key in ("content", "color_space", "normalization", "stats"):
            assert (key in t) == (key in o) and t.get(key) == o.get(key), (t_key, key)
        assert [f["type"] for f in t["associated_files"]] == \
            [f["type"] for f in o["associated_files"]]
    assert set(theirs["packed_files"]) == set(ours["packed_files"]) == {"labels.txt"}


def test_uint8_input_has_no_normalization(models):
    (inp,), (out,) = (m := tfm.validate(models["uint8"]))["inputs"], m["outputs"]
    assert "normalization" not in inp and inp["stats"] == {"max": [255.0], "min": [0.0]}
    assert out["stats"] == {"max": [1.0], "min": [0.0]}
    assert "full-integer int8" in m["description"]


def test_logits_and_feature_vector_metadata(models):
    (out,) = tfm.validate(models["logits"])["outputs"]
    assert out["name"] == "logits" and "stats" not in out
    assert out["associated_files"][0]["name"] == "labels.txt"
    meta = tfm.validate(models["features"])
    assert meta["name"].startswith("MobileNet V1 feature vector")
    (out,) = meta["outputs"]
    assert out["name"] == "feature_vector" and out["associated_files"] == []
    assert meta["packed_files"] == {}
    assert meta["inputs"][0]["normalization"] == {"mean": [127.5], "std": [127.5]}


def test_metadata_does_not_change_the_model(models, tiny):
    from tf_mobilenet_v1.converters.tflite_inspect import run_tflite, tflite_op_names

    with open(models["float"], "rb") as f:
        data = f.read()
    again = tfm.populate(data, tfm.build_metadata(tfm.ModelMeta(name="other")), {})
    assert tfm.read_metadata(again)["name"] == "other"  # replaced, not added
    from tensorflow.lite.python import schema_py_generated as schema

    entries = [e.name for e in schema.ModelT.InitFromPackedBuf(bytearray(again), 0).metadata]
    assert entries.count(b"TFLITE_METADATA") == 1
    x = np.random.default_rng(2).uniform(-1, 1, (2, SIZE, SIZE, 3)).astype(np.float32)
    np.testing.assert_array_equal(run_tflite(again, x), run_tflite(data, x))
    assert tflite_op_names(again) == tflite_op_names(data)


def test_overrides_and_refusals(tiny, tmp_path):
    path = tfl.export_tflite(tiny, tmp_path / "m.tflite",
                             metadata={"author": "me", "license": "CC-BY-4.0"})
    meta = tfm.read_metadata(path)
    assert (meta["author"], meta["license"]) == ("me", "CC-BY-4.0")
    with pytest.raises(ValueError, match="unknown metadata field"):
        tfl.export_tflite(tiny, tmp_path / "x.tflite", metadata={"colour": "red"})
    assert sorted(os.listdir(tmp_path)) == ["labels.txt", "m.tflite"]

    plain = _plain_model()
    assert tfm.read_metadata(plain) is None
    with pytest.raises(ValueError, match="no TFLITE_METADATA"):
        tfm.validate(plain)
    missing = tfm.populate(plain, tfm.build_metadata(tfm.ModelMeta(
        name="m", inputs=[tfm.TensorMeta("x")],
        outputs=[tfm.TensorMeta("y", files=[tfm.AssociatedFile("labels.txt")])])), {})
    with pytest.raises(ValueError, match="not packed"):
        tfm.validate(missing)
    wrong_count = tfm.populate(plain, tfm.build_metadata(tfm.ModelMeta(name="m")), {})
    with pytest.raises(ValueError, match="tensor counts"):
        tfm.validate(wrong_count)
