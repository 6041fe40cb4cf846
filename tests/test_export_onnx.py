"""ONNX export (tf2onnx) run by onnxruntime: logits within 1e-4 of Keras, dynamic batch,
feature vectors, and the CLI."""

import os

import numpy as np
import pytest
from conftest import cli, fixture_path, require_module, tiny_model
from tf_mobilenet_v1.converters.onnx_export import export_onnx, run_onnx

pytestmark = pytest.mark.onnx


@pytest.fixture(autouse=True, scope="module")
def _onnx_installed():
    require_module("tf2onnx")
    require_module("onnxruntime")

SIZE = 64


def _inputs(n, size=SIZE, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (n, size, size, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def tiny():
    return tiny_model(image_size=SIZE)


def test_tiny_logits_probabilities_and_any_batch(tiny, tmp_path):
    import onnx

    path = export_onnx(tiny, tmp_path / "m.onnx")
    graph = onnx.load(path).graph
    assert [i.name for i in graph.input] == ["pixel_values"]
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"  # any batch
    # Batch norm folded into the convolutions: no BatchNormalization / Mul / Add nodes.
    ops = {n.op_type for n in graph.node}
    assert "Conv" in ops and not ops & {"BatchNormalization", "Mul", "Add", "Pad"}, ops
    for n in (1, 5):
        x = _inputs(n, seed=n)
        out = run_onnx(path, x)
        ref = tiny.predict(x, verbose=0)
        assert np.abs(out["logits"] - ref).max() < 1e-4
        e = np.exp(ref - ref.max(-1, keepdims=True))
        assert np.abs(out["probabilities"] - e / e.sum(-1, keepdims=True)).max() < 1e-4
    labels = {p.key: p.value for p in onnx.load(path).metadata_props}["labels"].splitlines()
    assert labels == [tiny.config.id2label[i] for i in range(1001)]


def test_feature_vector(tiny, tmp_path):
    import keras

    path = export_onnx(tiny, tmp_path / "f.onnx", task="feature-vector")
    x = _inputs(2)
    sub = keras.Model(tiny.inputs[0], tiny.get_layer("AvgPool_1a").output)
    ref = np.asarray(sub(x)).reshape(2, -1)
    assert np.abs(run_onnx(path, x, "features") - ref).max() < 1e-4


def test_cli_and_refusals(tiny, tmp_path, monkeypatch, capsys):
    from tf_mobilenet_v1.converters.export import default_output, export

    monkeypatch.chdir(tmp_path)
    tiny.save("tiny.keras")
    assert cli("export", "tiny.keras", "--format", "onnx").returncode == 0
    out = capsys.readouterr().out
    assert default_output("tiny", "onnx") in out  # named after the source file
    assert "input:  pixel_values float32['batch', 64, 64, 3]" in out
    assert "output: logits['batch', 1001]" in out and "output: probabilities" in out
    assert os.path.isfile(default_output("tiny", "onnx"))
    with pytest.raises(ValueError, match="must end in .onnx"):
        export_onnx(tiny, "m.tflite")
    with pytest.raises(ValueError, match="TFLite only"):
        export(tiny, "x.onnx", format="onnx", quantize="int8")
    with pytest.raises(ValueError, match="--outputs applies to TFLite"):
        export(tiny, "x.onnx", format="onnx", outputs="logits")
    assert not os.path.exists("x.onnx") and not os.path.exists("m.tflite")


def test_missing_tf2onnx_says_what_to_install(tiny, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "tf2onnx", None)  # import fails as if not installed
    with pytest.raises(ImportError, match=r"pip install '\.\[onnx\]' in the checkout"):
        export_onnx(tiny, tmp_path / "m.onnx")
    assert os.listdir(tmp_path) == []


@pytest.mark.slow
def test_official_weights_onnxruntime_within_1e4_of_keras(tmp_path):
    from tf_mobilenet_v1 import MobileNetV1ForImageClassification

    path = fixture_path("official", "mobilenet_v1_0.25_128")
    ref = np.load(path / "reference_logits.npz")
    model = MobileNetV1ForImageClassification.from_pretrained(str(path))
    onnx_path = export_onnx(model, tmp_path / "m.onnx")
    logits = run_onnx(onnx_path, ref["inputs"], "logits")
    diff = np.abs(logits - model.predict(ref["inputs"], verbose=0)).max()
    assert diff < 1e-4, diff
    assert np.abs(logits - ref["logits"]).max() < 1e-4
    print(f"onnxruntime vs Keras, official 0.25_128: max abs diff {diff:.2e}")


@pytest.mark.slow
def test_official_1_0_224_onnxruntime_within_1e4_of_keras(tmp_path):
    from tf_mobilenet_v1 import MobileNetV1ForImageClassification
    from tf_mobilenet_v1.images import read_image
    from tf_mobilenet_v1.preprocessing import MobileNetV1Preprocessing

    model = MobileNetV1ForImageClassification.from_pretrained("mobilenet_v1_1.0_224")
    prep = MobileNetV1Preprocessing(image_size=224, mode="resize")
    photos = ("bird.bmp", "burger.jpg", "cat.bmp", "grace_hopper.bmp")
    x = np.concatenate([np.asarray(prep(read_image(fixture_path("images", p))[None]))
                        for p in photos])
    logits = run_onnx(export_onnx(model, tmp_path / "m.onnx"), x, "logits")
    keras_logits = model.predict(x, verbose=0)
    diff = np.abs(logits - keras_logits).max()
    assert diff < 1e-4, diff
    assert (logits.argmax(-1) == [20, 934, keras_logits[2].argmax(), 653]).all()
    print(f"onnxruntime vs Keras, official 1.0_224: max abs diff {diff:.2e}")
