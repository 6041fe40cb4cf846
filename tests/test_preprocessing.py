"""Preprocessing: HF parity (exact), the in-graph Keras layer (exact), TF-slim's eval pipeline."""

from __future__ import annotations

import io
import json
import os
import subprocess
import warnings

import keras
import numpy as np
import pytest
from clients import pillow_crop
from conftest import ROOT, fixture_path, require_module
from hostile import FUZZ, Tally, corruptions
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from tf_mobilenet_v1.images import read_image
from tf_mobilenet_v1.preprocessing import (
    MobileNetV1ImageProcessor,
    MobileNetV1Preprocessing,
    SlimEvalPreprocessor,
    get_preprocessor,
    slim_eval_preprocess,
)
from tf_mobilenet_v1.preprocessing.processor import (
    _exact_box,
    center_crop,
    normalize_table,
    shortest_edge_size,
)

TALLY = Tally("processor")  # bad inputs tried, distinct messages (HARDENING_SUMMARY_DIR)
SIZE = 32
PHOTOS = ("bird.bmp", "burger.jpg", "cat.bmp", "grace_hopper.bmp")
# (height, width): tiny, odd, extreme aspect ratios both ways, and just around 256.
ODD_SIZES = [(1, 1), (2, 3), (17, 301), (301, 17), (700, 200), (255, 257), (256, 256),
             (33, 97), (640, 480)]


def _hf_processor_class():
    """transformers' PIL-backend MobileNetV1 processor; under CI a missing install fails."""
    transformers = require_module("transformers")
    # Without torchvision, transformers 5 falls back to this PIL backend anyway; name it so
    # that an installed torchvision (different rounding in its resize) cannot change the test.
    return getattr(transformers, "MobileNetV1ImageProcessorPil", None) or \
        transformers.MobileNetV1ImageProcessor


def _hf(image_size=224, **kwargs):
    cls = _hf_processor_class()
    kwargs.setdefault("size", {"shortest_edge": image_size + 32})
    kwargs.setdefault("crop_size", {"height": image_size, "width": image_size})
    return cls(**kwargs)


def _hf_pixels(proc, image, **kwargs):
    out = proc(image, return_tensors="np", **kwargs)["pixel_values"]
    return np.asarray(out).transpose(0, 2, 3, 1)  # HF is channels first


def _random_image(h, w, seed=0, mode="RGB"):
    rng = np.random.default_rng(seed)
    bands = {"RGB": 3, "RGBA": 4, "L": 1, "LA": 2}[mode]
    a = rng.integers(0, 256, (h, w, bands), dtype=np.uint8)
    if mode == "RGBA":
        a[..., 3] = rng.choice([0, 77, 128, 255], (h, w))
    return Image.fromarray(a[..., 0] if bands == 1 else a, mode)


# ----------------------------------------------------------------- pure helpers
def test_shortest_edge_size_truncates_long_side():
    assert shortest_edge_size(480, 640, 256) == (256, 341)   # 256 * 640 / 480 = 341.33
    assert shortest_edge_size(640, 480, 256) == (341, 256)
    assert shortest_edge_size(300, 300, 256) == (256, 256)
    assert shortest_edge_size(1, 3, 256) == (256, 768)
    assert shortest_edge_size(343, 512, 160) == (160, 238)   # 238.83


def test_center_crop_pads_like_hf():
    a = np.arange(12, dtype=np.uint8).reshape(3, 4, 1) + 1
    np.testing.assert_array_equal(center_crop(a, 2, 2)[..., 0], [[2, 3], [6, 7]])
    out = center_crop(a, 6, 5)[..., 0]  # larger: HF pads ceil((new - old) / 2) on top / left
    assert out.shape == (6, 5)
    np.testing.assert_array_equal(out[2:5, 1:5], a[..., 0])
    assert out[:2].sum() == 0 and out[5:].sum() == 0 and out[:, 0].sum() == 0


def test_normalize_table_matches_hf_formula():
    v = np.arange(256)
    expected = ((v.astype(np.float64) / 255).astype(np.float32) - np.float32(0.5)) / \
        np.float32(0.5)
    t = normalize_table(1 / 255, (0.5,) * 3, (0.5,) * 3)
    assert t.shape == (256, 3) and t.dtype == np.float32
    np.testing.assert_array_equal(t[:, 1], expected)
    assert t[0, 0] == -1.0 and t[255, 2] == 1.0


# ----------------------------------------------------------------- processor API
def test_processor_defaults_and_dict_round_trip():
    p = MobileNetV1ImageProcessor()
    assert p.size == {"shortest_edge": 256} and p.crop_size == {"height": 224, "width": 224}
    assert p.image_mean == [0.5] * 3 and p.image_std == [0.5] * 3 and p.resample == 2
    d = p.to_dict()
    assert d["image_processor_type"] == "MobileNetV1ImageProcessor"
    assert MobileNetV1ImageProcessor.from_dict(d).to_dict() == d
    v = MobileNetV1ImageProcessor.for_variant(160)
    assert v.size == {"shortest_edge": 192} and v.crop_size == {"height": 160, "width": 160}
    r = MobileNetV1ImageProcessor.for_variant(96, mode="resize")
    assert r.output_size() == (96, 96) and not r.do_center_crop


def test_processor_from_pretrained_dir(tmp_path):
    import json

    (tmp_path / "preprocessor_config.json").write_text(json.dumps(
        {"crop_size": {"height": 128, "width": 128}, "size": {"shortest_edge": 160},
         "image_processor_type": "MobileNetV1ImageProcessor", "do_normalize": True}))
    p = MobileNetV1ImageProcessor.from_pretrained(tmp_path)
    assert p.output_size() == (128, 128) and p.size == {"shortest_edge": 160}
    with pytest.raises(ValueError, match="cannot read preprocessor config"):
        MobileNetV1ImageProcessor.from_pretrained(tmp_path / "missing")


def test_processor_call_options():
    img = np.asarray(_random_image(50, 70))
    p = MobileNetV1ImageProcessor.for_variant(32)
    x = p(img)["pixel_values"]
    assert x.shape == (1, 32, 32, 3) and x.dtype == np.float32
    assert -1.0 <= x.min() and x.max() <= 1.0
    nchw = p([img, img], data_format="channels_first")["pixel_values"]
    assert nchw.shape == (2, 3, 32, 32)
    np.testing.assert_array_equal(nchw[1].transpose(1, 2, 0), x[0])
    raw = p(img, do_rescale=False, do_normalize=False)["pixel_values"]
    assert raw.max() > 1.0 and np.allclose(raw, np.round(raw))  # still whole uint8 values
    np.testing.assert_allclose(raw / 127.5 - 1, x, atol=1e-6)
    assert p(img, crop_size=20)["pixel_values"].shape == (1, 20, 20, 3)
    assert p(img, size={"height": 40, "width": 30}, do_center_crop=False)[
        "pixel_values"].shape == (1, 40, 30, 3)
    ragged = p([img, img[:, :40]], do_center_crop=False)["pixel_values"]
    assert isinstance(ragged, list) and ragged[0].shape != ragged[1].shape
    tf_out = p(img, return_tensors="tf")["pixel_values"]
    np.testing.assert_array_equal(tf_out.numpy(), x)
    std = p(img, image_mean=[0.4, 0.5, 0.6], image_std=0.25)["pixel_values"]
    np.testing.assert_allclose(std[..., 0], (x[..., 0] * 0.5 + 0.5 - 0.4) / 0.25, atol=1e-5)
    with pytest.raises(TypeError, match="unknown preprocessing options"):
        p(img, do_flip=True)
    with pytest.raises(ValueError):
        p(img, size={"longest_edge": 3})
    with pytest.raises(ValueError):
        p(img, return_tensors="pt")


def test_resize_mode_equals_fixture_reference_inputs():
    """The fixtures' inputs: PIL bilinear to res x res, then x / 127.5 - 1 (bit for bit)."""
    ref = np.load(fixture_path("official", "mobilenet_v1_0.25_128", "reference_logits.npz"))
    paths = [fixture_path("images", str(n)) for n in ref["images"]]
    x = get_preprocessor("resize", 128)(paths)["pixel_values"]
    assert x.shape == ref["inputs"].shape
    np.testing.assert_array_equal(x, ref["inputs"])


# ----------------------------------------------------------------- HF parity
@pytest.mark.interop
@pytest.mark.parametrize("image_size", [224, 128, 160, 192])
def test_hf_parity_fixture_photos(image_size):
    hf = _hf(image_size)
    ours = MobileNetV1ImageProcessor.for_variant(image_size)
    worst = 0.0
    for name in PHOTOS:
        path = fixture_path("images", name)
        with Image.open(path) as im:
            expected = _hf_pixels(hf, im.convert("RGB"))
        got = ours(path)["pixel_values"]
        assert got.shape == expected.shape == (1, image_size, image_size, 3)
        worst = max(worst, float(np.abs(got - expected).max()))
    assert worst == 0.0, f"max abs difference {worst}"


@pytest.mark.interop
@pytest.mark.parametrize("h, w", ODD_SIZES)
def test_hf_parity_odd_sizes(h, w):
    img = _random_image(h, w, seed=h * 1000 + w)
    for kwargs in ({}, {"size": {"shortest_edge": 40}, "crop_size": {"height": 64,
                                                                      "width": 48}}):
        expected = _hf_pixels(_hf(**kwargs), img)
        got = MobileNetV1ImageProcessor(**kwargs)(img)["pixel_values"]
        np.testing.assert_array_equal(got, expected)
    # straight resize, no crop (HF with a height/width size)
    hf = _hf(size={"height": 96, "width": 96}, do_center_crop=False)
    got = MobileNetV1ImageProcessor.for_variant(96, mode="resize")(img)["pixel_values"]
    np.testing.assert_array_equal(got, _hf_pixels(hf, img))


@pytest.mark.interop
@pytest.mark.parametrize("mode", ["L", "RGBA", "LA", "P"])
def test_hf_parity_other_modes(tmp_path, mode):
    img = _random_image(61, 83, seed=5, mode="RGBA" if mode in ("RGBA", "P") else mode)
    if mode == "P":
        img = img.convert("RGB").quantize(64)
        img.info["transparency"] = 3
    hf = _hf(96)
    expected = _hf_pixels(hf, img, do_convert_rgb=True)  # HF composites alpha on white too
    got = MobileNetV1ImageProcessor.for_variant(96)(img)["pixel_values"]
    np.testing.assert_array_equal(got, expected)
    # and through a file: same pixels after writing and reading back
    path = tmp_path / "img.png"
    img.save(path)
    with Image.open(path) as reread:
        expected_file = _hf_pixels(hf, reread, do_convert_rgb=True)
    np.testing.assert_array_equal(MobileNetV1ImageProcessor.for_variant(96)(path)[
        "pixel_values"], expected_file)


@pytest.mark.interop
def test_hf_parity_numpy_rgba_and_gray_arrays():
    rgba = np.asarray(_random_image(40, 50, seed=9, mode="RGBA"))
    gray = np.asarray(_random_image(40, 50, seed=9, mode="L"))[..., None]  # HF needs a C axis
    hf = _hf(32)
    for a in (rgba, gray):
        expected = _hf_pixels(hf, a, do_convert_rgb=True)
        np.testing.assert_array_equal(MobileNetV1ImageProcessor.for_variant(32)(a)[
            "pixel_values"], expected)


# ----------------------------------------------------------------- Keras layer
def test_keras_layer_matches_processor_on_photos():
    """The in-graph layer equals the Pillow-based processor bit for bit."""
    for size in (224, 128):
        layer = MobileNetV1Preprocessing(size)
        proc = MobileNetV1ImageProcessor.for_variant(size)
        for name in PHOTOS:
            path = fixture_path("images", name)
            got = np.asarray(layer(read_image(path)[None]))
            np.testing.assert_array_equal(got, proc(path)["pixel_values"])


@pytest.mark.parametrize("h, w", ODD_SIZES)
def test_keras_layer_matches_processor_odd_sizes(h, w):
    img = np.asarray(_random_image(h, w, seed=h + 7 * w))
    cases = [
        (MobileNetV1Preprocessing(48), MobileNetV1ImageProcessor.for_variant(48)),
        # shortest edge below the crop: HF pads the resized image with zeros
        (MobileNetV1Preprocessing(40, shortest_edge=33),
         MobileNetV1ImageProcessor(size=33, crop_size=40)),
        (MobileNetV1Preprocessing(36, mode="resize"),
         MobileNetV1ImageProcessor.for_variant(36, mode="resize")),
    ]
    for layer, proc in cases:
        expected = proc(img)["pixel_values"]
        np.testing.assert_array_equal(np.asarray(layer(img[None])), expected)
        np.testing.assert_array_equal(np.asarray(layer(img)), expected[0])  # rank 3


def test_keras_layer_batch_float_input_and_config():
    imgs = np.stack([np.asarray(_random_image(30, 44, seed=s)) for s in range(3)])
    layer = MobileNetV1Preprocessing(32, image_mean=[0.4, 0.5, 0.6], image_std=[0.2, 0.3, 0.4])
    proc = MobileNetV1ImageProcessor(size=64, crop_size=32, image_mean=[0.4, 0.5, 0.6],
                                     image_std=[0.2, 0.3, 0.4])
    expected = proc(list(imgs))["pixel_values"]
    np.testing.assert_array_equal(np.asarray(layer(imgs)), expected)
    np.testing.assert_array_equal(np.asarray(layer(imgs.astype("float32"))), expected)
    clone = MobileNetV1Preprocessing.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config() and clone.resize_to == 64
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert isinstance(restored, MobileNetV1Preprocessing)
    np.testing.assert_array_equal(np.asarray(restored(imgs)), expected)
    with pytest.raises(ValueError):
        MobileNetV1Preprocessing(32, mode="stretch")


@pytest.mark.slow
def test_keras_layer_in_saved_keras_model(tmp_path):
    inp = keras.Input((None, None, 3), dtype="uint8")
    model = keras.Model(inp, MobileNetV1Preprocessing(64)(inp))
    path = tmp_path / "prep.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    img = np.asarray(_random_image(90, 70, seed=3))[None]
    np.testing.assert_array_equal(np.asarray(loaded(img)),
                                  MobileNetV1ImageProcessor.for_variant(64)(img[0])[
                                      "pixel_values"])


@pytest.mark.slow
def test_keras_layer_tflite_builtins_exact():
    """Converts with TFLITE_BUILTINS only (no Flex) and stays exact at several input sizes."""
    import tensorflow as tf

    pytest.importorskip("ai_edge_litert", reason="ai-edge-litert (a dependency) is missing")
    from ai_edge_litert.interpreter import Interpreter

    layer = MobileNetV1Preprocessing(96)

    @tf.function(input_signature=[tf.TensorSpec([1, None, None, 3], tf.uint8)])
    def prep(images):
        return layer(images)

    converter = tf.lite.TFLiteConverter.from_concrete_functions([prep.get_concrete_function()],
                                                                layer)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    interp = Interpreter(model_content=converter.convert())
    proc = MobileNetV1ImageProcessor.for_variant(96)
    # 700x200 takes Pillow's vertical-first branch, 120x160 the horizontal-first one
    for h, w in [(120, 160), (700, 200), (33, 77)]:
        img = np.asarray(_random_image(h, w, seed=h))[None]
        inp = interp.get_input_details()[0]
        interp.resize_tensor_input(inp["index"], [1, h, w, 3])
        interp.allocate_tensors()
        interp.set_tensor(inp["index"], img)
        interp.invoke()
        out = interp.get_tensor(interp.get_output_details()[0]["index"])
        np.testing.assert_array_equal(out, proc(img[0])["pixel_values"])


# ----------------------------------------------------------------- TF-slim eval
def _slim_reference(img: np.ndarray, size: int, fraction: float = 0.875) -> np.ndarray:
    """Independent numpy version of slim's preprocess_for_eval (TF1 bilinear, no half pixel)."""
    x = img.astype(np.float64) / 255.0
    h, w = x.shape[:2]
    top, left = int((h - h * fraction) / 2), int((w - w * fraction) / 2)
    x = x[top:h - top, left:w - left]
    h, w = x.shape[:2]

    def axis(n_in):
        src = np.arange(size) * (n_in / size)
        lo = np.floor(src).astype(int)
        return lo, np.minimum(lo + 1, n_in - 1), src - lo

    y0, y1, fy = axis(h)
    x0, x1, fx = axis(w)
    top_row = x[y0][:, x0] * (1 - fx)[None, :, None] + x[y0][:, x1] * fx[None, :, None]
    bottom = x[y1][:, x0] * (1 - fx)[None, :, None] + x[y1][:, x1] * fx[None, :, None]
    out = top_row * (1 - fy)[:, None, None] + bottom * fy[:, None, None]
    return (out - 0.5) * 2.0


def test_slim_eval_preprocess_matches_reference_math():
    for h, w, size in [(343, 512, 224), (97, 61, 128), (5, 7, 32)]:
        img = np.asarray(_random_image(h, w, seed=h))
        got = slim_eval_preprocess(img, size)
        assert got.shape == (size, size, 3) and got.dtype == np.float32
        np.testing.assert_allclose(got, _slim_reference(img, size), atol=2e-6)


def test_slim_preprocessor_interface_and_names():
    img = np.asarray(_random_image(50, 40))
    s = SlimEvalPreprocessor(64)
    out = s([img, img], data_format="channels_first")["pixel_values"]
    assert out.shape == (2, 3, 64, 64)
    np.testing.assert_allclose(out[0].transpose(1, 2, 0), _slim_reference(img, 64), atol=2e-6)
    assert isinstance(get_preprocessor("slim", 64), SlimEvalPreprocessor)
    assert get_preprocessor("crop", 64).output_size() == (64, 64)
    with pytest.raises(ValueError, match="unknown preprocessing"):
        get_preprocessor("inception", 64)


@pytest.mark.interop
def test_to_dict_is_a_valid_hf_preprocessor_config(tmp_path):
    import json

    ours = MobileNetV1ImageProcessor.for_variant(160)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(ours.to_dict()))
    hf = _hf_processor_class().from_pretrained(str(tmp_path))
    img = _random_image(70, 111, seed=11)
    np.testing.assert_array_equal(ours(img)["pixel_values"], _hf_pixels(hf, img))


def test_exact_box_only_where_pillow_arithmetic_is_exact():
    assert _exact_box(343, 256, 16, 224) == (343 * 16 / 256, 343 * 240 / 256)  # shortest edge
    assert _exact_box(512, 382, 79, 224) is None  # 512/382 is no short binary fraction
    assert _exact_box(480, 160, 16, 128) == (48.0, 432.0)  # an integer scale


@pytest.mark.parametrize("resample", pillow_crop.RESAMPLES, ids=lambda r: r.name)
def test_resizing_only_the_crop_gives_the_full_resize_pixels(resample):
    assert pillow_crop.check(resample) == 4 * 27


@pytest.mark.clients  # .venv-pillow12 is built with the client venvs (.ci/client_venvs.sh)
@pytest.mark.slow
def test_the_same_pixels_under_pillow_12():
    """Users may have Pillow 12 or 13 (pillow is not pinned): the shortcut holds under both."""
    python = ROOT / ".venv-pillow12" / "bin" / "python"
    if not python.exists():
        pytest.fail(".venv-pillow12/ is missing: run `bash .ci/client_venvs.sh`", pytrace=False)
    proc = subprocess.run([str(python), str(ROOT / "tests" / "clients" / "pillow_crop.py")],
                          capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert result["pillow"].startswith("12.") and result["checked"] == 5 * 4 * 27


def _processors():
    return {"resize": get_preprocessor("resize", SIZE), "crop": get_preprocessor("crop", SIZE)}


PROCESSORS = _processors()


def _valid_array(a: np.ndarray) -> bool:
    """The documented contract of ``array_to_rgb`` (HF's conventions), as an oracle."""
    shape = a.shape
    if a.ndim == 3 and shape[-1] not in (1, 3, 4) and shape[0] in (1, 3, 4):
        shape = shape[1:] + shape[:1]  # channels first
    if len(shape) == 2:
        shape = (*shape, 1)
    if len(shape) != 3 or shape[-1] not in (1, 3, 4) or shape[0] == 0 or shape[1] == 0:
        return False
    if a.dtype in (np.uint8, np.uint16, np.bool_):
        return True
    if np.issubdtype(a.dtype, np.integer):
        return bool(a.min() >= 0 and a.max() <= 255)
    if not np.issubdtype(a.dtype, np.floating):
        return False
    with np.errstate(all="ignore"):
        if not np.isfinite(a).all():
            return False
        if np.allclose(a, np.round(a)):  # whole numbers (within float noise): 0..255
            return bool(a.min() >= 0 and a.max() <= 255)
        return bool(a.min() >= 0 and a.max() <= 1)


def _check_pixels(x: np.ndarray):
    assert x.shape == (SIZE, SIZE, 3) and x.dtype == np.float32
    assert np.isfinite(x).all() and x.min() >= -1.0 and x.max() <= 1.0


_DTYPES = [np.uint8, np.uint16, np.int8, np.int16, np.int32, np.int64, np.float16, np.float32,
           np.float64, np.bool_, np.complex64]


@st.composite
def image_arrays(draw):
    dtype = np.dtype(draw(st.sampled_from(_DTYPES)))
    side = st.integers(0, 24)
    shape = draw(st.one_of(
        st.tuples(side, side),
        st.tuples(side, side, st.sampled_from([1, 2, 3, 4, 5])),
        st.tuples(st.sampled_from([1, 3, 4]), side, side),
        st.lists(st.integers(0, 6), min_size=0, max_size=5).map(tuple),
    ))
    if dtype.kind == "f":
        elements = draw(st.sampled_from([
            st.floats(0, 1, width=dtype.itemsize * 8),
            st.integers(0, 255).map(float),
            st.floats(width=dtype.itemsize * 8),  # anything: NaN, inf, negatives, huge
        ]))
    elif dtype.kind in "iu":
        info = np.iinfo(dtype)
        elements = draw(st.sampled_from([st.integers(0, min(255, info.max)),
                                         st.integers(info.min, info.max)]))
    else:
        elements = None
    return draw(hnp.arrays(dtype, shape, elements=elements))


@FUZZ
@given(a=image_arrays(), mode=st.sampled_from(sorted(PROCESSORS)))
def test_processor_arrays_valid_or_value_error(a, mode):
    """Any array: a valid image gives finite (S, S, 3) pixels in [-1, 1], anything else a
    ValueError saying what is wrong with it."""
    proc = PROCESSORS[mode]
    if _valid_array(a):
        _check_pixels(proc.preprocess_one(a))
    else:
        TALLY.bad(lambda: proc.preprocess_one(a))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_processor_nan_and_inf_everywhere_are_refused(bad):
    for dtype in (np.float16, np.float32, np.float64):
        a = np.full((8, 8, 3), 0.5, dtype)
        a[3, 4, 1] = bad
        err = TALLY.bad(lambda a=a: PROCESSORS["resize"].preprocess_one(a))
        assert "NaN or infinite" in str(err)


def test_processor_batch_of_wrong_rank_is_a_value_error():
    for shape in [(2, 3, 4, 5, 3), (1, 1, 1, 1, 1, 1), ()]:
        TALLY.bad(lambda s=shape: PROCESSORS["crop"](np.zeros(s, np.uint8)))


_PIL_MODES = ["1", "L", "P", "RGB", "RGBA", "CMYK", "YCbCr", "LAB", "HSV", "I", "I;16", "I;16B",
              "F", "LA", "La", "PA", "RGBa", "RGBX"]


@FUZZ
@given(mode=st.sampled_from(_PIL_MODES), w=st.integers(1, 40), h=st.integers(1, 40),
       seed=st.integers(0, 2**16))
def test_processor_any_pil_mode_and_size(mode, w, h, seed):
    """Every Pillow mode, random content (float images may hold NaN/inf), tiny to small sizes."""
    n = len(Image.new(mode, (w, h)).tobytes())
    raw = np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()
    im = Image.frombytes(mode, (w, h), raw)
    for proc in PROCESSORS.values():
        _check_pixels(proc.preprocess_one(im))


# Pairs Pillow can write; reading them back must always work.
_FILE_KINDS = [("PNG", "L"), ("PNG", "RGB"), ("PNG", "RGBA"), ("PNG", "P"), ("PNG", "I;16"),
               ("PNG", "1"), ("JPEG", "RGB"), ("JPEG", "L"), ("JPEG", "CMYK"), ("BMP", "RGB"),
               ("BMP", "P"), ("GIF", "P"), ("TIFF", "RGB"), ("TIFF", "F"), ("TIFF", "CMYK"),
               ("WEBP", "RGB"), ("WEBP", "RGBA"), ("PPM", "RGB")]


_EXT = {"PNG": ".png", "JPEG": ".jpg", "BMP": ".bmp", "GIF": ".gif", "TIFF": ".tif",
        "WEBP": ".webp", "PPM": ".ppm"}


@FUZZ
@given(data=st.data(), fmt_mode=st.sampled_from(_FILE_KINDS), w=st.integers(1, 48),
       h=st.integers(1, 48), seed=st.integers(0, 2**16))
def test_processor_image_files_fuzz(tmp_path_factory, data, fmt_mode, w, h, seed):
    """Image files of every format, intact or damaged: pixels, or a ValueError naming the file."""
    fmt, mode = fmt_mode
    a = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    im = Image.fromarray(a).convert(mode)
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    good = buf.getvalue()
    kind, corrupt = data.draw(corruptions(len(good)))
    path = tmp_path_factory.mktemp("img") / f"x{_EXT[fmt]}"
    path.write_bytes(corrupt(good))
    proc = PROCESSORS[data.draw(st.sampled_from(sorted(PROCESSORS)))]
    if kind in ("none", "append"):
        _check_pixels(proc.preprocess_one(str(path)))
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow warns about some damage; see the CLI test
        out = TALLY.bad(lambda: proc.preprocess_one(str(path)), str(path), allow_success=True)
    if not isinstance(out, Exception):
        _check_pixels(out)  # damage a decoder cannot see (pixel data) still gives valid pixels


def test_thin_strip_is_not_blown_up_by_the_shortest_edge_resize():
    """A 1 x 400000 strip would be resized to 64 x 25.6M pixels by HF's shortest-edge rule."""
    strip = np.zeros((1, 400_000, 3), np.uint8)
    err = TALLY.bad(lambda: PROCESSORS["crop"].preprocess_one(strip))
    assert "MAX_IMAGE_PIXELS" in str(err)
    _check_pixels(PROCESSORS["resize"].preprocess_one(strip))  # a straight resize is fine


@pytest.mark.parametrize("options", [
    {"size": {"shortest_edge": 10**6}}, {"crop_size": {"height": 10**5, "width": 10**5}},
    {"size": {"height": -3, "width": 5}}, {"size": "big"}, {"crop_size": [1.5, 2]},
    {"resample": 99}, {"image_std": [0, 1, 1]}, {"image_mean": [0.5, 0.5]},
])
def test_absurd_preprocessor_config_is_refused(tmp_path, options):
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(options))
    TALLY.bad(lambda: MobileNetV1ImageProcessor.from_pretrained(tmp_path))



@pytest.mark.parametrize("field, value", [
    ("rescale_factor", float("nan")), ("rescale_factor", [1, 2]), ("rescale_factor", None),
    ("image_mean", float("nan")), ("image_mean", {"r": 1}), ("image_std", 1e-300),
    ("image_std", float("inf")), ("image_std", [0.5, 0.5]), ("do_normalize", "yes"),
])
def test_a_crafted_preprocessor_config_is_one_line_naming_file_and_field(tmp_path, field,
                                                                        value):
    """NaN, Infinity, a divisor of 1e-300, a list or null where a number belongs: refused when
    read, naming the file and the field (not NaN scores, one constant class or a traceback)."""
    config = MobileNetV1ImageProcessor().to_dict()
    config[field] = value
    path = tmp_path / "preprocessor_config.json"
    path.write_text(json.dumps(config))  # json writes NaN and Infinity as Python reads them
    with pytest.raises(ValueError) as info:
        MobileNetV1ImageProcessor.from_pretrained(tmp_path)
    message = str(info.value)
    assert len(message.splitlines()) == 1 and str(path) in message and field in message


def _branch_files(folder) -> dict[str, str]:
    """One file for each way a photo reaches the processor: a plain RGB JPEG, one with an
    EXIF rotation, grayscale, palette (with and without transparency), alpha, 16-bit, CMYK."""
    rng = np.random.default_rng(7)
    base = Image.fromarray(rng.integers(0, 256, (300, 410, 3), dtype=np.uint8))
    files = {}

    def save(name, im, **kwargs):
        files[name] = str(folder / name)
        im.save(files[name], **kwargs)

    save("rgb.jpg", base, quality=90)
    exif = Image.Exif()
    exif[0x0112] = 6
    save("rotated.jpg", base, quality=90, exif=exif)
    save("gray.png", base.convert("L"))
    save("palette.png", base.convert("P"))
    clear = base.convert("P")
    clear.info["transparency"] = 3
    save("palette_clear.gif", clear, transparency=3)
    rgba = base.convert("RGBA")
    rgba.putalpha(Image.fromarray(rng.integers(0, 256, (300, 410), dtype=np.uint8)))
    save("alpha.png", rgba)
    save("deep.png", Image.fromarray(rng.integers(0, 65536, (300, 410), dtype=np.uint16)))
    save("cmyk.jpg", base.convert("CMYK"), quality=90)
    return files


@pytest.mark.parametrize("mode", ["model", "resize"])
def test_exact_path_pixels_are_pillows_full_resize_and_crop_on_every_branch(tmp_path, mode):
    """What transformers does (decode, EXIF-rotate, to RGB, one full Pillow resize, center
    crop) against ours (which resizes the decoded image itself and only what the crop keeps),
    for a path, the same bytes already read, and an open Pillow image: bit for bit."""
    from PIL import ImageOps

    from tf_mobilenet_v1.images import open_image, pil_to_rgb
    from tf_mobilenet_v1.preprocessing.processor import center_crop, shortest_edge_size

    processor = MobileNetV1ImageProcessor.for_variant(224, mode="resize" if mode == "resize"
                                                      else "crop")
    for name, path in _branch_files(tmp_path).items():
        with Image.open(path) as im:
            rgb = pil_to_rgb(ImageOps.exif_transpose(im))
        if mode == "resize":
            want = np.asarray(Image.fromarray(rgb).resize((224, 224), Image.BILINEAR))
        else:
            nh, nw = shortest_edge_size(*rgb.shape[:2], 256)
            want = center_crop(np.asarray(Image.fromarray(rgb).resize((nw, nh),
                                                                      Image.BILINEAR)), 224, 224)
        with open(path, "rb") as f:
            data = f.read()
        for source in (path, open_image(path, data=data), open_image(path)):
            np.testing.assert_array_equal(processor.crop_pixels(source), want, err_msg=name)
