"""TFLite export: numerics per weight mode, lean op lists, GPU-delegate checks, labels, safety,
probabilities / logits / feature-vector outputs, dynamic batch.

Fast tests use a tiny random model (depth 0.25, 64 px); the slow ones use the official
0.25_128 weights and the fixture photos.
"""

import os
import zipfile

import numpy as np
import pytest
import tensorflow as tf
from conftest import cli, fixture_path, require_module, tiny_model
from tf_mobilenet_v1.converters import tflite as tfl
from tf_mobilenet_v1.converters.export import default_output, export
from tf_mobilenet_v1.converters.tflite_inspect import (
    gpu_compatibility,
    gpu_delegate_problems,
    op_counts,
    run_tflite,
    tflite_io,
    tflite_op_names,
    tflite_ops,
)

from tf_mobilenet_v1 import MobileNetV1ForImageClassification
from tf_mobilenet_v1.architecture import layer_specs

require_module("ai_edge_litert")

SIZE = 64
LEAN_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "MEAN", "AVERAGE_POOL_2D", "RESHAPE", "SOFTMAX"}
BN_OR_ACTIVATION_OPS = {"MUL", "ADD", "SUB", "RSQRT", "RELU6", "RELU", "MINIMUM", "MAXIMUM"}


def _tiny(seed=0, **fields):
    return tiny_model(seed=seed, image_size=SIZE, **fields)


def _inputs(n=4, size=SIZE, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (n, size, size, 3)).astype(np.float32)


def _expected_conv_counts(config):
    """CONV_2D / DEPTHWISE_CONV_2D counts derived from the architecture table (+1 for Logits)."""
    specs = layer_specs(config)
    return {"CONV_2D": sum(s.kind != "depthwise" for s in specs) + 1,
            "DEPTHWISE_CONV_2D": sum(s.kind == "depthwise" for s in specs)}


def _quantize_input(x, info):
    """Float [-1, 1] inputs -> the integer input tensor of a full-int8 model."""
    lo, hi = (0, 255) if info.dtype == "uint8" else (-128, 127)
    return np.clip(np.round(x / info.scale + info.zero_point), lo, hi).astype(info.dtype)


def _run_float_io(path, x):
    """Run a model of any I/O type on float inputs; return float (dequantized) outputs."""
    (inp,), (out,) = tflite_io(path)
    xin = x if inp.dtype == "float32" else _quantize_input(x, inp)
    y = run_tflite(path, xin).astype(np.float32)
    return (y - out.zero_point) * out.scale if out.scale else y


@pytest.fixture(scope="module")
def tiny(tiny64):
    return tiny64


def _softmax(z):
    z = np.asarray(z, np.float64)
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.fixture(scope="module")
def exported(tiny64_tflite):
    return tiny64_tflite


# ----- float32: exact, lean graph, GPU-friendly -----

def test_float32_matches_keras(tiny, exported):
    x = _inputs()
    y = run_tflite(exported["none"], x)
    ref = tiny.predict(x, verbose=0)
    assert y.shape == ref.shape == (4, 1001)
    assert np.abs(y - ref).max() < 1e-4


def test_float32_graph_is_lean_with_tf_padding(tiny, exported):
    ops = tflite_ops(exported["none"])
    names = {op.name for op in ops}
    assert names <= LEAN_OPS, names - LEAN_OPS
    assert "PAD" not in names and not names & BN_OR_ACTIVATION_OPS  # BN folded, ReLU6 fused
    counts = op_counts(exported["none"])
    for op, n in _expected_conv_counts(tiny.config).items():
        assert counts[op] == n
    convs = [op for op in ops if op.name in ("CONV_2D", "DEPTHWISE_CONV_2D")]
    # Every backbone layer carries its ReLU6; the last op (Logits) has no activation.
    assert [op.fused_activation for op in convs[:-1]] == ["RELU6"] * (len(convs) - 1)
    assert convs[-1].fused_activation == "NONE"


def test_default_output_is_probabilities(tiny, exported):
    """Softmax in the graph, as Google's hosted models: within 1e-4 of Keras's softmax."""
    x = _inputs()
    y = run_tflite(exported["none_probs"], x)
    ref = _softmax(tiny.predict(x, verbose=0))
    assert np.abs(y - ref).max() < 1e-4
    np.testing.assert_allclose(y.sum(-1), 1, atol=1e-5)
    assert tflite_op_names(exported["none_probs"])[-1] == "SOFTMAX"
    (_,), (out,) = tflite_io(exported["none_probs"])
    assert out.name == "probabilities" and tflite_io(exported["none"])[1][0].name == "logits"


def test_int8_probabilities_are_quantized_scores(tiny, exported):
    (_,), (out,) = tflite_io(exported["int8_probs"])
    assert out.dtype == "uint8" and out.scale == pytest.approx(1 / 256) and out.zero_point == 0
    x = _inputs(8, seed=5)
    y = _run_float_io(exported["int8_probs"], x)
    # A random model's ~1/1001 scores sit below one step (1/256): each within two steps.
    # (Sums near 1 on real photos: test_official_int8_top1_agreement and tests/test_clients.)
    ref = _softmax(tiny.predict(x, verbose=0))
    assert np.abs(y - ref).max() < 2 / 256


@pytest.mark.parametrize("mode", ["none", "float16", "dynamic", "int8", "none_probs",
                                  "int8_probs"])
def test_every_mode_has_only_gpu_delegate_ops(exported, mode):
    """Every op of every mode is one the delegate takes; the float-I/O modes are GPU models,
    int8 with its default uint8 I/O is not (the delegate's GL path feeds float32 only:
    tests/test_gpu_delegate.py runs both on the real delegate)."""
    assert gpu_delegate_problems(exported[mode]) == []
    verdict = gpu_compatibility(exported[mode])
    if mode.startswith("int8"):
        assert not verdict.compatible and verdict.problems == verdict.io_problems
        assert len(verdict.io_problems) == 2 and "'pixel_values' UINT8" in verdict.io_problems[0]
        assert str(verdict).startswith("NOT for the TFLite GPU delegate: uint8 input and uint8 "
                                       "output")
        assert "--quantize int8 --io-type float32" in str(verdict)
    else:
        assert verdict.compatible, verdict.problems
        assert verdict.io_problems == ()
        assert str(verdict) == ("compatible with the TFLite GPU delegate (every op, float32 "
                                "input and output)")


def test_gpu_check_flags_unsupported_ops():
    """The checker is not vacuous: ops and types the delegate rejects are reported."""

    @tf.function(input_signature=[tf.TensorSpec([1, 8], tf.float32)])
    def f(x):
        return tf.argmax(x, -1), tf.math.top_k(x, 3).values

    content = tf.lite.TFLiteConverter.from_concrete_functions(
        [f.get_concrete_function()], tf.Module()).convert()
    verdict = gpu_compatibility(content)
    assert not verdict.compatible
    text = " ".join(verdict.problems)
    assert "ARG_MAX" in text and "TOPK_V2" in text and "INT64" in text
    assert "NOT compatible" in str(verdict)


def test_google_tflite_fixture_gpu_check():
    """Google's 2018 export ends in SQUEEZE, which the delegate leaves to the CPU; ours uses
    RESHAPE instead, so our graphs are delegated whole."""
    path = fixture_path("tflite", "mobilenet_v1_0.25_224_1_default_1.tflite")
    problems = gpu_delegate_problems(path)
    assert len(problems) == 1 and "SQUEEZE" in problems[0]
    assert "SQUEEZE" in tflite_op_names(path)
    # TensorFlow's analyzer calls this model compatible; the verdict no longer asks it.
    assert gpu_compatibility(path).problems == tuple(problems)


def test_tf_padding_false_keeps_pads_and_stays_exact_and_gpu_compatible(tmp_path):
    model = _tiny(seed=3, tf_padding=False)
    path = tfl.export_tflite(model, tmp_path / "m.tflite", outputs="logits")
    names = tflite_op_names(path)
    assert "PAD" in names and set(names) <= LEAN_OPS | {"PAD"}
    assert not set(names) & BN_OR_ACTIVATION_OPS
    assert gpu_compatibility(path).compatible
    x = _inputs(2)
    assert np.abs(run_tflite(path, x) - model.predict(x, verbose=0)).max() < 1e-4


# ----- quantized modes -----

def test_quantized_sizes_and_agreement(tiny, exported):
    size = {m: os.path.getsize(exported[m]) for m in ("none", "float16", "dynamic", "int8")}
    assert 0.45 < size["float16"] / size["none"] < 0.55
    assert 0.2 < size["dynamic"] / size["none"] < 0.35
    assert 0.2 < size["int8"] / size["none"] < 0.35
    x = _inputs(8, seed=5)
    ref = tiny.predict(x, verbose=0)
    scale = np.abs(ref).max()
    assert np.abs(_run_float_io(exported["float16"], x) - ref).max() < 1e-2 * scale
    assert np.abs(_run_float_io(exported["dynamic"], x) - ref).max() < 0.1 * scale
    int8 = _run_float_io(exported["int8"], x)
    assert np.corrcoef(int8.ravel(), ref.ravel())[0, 1] > 0.95


def test_float16_stores_half_precision_weights(exported):
    assert "DEQUANTIZE" in tflite_op_names(exported["float16"])
    (inp,), (out,) = tflite_io(exported["float16"])
    assert inp.dtype == out.dtype == "float32"  # float interface, fp16 weights inside


@pytest.mark.parametrize("io_type", ["uint8", "int8", "float32"])
def test_int8_io_types(tiny, tmp_path, io_type):
    path = tfl.export_tflite(tiny, tmp_path / "m.tflite", quantize="int8", io_type=io_type,
                             calibration_images=_inputs(8, seed=2))
    (inp,), (out,) = tflite_io(path)
    assert inp.dtype == out.dtype == io_type
    assert inp.shape == (1, SIZE, SIZE, 3) and out.shape == (1, 1001)
    if io_type != "float32":
        # [-1, 1] maps onto the full integer range: one step per pixel value.
        assert inp.scale == pytest.approx(2 / 255, rel=1e-3)
    verdict = gpu_compatibility(path)
    assert verdict.compatible == (io_type == "float32"), verdict.problems
    if io_type != "float32":
        assert f"{io_type} input and {io_type} output" in str(verdict)


def test_int8_calibrates_on_an_image_directory(tiny, tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    for i in range(3):
        arr = rng.integers(0, 256, (50 + 10 * i, 70, 3), dtype=np.uint8)
        Image.fromarray(arr).save(photos / ("sub" if i else "") / f"p{i}.png")
    arrays = list(tfl.calibration_arrays(photos, SIZE))
    assert len(arrays) == 3 and all(a.shape == (1, SIZE, SIZE, 3) for a in arrays)
    assert all(-1 <= a.min() and a.max() <= 1 for a in arrays)
    path = tfl.export_tflite(tiny, tmp_path / "m.tflite", quantize="int8",
                             calibration_images=photos)
    assert tflite_io(path)[0][0].dtype == "uint8"


@pytest.mark.parametrize("kwargs, match", [
    (dict(quantize="float16", io_type="uint8"), "needs full-integer"),
    (dict(quantize="int8"), "calibration"),
    (dict(quantize="int4"), "unknown quantize"),
    (dict(quantize="int8", io_type="int16", calibration_images=np.zeros((1, 64, 64, 3))),
     "unknown io_type"),
    (dict(quantize="dynamic", calibration_images=np.zeros((1, 64, 64, 3))), "only used"),
])
def test_bad_options_are_refused(tiny, tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        tfl.export_tflite(tiny, tmp_path / "m.tflite", **kwargs)
    assert os.listdir(tmp_path) == []


def test_empty_calibration_directory_is_refused(tiny, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        tfl.export_tflite(tiny, tmp_path / "m.tflite", quantize="int8",
                          calibration_images=tmp_path / "empty")
    assert sorted(os.listdir(tmp_path)) == ["empty"]


# ----- sizes, shapes, labels, safety -----

@pytest.mark.slow  # real exports: seconds
def test_image_size_override(tmp_path):
    pooled = _tiny(seed=4)  # global_pool=True: any size
    path = tfl.export_tflite(pooled, tmp_path / "a.tflite", image_size=96, outputs="logits")
    assert tflite_io(path)[0][0].shape == (1, 96, 96, 3)
    x = _inputs(1, size=96)
    assert np.abs(run_tflite(path, x) - pooled.predict(x, verbose=0)).max() < 1e-4

    fixed = _tiny(seed=4, global_pool=False)  # slim's fixed pool: rebuilt at the new size
    path = tfl.export_tflite(fixed, tmp_path / "b.tflite", image_size=32)
    assert tflite_io(path)[0][0].shape == (1, 32, 32, 3)
    assert "AVERAGE_POOL_2D" in tflite_op_names(path)
    with pytest.raises(ValueError, match="spatial logits"):
        tfl.export_tflite(fixed, tmp_path / "c.tflite", image_size=512)


def test_labels_file_written_and_matches_the_android_fixture(tiny, exported):
    labels = os.path.join(os.path.dirname(exported["none"]), "labels.txt")
    lines = open(labels, encoding="utf-8").read().splitlines()
    assert lines == [tiny.config.id2label[i] for i in range(1001)]
    # The Task Library model packs a labels.txt (short names) as a zip after the flatbuffer.
    fixture = fixture_path("tflite", "mobilenet_v1_0.25_224_1_metadata_1.tflite")
    theirs = zipfile.ZipFile(fixture).read("labels.txt").decode().splitlines()
    assert [name.split(",")[0] for name in lines] == theirs
    # Ours packs the same file the same way (stored, so clients read it in place).
    for key in ("none", "none_probs", "int8_probs"):
        with zipfile.ZipFile(exported[key]) as z:
            (info,) = z.infolist()
            assert info.filename == "labels.txt" and info.compress_type == zipfile.ZIP_STORED
            assert z.read(info).decode().splitlines() == lines


# ----- feature vector, dynamic batch -----

def _pooled(model, x):
    """Keras's own AvgPool_1a output, flattened: what a feature vector must be."""
    import keras

    sub = keras.Model(model.inputs[0], model.get_layer("AvgPool_1a").output)
    return np.asarray(sub(x, training=False)).reshape(len(x), -1)


def test_feature_vector_matches_keras_pooled_features(tiny, tmp_path):
    name = tfl.default_tflite_name("none", task="feature-vector")
    path = tfl.export_tflite(tiny, tmp_path / name, task="feature-vector")
    assert os.path.basename(path) == "feature_vector_float32.tflite"
    x = _inputs(3)
    y = run_tflite(path, x)
    assert y.shape == (3, 256)
    assert np.abs(y - _pooled(tiny, x)).max() < 1e-4
    assert not os.path.exists(tmp_path / "labels.txt")  # features have no labels
    assert set(tflite_op_names(path)) <= LEAN_OPS - {"SOFTMAX"}
    assert gpu_compatibility(path).compatible
    (_,), (out,) = tflite_io(path)
    assert out.name == "features"
    with pytest.raises(ValueError, match="--outputs applies to classifiers"):
        tfl.export_tflite(tiny, tmp_path / "x.tflite", task="feature-vector", outputs="logits")
    with pytest.raises(ValueError, match="unknown task"):
        tfl.export_tflite(tiny, tmp_path / "x.tflite", task="embedding")
    assert not os.path.exists(tmp_path / "x.tflite")


def test_feature_vector_of_a_users_fine_tune(tmp_path):
    """keras.applications-style fine-tune: the features of its (fine-tuned) backbone."""
    import keras

    from tf_mobilenet_v1 import MobileNetV1Model
    from tf_mobilenet_v1.applications import MobileNetV1

    base = MobileNetV1(include_top=False, weights=None, alpha=0.25,
                       input_shape=(SIZE, SIZE, 3), pooling="avg")
    user = keras.Model(base.inputs, keras.layers.Dense(3, name="head")(base.outputs[0]))
    inner = next(layer for layer in base.layers if isinstance(layer, MobileNetV1Model))
    x = _inputs(2, seed=7)
    path = tfl.export_tflite(user, tmp_path / "f.tflite", task="feature-vector")
    expected = np.asarray(inner(x)["pooler_output"])
    assert np.abs(run_tflite(path, x) - expected).max() < 1e-4
    probs = tfl.export_tflite(user, tmp_path / "p.tflite")
    assert np.abs(run_tflite(probs, x) - _softmax(user.predict(x, verbose=0))).max() < 1e-4


def test_dynamic_batch_resizes_and_stays_lean(tiny, tmp_path):
    from tf_mobilenet_v1.converters.tflite_inspect import make_interpreter

    path = tfl.export_tflite(tiny, tmp_path / "m.tflite", dynamic_batch=True)
    assert set(tflite_op_names(path)) <= LEAN_OPS  # no SHAPE / PACK for the batch size
    assert gpu_compatibility(path).compatible
    interp = make_interpreter(path)
    (inp,), (out,) = interp.get_input_details(), interp.get_output_details()
    assert list(inp["shape_signature"]) == [-1, SIZE, SIZE, 3]
    x = _inputs(5, seed=3)
    interp.resize_tensor_input(inp["index"], x.shape)
    interp.allocate_tensors()
    interp.set_tensor(inp["index"], x)
    interp.invoke()
    y = interp.get_tensor(out["index"])
    assert y.shape == (5, 1001)
    assert np.abs(y - _softmax(tiny.predict(x, verbose=0))).max() < 1e-4
    # The default stays batch 1, what phones run.
    fixed = make_interpreter(tfl.export_tflite(tiny, tmp_path / "b1.tflite"))
    assert list(fixed.get_input_details()[0]["shape_signature"]) == [1, SIZE, SIZE, 3]


def test_backbone_is_refused(tmp_path):
    from tf_mobilenet_v1 import MobileNetV1Model

    with pytest.raises(ValueError, match="MobileNetV1ForImageClassification"):
        tfl.export_tflite(MobileNetV1Model(depth_multiplier=0.25), tmp_path / "m.tflite")


# ----- export() and the CLI -----

def test_export_default_path_and_summary(tiny, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    out = export(tiny, quantize="float16")
    assert out == default_output("mobilenet_v1_0.25_64", "tflite", "float16")
    assert out == os.path.join("saved_models", "mobilenet_v1_0.25_64", "model_float16.tflite")
    summary = capsys.readouterr().out
    assert "GPU delegate: compatible" in summary and "CONV_2D x15" in summary
    assert "runs whole on it in MediaPipe's GPU mode" in summary
    assert "(pixel - 127.5) / 127.5" in summary
    assert "output:  probabilities float32[1, 1001]" in summary
    assert "metadata: 'MobileNet V1 image classifier (mobilenet_v1_0.25_64)'" in summary
    assert "mean [127.5] std [127.5], packed: labels.txt" in summary


@pytest.mark.parametrize("io_type", ["uint8", "int8"])
def test_int8_summary_sends_gpus_elsewhere(exported, io_type, tmp_path, tiny):
    """With integer I/O the summary says the model is not for GPUs and what to export instead;
    the input line says what the integers stand for."""
    from tf_mobilenet_v1.converters.export import tflite_summary

    path = exported["int8"] if io_type == "uint8" else tfl.export_tflite(
        tiny, tmp_path / "m.tflite", quantize="int8", io_type="int8",
        calibration_images=_inputs(8, seed=2))
    summary = tflite_summary(path, "v", "int8")
    assert f"GPU delegate: NOT for the TFLite GPU delegate: {io_type} input" in summary
    assert "this model is for the CPU, NNAPI or an Edge TPU" in summary
    assert "for GPUs export --quantize float16, or --quantize int8 --io-type float32" in summary
    assert "runs whole on it" not in summary
    assert ("raw RGB pixels" if io_type == "uint8" else "RGB normalized to [-1, 1]") in summary


@pytest.mark.slow  # real exports: seconds
def test_cli_export_force_options_and_refusals(tiny, tmp_path, monkeypatch, capsys):
    keras_file = tmp_path / "tiny.keras"
    tiny.save(keras_file)
    monkeypatch.chdir(tmp_path)
    assert cli("export", str(keras_file), "model.tflite").returncode == 0
    assert "wrote model.tflite" in capsys.readouterr().out
    assert cli("export", str(keras_file), "model.tflite").returncode == 1
    assert "already exists" in capsys.readouterr().err
    assert cli("export", str(keras_file), "model.tflite", "--force").returncode == 0
    assert cli("export", str(keras_file), "x.tflite", "--quantize", "int8").returncode == 1
    assert "calibration" in capsys.readouterr().err
    assert not os.path.exists("x.tflite")

    assert cli("export", str(keras_file), "--outputs", "logits", "--dynamic-batch").returncode == 0
    summary = capsys.readouterr().out
    assert "model_float32_logits.tflite" in summary and "output:  logits float32" in summary
    # Named after the source file, never the official model's folder (saved_models/<variant>).
    assert os.path.isfile(os.path.join("saved_models", "tiny", "model_float32_logits.tflite"))
    assert cli("export", str(keras_file), "--task", "feature-vector").returncode == 0
    summary = capsys.readouterr().out
    assert "feature_vector_float32.tflite" in summary and "features float32[1, 256]" in summary
    assert "labels:" not in summary  # beside the classifier's labels.txt, but it has none
    assert cli("export", keras_file, "y.tflite", "--task", "feature-vector",
               "--outputs", "logits").returncode == 1
    assert "--outputs applies to classifiers" in capsys.readouterr().err
    assert not os.path.exists("y.tflite")


# ----- official weights (slow) -----

@pytest.fixture(scope="module")
def official():
    path = fixture_path("official", "mobilenet_v1_0.25_128")
    model = MobileNetV1ForImageClassification.from_pretrained(str(path))
    ref = np.load(path / "reference_logits.npz")
    return model, ref["inputs"], ref["logits"]


@pytest.fixture(scope="module")
def official_exports(official, tmp_path_factory):
    model = official[0]
    root = tmp_path_factory.mktemp("official")
    images = fixture_path("images")
    return {mode: tfl.export_tflite(model, root / tfl.default_tflite_name(mode), quantize=mode,
                                    calibration_images=images if mode == "int8" else None)
            for mode in ("none", "float16", "dynamic", "int8")}


@pytest.mark.slow
def test_official_float32_matches_keras_and_reference(official, official_exports, tmp_path):
    model, x, ref_logits = official
    keras_logits = model.predict(x, verbose=0)
    probs = run_tflite(official_exports["none"], x)
    assert np.abs(probs - _softmax(keras_logits)).max() < 1e-4
    assert np.abs(probs - _softmax(ref_logits)).max() < 1e-4
    y = run_tflite(tfl.export_tflite(model, tmp_path / "logits.tflite", outputs="logits"), x)
    assert np.abs(y - keras_logits).max() < 1e-4
    assert np.abs(y - ref_logits).max() < 1e-4


@pytest.mark.slow
def test_official_float16_same_top1(official, official_exports):
    model, x, _ = official
    y = run_tflite(official_exports["float16"], x)
    assert (y.argmax(-1) == model.predict(x, verbose=0).argmax(-1)).all()


@pytest.mark.slow
def test_official_int8_top1_agreement(official, official_exports):
    model, x, _ = official
    y = _run_float_io(official_exports["int8"], x)  # uint8 probabilities, dequantized
    agree = (y.argmax(-1) == model.predict(x, verbose=0).argmax(-1)).sum()
    assert agree >= 3, f"int8 top-1 agrees on {agree}/4 photos"
    np.testing.assert_allclose(y.sum(-1), 1, atol=0.1)


@pytest.mark.slow
def test_official_sizes_and_structure(official_exports):
    size = {m: os.path.getsize(p) for m, p in official_exports.items()}
    assert 0.45 < size["float16"] / size["none"] < 0.55
    assert 0.2 < size["int8"] / size["none"] < 0.33
    assert 0.2 < size["dynamic"] / size["none"] < 0.33
    # Same convolution structure as Google's own TFLite MobileNet V1 (BN folded, ReLU6 fused).
    google = op_counts(fixture_path("tflite", "mobilenet_v1_0.25_224_1_default_1.tflite"))
    ours = op_counts(official_exports["none"])
    for op in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        assert ours[op] == google[op]
    for mode, path in official_exports.items():
        assert gpu_delegate_problems(path) == [], mode
        assert gpu_compatibility(path).compatible == (mode != "int8"), mode  # uint8 I/O


def test_metadata_names_a_fine_tuned_models_classes(tmp_path):
    """A 10-class model's metadata says so (it is not Google's 1001-class model)."""
    from tf_mobilenet_v1.converters.tflite_metadata import read_metadata

    model = tiny_model(num_labels=10)
    path = tfl.export_tflite(model, tmp_path / "m.tflite")
    assert read_metadata(open(path, "rb").read())["name"] == \
        "MobileNet V1 image classifier (mobilenet_v1_0.25_32, 10 classes)"


@pytest.mark.slow
def test_int8_with_a_handful_of_calibration_photos_warns(tiny, tmp_path):
    photos = tmp_path / "cal"
    photos.mkdir()
    for i, name in enumerate(("cat.bmp", "bird.bmp", "burger.jpg", "grace_hopper.bmp")):
        (photos / f"{i}_{name}").write_bytes(fixture_path("images", name).read_bytes())
    tiny.save(tmp_path / "m.keras")
    run = cli("export", tmp_path / "m.keras", tmp_path / "q.tflite", "--quantize", "int8",
              "--calibration-dir", photos, keep_warnings=True)
    assert run.returncode == 0, run.stderr
    assert "mobilenet-v1: warning: int8 calibration on 4 image(s) only" in run.stderr


def test_unreadable_calibration_images_are_skipped_and_said_once(tmp_path):
    """A FIFO and a text file among the calibration photos: skipped (one warning naming
    them), the readable ones calibrate; only a folder with nothing readable stops."""
    from tf_mobilenet_v1.converters.tflite import calibration_arrays

    folder = tmp_path / "cal"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(fixture_path("images", "burger.jpg").read_bytes())
    (folder / "b.png").write_text("not an image")
    os.mkfifo(folder / "c.jpg")
    with pytest.warns(UserWarning, match=r"skipped 2 unreadable calibration image\(s\)") as w:
        arrays = list(calibration_arrays(folder, 32))
    assert len(arrays) == 1 and arrays[0].shape == (1, 32, 32, 3)
    assert "; skipped" not in str(w[0].message)
    (folder / "a.jpg").unlink()
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="no calibration images"):
        list(calibration_arrays(folder, 32))
