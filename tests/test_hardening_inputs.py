"""Bad inputs, fuzzed: the image processor, the state-dict importer and every checkpoint reader.

The contract checked throughout: a good input gives a correct result; a bad one ends in a
``ValueError`` (``OSError`` for a missing file) whose first line says what is wrong and, for
files, names the file. Never a raw exception from TensorFlow, protobuf, h5py, safetensors,
torch, zipfile, json or struct, and never a partial output. Every bad input tried and every
distinct error message seen is tallied; set ``HARDENING_SUMMARY_DIR`` to get the counts as JSON.
"""

from __future__ import annotations

import collections
import contextlib
import importlib.util
import io
import json
import math
import os
import re
import shutil
import tarfile
import warnings

import numpy as np
import pytest
from conftest import cli, randomize, tiny_model
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from converters.hf import keras_to_state_dict, save_hf
from converters.slim import save_slim_checkpoint
from tf_mobilenet_v1 import MobileNetV1ForImageClassification
from tf_mobilenet_v1.loaders import hf as hf_loader
from tf_mobilenet_v1.loaders.dispatch import load_any
from tf_mobilenet_v1.loaders.hf import state_dict_to_keras
from tf_mobilenet_v1.loaders.tf_checkpoint import DATA_SUFFIX, read_checkpoint
from tf_mobilenet_v1.preprocessing import MobileNetV1ImageProcessor, get_preprocessor

SIZE = 32
# Hypothesis prints the (large) state-dict fixtures it is given when it reports an example.
pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")
FUZZ = settings(max_examples=40, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# ----------------------------------------------------------------- the tally
class Tally:
    """Counts bad inputs tried and the distinct (path- and number-free) error messages seen."""

    def __init__(self, name: str):
        self.name, self.tried, self.messages = name, 0, collections.Counter()
        self.undetected = 0  # damage a format cannot see (e.g. a flipped weight byte)

    def bad(self, fn, *names: str, allow_success: bool = False):
        """Run ``fn`` on a bad input; return its result when it may succeed, else the error's
        first line (checked: a clean type, one meaningful line, naming one of ``names``)."""
        self.tried += 1
        try:
            result = fn()
        except Exception as e:  # noqa: BLE001 - the point is to look at whatever comes out
            first = check_clean(e, names)
            self.messages[normalize(first)] += 1
            return e
        assert allow_success, f"no error for a bad input (expected one naming {names})"
        self.undetected += 1
        return result

    def write(self):
        out = os.environ.get("HARDENING_SUMMARY_DIR")
        if out:
            os.makedirs(out, exist_ok=True)
            with open(os.path.join(out, f"{self.name}.json"), "w") as f:
                json.dump({"tried": self.tried, "undetected": self.undetected,
                           "distinct_messages": len(self.messages),
                           "messages": dict(self.messages.most_common())}, f, indent=1)


TALLY = Tally("inputs")


@pytest.fixture(scope="module", autouse=True)
def _summary():
    yield
    TALLY.write()


_PATH = re.compile(r"(?:[A-Za-z]:)?(?:/[^\s'\"():;,]+)+")
_NUMBER = re.compile(r"\d+")


def normalize(message: str) -> str:
    return _NUMBER.sub("N", _PATH.sub("<path>", message))


def check_clean(e: BaseException, names=()) -> str:
    """Assert ``e`` is an error a user can act on; return its first line."""
    assert isinstance(e, (ValueError, OSError)), f"raw {type(e).__module__}.{type(e).__name__}: {e}"
    module = type(e).__module__
    assert module == "builtins" or module.startswith(("tf_mobilenet_v1", "converters")), \
        f"library exception {module}.{type(e).__name__} leaked: {e}"
    assert not isinstance(e, UnicodeError), f"raw UnicodeError leaked: {e}"
    text = str(e).strip()
    first = text.splitlines()[0] if text else ""
    assert len(first) > 20, f"uninformative message {first!r} ({type(e).__name__})"
    assert "Traceback" not in text
    if names:
        assert any(str(n) in first for n in names), f"{first!r} names none of {names}"
    return first


# ----------------------------------------------------------------- image processor
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


@st.composite
def corruptions(draw, size: int):
    """``(name, function bytes -> bytes)``: truncation, byte flips, junk, or nothing."""
    kind = draw(st.sampled_from(["none", "truncate", "flip", "junk_head", "empty", "append"]))
    if kind == "truncate":
        cut = draw(st.integers(0, max(0, size - 1)))
        return kind, lambda b: b[:cut]
    if kind == "flip":
        spots = draw(st.lists(st.tuples(st.integers(0, max(0, size - 1)), st.integers(1, 255)),
                              min_size=1, max_size=8))

        def flip(b):
            b = bytearray(b)
            for at, x in spots:
                b[at % len(b)] ^= x
            return bytes(b)
        return kind, flip
    if kind == "junk_head":
        junk = draw(st.binary(min_size=1, max_size=64))
        return kind, lambda b: junk + b[len(junk):]
    if kind == "empty":
        return kind, lambda b: b""
    if kind == "append":
        tail = draw(st.binary(min_size=1, max_size=64))
        return kind, lambda b: b + tail
    return kind, lambda b: b


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


# ----------------------------------------------------------------- a tiny model, every format
@pytest.fixture(scope="module")
def tiny():
    return tiny_model(seed=11, image_size=SIZE, num_labels=5)


@pytest.fixture(scope="module")
def base_sd(tiny):
    return keras_to_state_dict(tiny)


def _frozen_graph_bytes(tensors: dict[str, np.ndarray]) -> bytes:
    import tensorflow as tf

    graph = tf.compat.v1.GraphDef()
    for name, value in tensors.items():
        node = graph.node.add(name=name, op="Const")
        node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(value))
        node.attr["dtype"].type = tf.as_dtype(value.dtype).as_datatype_enum
    return graph.SerializeToString()


@pytest.fixture(scope="module")
def sources(tiny, tmp_path_factory):
    """kind -> (directory of good files, file to damage, path to load)."""
    root = tmp_path_factory.mktemp("sources")
    tiny.save(root / "m.keras")
    tiny.save_weights(root / "m.weights.h5")
    save_hf(tiny, root / "m.safetensors")
    if importlib.util.find_spec("torch") is not None:  # the .bin cases are marked interop
        save_hf(tiny, root / "m.bin")
    save_hf(tiny, root / "hf")
    save_slim_checkpoint(tiny, str(root / "m.ckpt"))
    raw = {k: v for k, v in read_checkpoint(str(root / "m.ckpt")).items() if k != "global_step"}
    (root / "m.pb").write_bytes(_frozen_graph_bytes(raw))
    with tarfile.open(root / "m.tgz", "w:gz") as tar:
        for suffix in (".index", DATA_SUFFIX):
            tar.add(root / f"m.ckpt{suffix}", arcname=f"m/m.ckpt{suffix}")
    with tarfile.open(root / "g.tgz", "w:gz") as tar:
        tar.add(root / "m.pb", arcname="m/frozen_graph.pb")
    return root


# kind -> (file to damage, relative path to load)
KINDS = {
    "keras": ("m.keras", "m.keras"),
    "weights_h5": ("m.weights.h5", "m.weights.h5"),
    "safetensors": ("m.safetensors", "m.safetensors"),
    "bin": ("m.bin", "m.bin"),
    "hf_config": ("hf/config.json", "hf"),
    "hf_weights": ("hf/model.safetensors", "hf"),
    "ckpt_index": ("m.ckpt.index", "m.ckpt"),
    "ckpt_data": (f"m.ckpt{DATA_SUFFIX}", "m.ckpt"),
    "pb": ("m.pb", "m.pb"),
    "tgz_checkpoint": ("m.tgz", "m.tgz"),
    "tgz_graph": ("g.tgz", "g.tgz"),
}
# .bin needs torch (the [interop] extra): its cases run where that is installed.
KIND_PARAMS = [pytest.param(k, marks=pytest.mark.interop) if k == "bin" else k
               for k in sorted(KINDS)]
_CASES = iter(range(10**9))


def _damaged(sources, kind: str, corrupt, where):
    """A fresh copy of ``kind``'s files with one damaged; returns (path to load, case dir)."""
    victim, target = KINDS[kind]
    case = where / f"case{next(_CASES)}"
    case.mkdir()
    names = {victim.split("/")[0], target.split("/")[0]}
    if kind.startswith("ckpt"):
        names |= {"m.ckpt.index", f"m.ckpt{DATA_SUFFIX}"}
    for name in names - {"m.ckpt"}:  # a checkpoint prefix, not a file
        src = sources / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, case / name)
    damaged = case / victim
    damaged.write_bytes(corrupt(damaged.read_bytes()))
    return str(case / target), case


def _same_weights(model, reference):
    got = {v.path: np.asarray(v.numpy()) for v in model.weights}
    for v in reference.weights:
        np.testing.assert_array_equal(got[v.path], np.asarray(v.numpy()), err_msg=v.path)


_FIXED = {
    "empty": lambda b: b"",
    "text": lambda b: b"this is not a model\n",
    "garbage": lambda b: bytes(np.random.default_rng(0).integers(0, 256, 700, np.uint8)),
    "half": lambda b: b[: len(b) // 2],
    "header_only": lambda b: b[:64],
}


@pytest.mark.parametrize("damage", sorted(_FIXED))
@pytest.mark.parametrize("kind", KIND_PARAMS)
def test_damaged_file_of_every_kind(tiny, sources, tmp_path, capsys, kind, damage):
    """Library and CLI: a clean ValueError naming the file, exit 1, no output written."""
    target, case = _damaged(sources, kind, _FIXED[damage], tmp_path)
    before = sorted(p.name for p in case.rglob("*"))
    TALLY.bad(lambda: load_any(target), target)
    out = tmp_path / "out.keras"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rc = cli("convert", target, str(out)).returncode
    err = capsys.readouterr().err
    assert rc == 1
    assert len(err.strip().splitlines()) == 1 and err.startswith("mobilenet-v1: error: ")
    assert target in err
    assert os.listdir(tmp_path) == [case.name]  # no output, no temporary left behind
    assert sorted(p.name for p in case.rglob("*")) == before


@pytest.mark.parametrize("kinds", [
    pytest.param(sorted(set(KINDS) - {"bin"}), id="all-but-bin"),
    pytest.param(["bin"], id="bin", marks=pytest.mark.interop)])
@FUZZ
@given(data=st.data())
def test_random_damage_to_every_kind(tiny, sources, tmp_path_factory, data, kinds):
    """Random truncations, byte flips and junk: a clean error, or (for damage the format cannot
    detect) a model; truncation or appended junk never silently changes a weight."""
    kind = data.draw(st.sampled_from(kinds))
    victim, _ = KINDS[kind]
    size = (sources / victim).stat().st_size
    name, corrupt = data.draw(corruptions(size))
    if name == "none":
        return
    target, _ = _damaged(sources, kind, corrupt, tmp_path_factory.mktemp("dmg"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = TALLY.bad(lambda: load_any(target), target, allow_success=True)
    if not isinstance(out, Exception) and name in ("truncate", "append"):
        _same_weights(out, tiny)


def _tar(path, members: dict[str, bytes], dirs=()):
    with tarfile.open(path, "w:gz") as tar:
        for d in dirs:
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            tar.addfile(info)
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return str(path)


def test_wrong_tarball_members(sources, tmp_path):
    ckpt = {s: (sources / f"m.ckpt{s}").read_bytes() for s in (".index", DATA_SUFFIX)}
    pb = (sources / "m.pb").read_bytes()
    other = _frozen_graph_bytes({"resnet/conv1/weights": np.zeros((3, 3), np.float32)})
    other_ckpt = tmp_path / "other.ckpt"
    save_slim_checkpoint(randomize(MobileNetV1ForImageClassification(
        depth_multiplier=0.5, image_size=SIZE, num_labels=5), 1), str(other_ckpt))
    cases = {
        "labels_only": {"m/labels.txt": b"a\nb\n"},
        "nothing": {},
        "index_without_data": {"m/m.ckpt.index": ckpt[".index"]},
        "data_without_index": {f"m/m.ckpt{DATA_SUFFIX}": ckpt[DATA_SUFFIX]},
        "mixed_checkpoints": {"m/m.ckpt.index": (tmp_path / "other.ckpt.index").read_bytes(),
                              f"m/m.ckpt{DATA_SUFFIX}": ckpt[DATA_SUFFIX]},
        "two_checkpoints": {**{f"a/a.ckpt{s}": v for s, v in ckpt.items()},
                            **{f"b/b.ckpt{s}": v for s, v in ckpt.items()}},
        "two_graphs": {"a/frozen_graph.pb": pb, "b/frozen_graph.pb": pb},
        "graph_is_text": {"m/frozen_graph.pb": b"not a graph"},
        "graph_of_another_model": {"m/frozen_graph.pb": other},
        "graph_empty": {"m/frozen_graph.pb": b""},
        "index_is_garbage": {"m/m.ckpt.index": b"\x00" * 100,
                             f"m/m.ckpt{DATA_SUFFIX}": ckpt[DATA_SUFFIX]},
    }
    for name, members in cases.items():
        path = _tar(tmp_path / f"{name}.tgz", members)
        TALLY.bad(lambda p=path: load_any(p), path)
    # a directory where a graph should be, and a zip named .tgz
    path = _tar(tmp_path / "dir_graph.tgz", {}, dirs=["m/frozen_graph.pb"])
    TALLY.bad(lambda: load_any(path), path)
    shutil.make_archive(str(tmp_path / "z"), "zip", sources, "hf")
    os.replace(tmp_path / "z.zip", tmp_path / "z.tgz")
    TALLY.bad(lambda: load_any(str(tmp_path / "z.tgz")), str(tmp_path / "z.tgz"))


# ----------------------------------------------------------------- state-dict importer
_EXTRA_KEYS = ["mobilenet_v1.layer.26.convolution.weight", "classifier.extra",
               "mobilenet_v1.conv_stem.normalization.weight_", "pooler.dense.weight", "",
               "mobilenet_v1.layer.0.convolution.bias"]
_BAD_VALUES = [None, "tensor", [1.0, 2.0], {"a": 1}, 3.5, object()]
_SHAPE_OPS = ["add_dim", "extend", "shrink", "flatten", "scalar", "transpose"]


def _bf16():
    import ml_dtypes

    return np.dtype(ml_dtypes.bfloat16)


_MUT_DTYPES = [np.float16, np.float64, np.int32, np.int64, np.bool_, np.uint8, np.complex64,
               object, str, _bf16()]


def _reshape(a: np.ndarray, op: str) -> np.ndarray:
    if op == "add_dim":
        return a[None]
    if op == "extend":
        return np.concatenate([a, a[:1]]) if a.ndim else a[None]
    if op == "shrink":
        return a[:-1] if a.ndim else a.reshape(1)[:0]
    if op == "flatten":
        return a.reshape(-1)
    if op == "scalar":
        return a.reshape(-1)[:1].reshape(())
    return a.T


@st.composite
def mutations(draw, keys: list[str], file_safe: bool = False):
    """1-3 edits of a state dict: drop / add / retype / reshape / replace / poison / rename."""
    ops = ["drop", "add", "dtype", "shape", "nonfinite", "rename"] + ([] if file_safe
                                                                      else ["value"])
    dtypes = [d for d in _MUT_DTYPES if not file_safe or np.dtype(d).kind in "fiub"]
    edits = []
    for _ in range(draw(st.integers(1, 3))):
        op, key = draw(st.sampled_from(ops)), draw(st.sampled_from(keys))
        arg = {"add": lambda: draw(st.sampled_from(_EXTRA_KEYS)),
               "dtype": lambda: draw(st.sampled_from(dtypes)),
               "shape": lambda: draw(st.sampled_from(_SHAPE_OPS)),
               "value": lambda: draw(st.sampled_from(range(len(_BAD_VALUES)))),
               "nonfinite": lambda: draw(st.sampled_from([math.nan, math.inf, -math.inf])),
               }.get(op, lambda: None)()
        edits.append((op, key, arg))
    return edits


def _apply(sd: dict, edits) -> dict:
    sd = dict(sd)
    for op, key, arg in edits:
        if op == "add":
            sd[arg] = np.zeros(3, np.float32)
        elif key not in sd:
            continue
        elif op == "drop":
            del sd[key]
        elif op == "dtype" and isinstance(sd[key], np.ndarray):
            sd[key] = sd[key].astype(arg)
        elif op == "shape" and isinstance(sd[key], np.ndarray):
            sd[key] = np.ascontiguousarray(_reshape(sd[key], arg))
        elif op == "value":
            sd[key] = _BAD_VALUES[arg]
        elif op == "nonfinite" and isinstance(sd[key], np.ndarray) and sd[key].size \
                and sd[key].dtype.kind == "f":
            sd[key] = sd[key].copy()
            sd[key].reshape(-1)[0] = arg
        elif op == "rename":
            value = sd.pop(key)
            sd[key[len("mobilenet_v1."):] if key.startswith("mobilenet_v1.")
               else "mobilenet_v1." + key] = value
    return sd


def _loadable(sd: dict, base: dict) -> bool:
    """The importer's contract as an oracle: same keys (``num_batches_tracked`` optional),
    same shapes, floating dtypes, finite values; the counters may be any tensor."""
    if not set(sd) <= set(base):
        return False
    for key in base:
        value = sd.get(key)
        if key.endswith("num_batches_tracked"):
            if key in sd and not isinstance(value, np.ndarray):
                return False
            continue
        if not isinstance(value, np.ndarray) or value.shape != base[key].shape:
            return False
        if value.dtype.kind != "f" and value.dtype != _bf16():
            return False
        if not np.isfinite(value.astype(np.float32)).all():
            return False
    return True


def _assert_loaded(model, sd: dict):
    back = keras_to_state_dict(model)
    for key, value in sd.items():
        if not key.endswith("num_batches_tracked"):
            np.testing.assert_array_equal(back[key], value.astype(np.float32), err_msg=key)


@FUZZ
@given(data=st.data())
def test_state_dict_mutations_into_a_model(tiny, base_sd, data):
    """Mutations of a valid state dict: a harmless one (float16/64 copies, dropped counters)
    loads exactly; any other raises ValueError and leaves the model untouched."""
    edits = data.draw(mutations(sorted(base_sd)))
    sd = _apply(base_sd, edits)
    state_dict_to_keras(base_sd, tiny)
    if _loadable(sd, base_sd):
        state_dict_to_keras(sd, tiny)
        _assert_loaded(tiny, sd)
    else:
        TALLY.bad(lambda: state_dict_to_keras(sd, tiny))
        _assert_loaded(tiny, base_sd)  # nothing was assigned


@pytest.mark.interop
@settings(FUZZ, max_examples=25)
@given(data=st.data(), form=st.sampled_from(["memory", "safetensors", "bin"]))
def test_state_dict_mutations_through_load_hf(base_sd, tmp_path_factory, data, form):
    """The same through ``load_hf`` with the config inferred from shapes, from memory and files:
    a ValueError, or a model that holds exactly the (mutated) tensors."""
    import torch
    from safetensors.numpy import save_file

    edits = data.draw(mutations(sorted(base_sd), file_safe=form != "memory"))
    sd = _apply(base_sd, edits)
    src, where = sd, "state dict"
    if form != "memory":
        where = str(tmp_path_factory.mktemp("sd") / f"m.{form}")
        if form == "safetensors":
            save_file({k: np.ascontiguousarray(v) for k, v in sd.items()
                       if v.dtype != _bf16()}, where)
            sd = {k: v for k, v in sd.items() if v.dtype != _bf16()}
        else:
            torch.save({k: torch.from_numpy(np.ascontiguousarray(v.astype(np.float32)
                        if v.dtype == _bf16() else v)) for k, v in sd.items()}, where)
        src = where
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if _loadable(sd, base_sd):
            _assert_loaded(hf_loader.load_hf(src), sd)
            return
        out = TALLY.bad(lambda: hf_loader.load_hf(src), *([where] if form != "memory" else []),
                        allow_success=True)
    if not isinstance(out, Exception):
        # Only a mutation that is itself a consistent variant (e.g. 4 classes) may load.
        _assert_loaded(out, sd)
        assert out.config.num_labels != 5 or out.config.depth_multiplier != 0.25


@pytest.mark.parametrize("config", [
    {"model_type": "bert"}, {"depth_multiplier": 0.5}, {"num_labels": 7}, {"num_channels": 1},
    {"image_size": [64, 32]}, {"image_size": []}, {"image_size": [[64], [64]]},
    {"id2label": {"0": "a"}}, {"tf_padding": "false"}, [1, 2, 3], "config",
])
def test_hf_directory_with_a_config_that_disagrees(sources, tmp_path, config):
    shutil.copytree(sources / "hf", tmp_path / "hf")
    data = json.loads((tmp_path / "hf" / "config.json").read_text())
    new = {**data, **config} if isinstance(config, dict) else config
    (tmp_path / "hf" / "config.json").write_text(json.dumps(new))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        TALLY.bad(lambda: load_any(str(tmp_path / "hf")), str(tmp_path / "hf"))


def test_sharded_index_errors(sources, tmp_path):
    d = tmp_path / "hf"
    d.mkdir()
    shutil.copy(sources / "hf" / "config.json", d)
    shutil.copy(sources / "hf" / "model.safetensors", d / "shard1.safetensors")
    index = d / "model.safetensors.index.json"
    for content in [b"", b"{", b"\xff\xfe", b"[]", json.dumps({"weight_map": []}).encode(),
                    json.dumps({"weight_map": {"a": 3}}).encode(),
                    json.dumps({"weight_map": {"a": "missing.safetensors"}}).encode(),
                    json.dumps({"weight_map": {"a": "shard1.txt"}}).encode()]:
        index.write_bytes(content)
        with contextlib.suppress(FileNotFoundError):
            (d / "model.safetensors").unlink()
        TALLY.bad(lambda: load_any(str(d)), str(d))


# ----------------------------------------------------------------- command-line misuse
def _run_cli(args) -> tuple[int, str]:
    run = cli(*args)
    return run.returncode, run.stderr


@FUZZ
@given(variant=st.one_of(
    st.text(max_size=30),
    st.from_regex(r"mobilenet_v1_[-+0-9.eEinfa]{0,8}_[-+0-9.]{0,7}(_quant)?", fullmatch=True)))
def test_cli_info_any_variant_name(variant):
    """``info`` with any string: a summary, or exit 1 with one line (2 for argparse misuse)."""
    rc, err = _run_cli(["info", variant])
    assert rc in (0, 1, 2), rc
    if rc == 1:
        TALLY.tried += 1
        TALLY.messages[normalize(err.strip())] += 1
        assert err.startswith("mobilenet-v1: error: ") and err.count("\n") == 1, err


@pytest.mark.parametrize("args, code, text", [
    (["predict", "IMG", "--top-k", "0"], 2, "--top-k"),
    (["predict", "IMG", "--batch-size", "-3"], 2, "--batch-size"),
    (["predict", "IMG", "--preprocessing", "magic"], 2, "invalid choice"),
    (["predict", "IMG", "--weights", "mobilenet_v1_9_999"], 1, "unknown official checkpoint"),
    (["predict", "IMG", "--weights", "nowhere/model.keras"], 1, "does not exist"),
    (["export", "SRC", "OUT/m.tflite", "--image-size", "5"], 1, "--image-size"),
    (["export", "SRC", "OUT/m.tflite", "--quantize", "int8"], 1, "calibration"),
    (["export", "SRC", "OUT/m.tflite", "--io-type", "uint8"], 1, "--quantize int8"),
    (["export", "SRC", "OUT/m.tflite", "--calibration-dir", "OUT"], 1, "int8"),
    (["export", "SRC", "OUT/sm", "--format", "saved_model", "--quantize", "float16"], 1,
     "TFLite only"),
    (["export", "SRC", "OUT/m.onnx"], 1, "must end in .tflite"),
    (["convert", "SRC", "OUT/m.onnx"], 1, "cannot tell the output format"),
    (["convert", "SRC", ""], 1, "output path is empty"),
    (["convert", "SRC", "OUT/m.keras/"], 1, "named like a file"),
    (["convert", "SRC", "OUT/m.keras", "--use-ema"], 1, "use_ema"),
    (["convert", "OUT/missing.keras", "OUT/m.keras"], 1, "does not exist"),
    (["info", "resnet_50"], 1, "unknown variant"),
])
def test_cli_misuse_is_one_line_and_writes_nothing(sources, tmp_path, args, code, text):
    img = tmp_path / "x.png"
    Image.new("RGB", (8, 8)).save(img)
    out = tmp_path / "out"
    out.mkdir()
    args = [a.replace("IMG", str(img)).replace("SRC", str(sources / "m.keras"))
            .replace("OUT", str(out)) for a in args]
    rc, err = _run_cli(args)
    TALLY.tried += 1
    TALLY.messages[normalize(err.strip().splitlines()[-1])] += 1
    assert rc == code and text in err, (rc, err)
    assert re.match(r"mobilenet-v1( \w+)?: error: ", err.strip().splitlines()[-1]), err
    if code == 1:
        assert err.count("\n") == 1
    assert os.listdir(out) == [] and sorted(os.listdir(tmp_path)) == ["out", "x.png"]
