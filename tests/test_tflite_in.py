"""``.tflite`` as weights: Google's float and uint8 models and our own exports, read into Keras
and on to every other form. (Our own exports' round trip is in test_formats.py's contract.)"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from conftest import cli, fixture_path, require_module

from tf_mobilenet_v1 import MobileNetV1ForImageClassification, imagenet_labels
from tf_mobilenet_v1.loaders.dispatch import load_any
from tf_mobilenet_v1.preprocessing import MobileNetV1ImageProcessor

FLOAT = "mobilenet_v1_0.25_224_1_metadata_1.tflite"
UINT8 = "mobilenet_v1_0.5_160_quant.tflite"
PHOTOS = ("cat.bmp", "bird.bmp", "burger.jpg", "grace_hopper.bmp")


def _interpreter_outputs(path: str, x: np.ndarray, reference: bool = False
                         ) -> tuple[np.ndarray, np.ndarray]:
    """(logits before the softmax, output probabilities) of the file itself, dequantized;
    ``reference``: LiteRT's reference kernels instead of XNNPACK."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kernels = OpResolverType.BUILTIN_REF if reference else OpResolverType.AUTO
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # preserve_all_tensors is "for debugging"
        interp = Interpreter(model_path=path, experimental_preserve_all_tensors=True,
                             experimental_op_resolver_type=kernels)
    interp.allocate_tensors()
    (inp,), (out,) = interp.get_input_details(), interp.get_output_details()
    scale, zero = inp["quantization"]
    if scale:
        x = np.clip(np.round(x / scale + zero), 0, 255).astype(inp["dtype"])
    interp.set_tensor(inp["index"], x)
    interp.invoke()

    def read(d):
        y = interp.get_tensor(d["index"]).astype(np.float32)
        s, z = d["quantization"]
        return (y - z) * s if s else y

    squeeze = next(d for d in interp.get_tensor_details()
                   if "SpatialSqueeze" in d["name"] and list(d["shape"]) == [1, 1001])
    return read(squeeze), read(out)


@pytest.fixture(scope="module")
def google_float():
    return MobileNetV1ForImageClassification.from_pretrained(fixture_path("tflite", FLOAT))


def test_googles_float_model_reads_exactly(google_float):
    """Variant from the tensors, labels and normalization from the metadata, batch norm
    folded; the Keras model gives the interpreter's logits and probabilities."""
    model = google_float
    assert model.config.variant == "mobilenet_v1_0.25_224" and model.fold_batchnorm
    labels = model.config.id2label  # the metadata's short names, not our long ones
    assert len(labels) == 1001 and labels[0] == "background" and labels[286] == "Egyptian cat"
    assert labels[1] == "tench" != imagenet_labels()[1]
    processor = MobileNetV1ImageProcessor.for_model(model)
    assert processor.image_mean == [0.5] * 3 and processor.image_std == [0.5] * 3
    gaps = []
    for name in PHOTOS:
        x = processor.preprocess_one(fixture_path("images", name))[None]
        logits, probs = _interpreter_outputs(fixture_path("tflite", FLOAT), x)
        ours = np.asarray(model.predict(x, verbose=0))
        mine = np.exp(ours - ours.max())
        mine /= mine.sum()
        # float32 sums in another order over 28 layers: on logits of magnitude 10-24 the
        # interpreter's own two kernel sets (XNNPACK, reference) differ by 3.1e-5 to 4.2e-5;
        # the Keras model is closer to the reference kernels than XNNPACK is.
        reference, _ = _interpreter_outputs(fixture_path("tflite", FLOAT), x, reference=True)
        spread = float(np.abs(logits - reference).max())
        assert float(np.abs(ours - reference).max()) <= spread
        np.testing.assert_allclose(ours, logits, atol=1e-4)
        np.testing.assert_allclose(mine, probs, atol=1e-5)
        assert list(np.argsort(-ours[0])[:5]) == list(np.argsort(-logits[0])[:5])
        gaps.append((float(np.abs(ours - reference).max()), spread))
    print("logit gap to the reference kernels, and XNNPACK's:", gaps)


def test_googles_uint8_model_is_dequantized_with_its_ranges():
    """Weights dequantized per tensor; the activation and weight ranges kept as the _quant
    checkpoints' ``{scope: (min, max)}``; the float model agrees with the uint8 file's top-1
    on every fixture photo."""
    path = fixture_path("tflite", UINT8)
    model = load_any(path)
    assert model.config.variant == "mobilenet_v1_0.5_160" and model.fold_batchnorm
    ranges = model.quant_ranges
    assert len(ranges) == 2 * 28  # weights and activations of 27 blocks + Logits
    low, high = ranges["MobilenetV1/Conv2d_5_pointwise/act_quant"]
    assert low == 0 and 5.9 < high <= 6.0  # a ReLU6 output's range
    low, high = ranges["MobilenetV1/Conv2d_0/weights_quant"]
    assert low < 0 < high
    processor = MobileNetV1ImageProcessor.for_model(model)
    for name in PHOTOS:
        x = processor.preprocess_one(fixture_path("images", name))[None]
        _, probs = _interpreter_outputs(path, x)
        assert np.argmax(model.predict(x, verbose=0)) == np.argmax(probs), name


@pytest.mark.slow
def test_a_tflite_converts_to_every_form(google_float, tmp_path):
    """``convert model.tflite DST``: the folded weights get an identity batch norm where the
    form needs one (HF, slim); every form reloads to the same outputs, bit for bit."""
    x = np.random.default_rng(0).uniform(-1, 1, (2, 224, 224, 3)).astype(np.float32)
    want = google_float.predict(x, verbose=0)
    for dst in ("m.keras", "hf/", "m.safetensors", "m.ckpt"):
        run = cli("convert", fixture_path("tflite", FLOAT), str(tmp_path / dst))
        assert run.returncode == 0, run.stderr
        back = load_any(str(tmp_path / dst.rstrip("/")))
        assert back.config.id2label[286] == "Egyptian cat"
        np.testing.assert_array_equal(back.predict(x, verbose=0), want, err_msg=dst)


def test_a_tflite_that_is_not_mobilenet_v1_is_refused(tmp_path):
    """Another network's .tflite: one line naming what does not fit, from the library and
    the CLI."""
    import keras
    import tensorflow as tf

    other = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3)])
    path = tmp_path / "other.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(other).convert())
    with pytest.raises(ValueError, match="is not a MobileNet V1 TFLite model: it has "
                                         "FULLY_CONNECTED ops"):
        load_any(str(path))
    run = cli("convert", str(path), str(tmp_path / "out.keras"))
    assert run.returncode == 1 and "not a MobileNet V1 TFLite model" in run.one_line_error()
    assert not (tmp_path / "out.keras").exists()


@pytest.mark.slow
@pytest.mark.interop
def test_transformers_runs_a_converted_tflite(tmp_path):
    """Google's float .tflite -> HF directory -> transformers' own MobileNetV1: the
    interpreter's logits on a photo."""
    require_module("transformers")
    import torch
    import transformers

    run = cli("convert", fixture_path("tflite", FLOAT), str(tmp_path / "hf"))
    assert run.returncode == 0, run.stderr
    theirs = transformers.MobileNetV1ForImageClassification.from_pretrained(tmp_path / "hf")
    processor = MobileNetV1ImageProcessor.from_pretrained(tmp_path / "hf")
    x = processor.preprocess_one(fixture_path("images", "cat.bmp"))[None]
    logits, _ = _interpreter_outputs(fixture_path("tflite", FLOAT), x)
    with torch.no_grad():
        got = theirs(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).logits.numpy()
    np.testing.assert_allclose(got, logits, atol=1e-4)
    assert got.argmax() == 286


def _uint8_probabilities(path: str, x: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=path)
    interp.allocate_tensors()
    (inp,), (out,) = interp.get_input_details(), interp.get_output_details()
    scale, zero = inp["quantization"]
    interp.set_tensor(inp["index"], np.clip(np.round(x / scale + zero), 0, 255).astype(np.uint8))
    interp.invoke()
    assert out["dtype"] == np.uint8 and out["quantization"] == (1 / 256, 0)
    return interp.get_tensor(out["index"]).astype(np.int64)  # in output steps of 1/256


@pytest.mark.slow
def test_a_quantized_model_reexports_from_its_own_ranges(tmp_path):
    """``export --quantize int8`` of Google's uint8 model, no calibration photos: the ranges
    it carries go back in as fake quantization, converted as the _quant releases were (uint8
    in and out, per-tensor weights). On every fixture photo: Google's top-1, probabilities
    within 2 output steps of Google's file (measured: 0, identical outputs)."""
    google = fixture_path("tflite", UINT8)
    out = tmp_path / "requant.tflite"
    run = cli("export", google, out, "--quantize", "int8")
    assert run.returncode == 0, run.stderr
    processor = MobileNetV1ImageProcessor.for_model(load_any(google))
    gaps = []
    for name in PHOTOS:
        x = processor.preprocess_one(fixture_path("images", name))[None]
        theirs, ours = _uint8_probabilities(google, x), _uint8_probabilities(str(out), x)
        assert ours.argmax() == theirs.argmax(), name
        gaps.append(int(np.abs(ours - theirs).max()))
    assert max(gaps) <= 2, gaps
    print(f"largest gap to Google's file: {max(gaps)} output steps of 1/256")


def test_int8_without_photos_needs_a_model_that_carries_ranges(tmp_path):
    """A float source cannot be quantized from ranges it does not have: said before loading
    for a float registry name, after it for a file that might have had them."""
    run = cli("export", "mobilenet_v1_0.25_128", tmp_path / "q.tflite", "--quantize", "int8")
    assert run.returncode == 1 and "calibration" in run.one_line_error()
    run = cli("export", fixture_path("tflite", FLOAT), tmp_path / "q.tflite", "--quantize",
              "int8")
    assert run.returncode == 1
    assert "carries no quantization ranges; pass --calibration-dir" in run.one_line_error()
    assert not (tmp_path / "q.tflite").exists()
