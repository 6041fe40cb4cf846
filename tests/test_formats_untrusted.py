"""Untrusted files: pickles that run code, tarballs that point outside, absurd configs, bombs,
small files that declare gigabytes, endless streams and FIFOs named as weights, tensors of
dtypes no MobileNet V1 has, non-finite weights and hostile JSON.

A weights file is as untrusted as a download from anywhere: loading one must never run code
(``.bin`` through ``torch.load(weights_only=True)``, ``.keras`` in Keras's safe mode and only
for our own classes), never write outside a private temporary directory (tarballs are read
member by member into memory), and never allocate from a declared size before checking it
(configs are validated and matched against the tensors first; Pillow's pixel limit is on).
"""

from __future__ import annotations

import io
import json
import os
import pickle
import shlex
import shutil
import struct
import tarfile
import tracemalloc
import warnings
import zipfile
import zlib

import keras
import numpy as np
import pytest
from conftest import cli, fixture_path, require_module, snapshot, tiny_model
from hostile import Tally, check_clean, peak_load_mib
from PIL import Image
from tf_mobilenet_v1.converters import hf
from tf_mobilenet_v1.converters.hf import save_hf
from tf_mobilenet_v1.converters.slim import save_slim_checkpoint

from tf_mobilenet_v1 import MobileNetV1ForImageClassification, MobileNetV1Model
from tf_mobilenet_v1.fileio import MAX_WEIGHTS_BYTES
from tf_mobilenet_v1.loaders import hf as hf_loader
from tf_mobilenet_v1.loaders import tarball
from tf_mobilenet_v1.loaders.dispatch import load_any
from tf_mobilenet_v1.loaders.tf_checkpoint import DATA_SUFFIX

TALLY = Tally("untrusted")
# torch warns that the weights-only unpickler meets protocol 5 (our crafted pickles); it refuses.
pytestmark = pytest.mark.filterwarnings("ignore:Detected pickle protocol")



@pytest.fixture(scope="module")
def torch():
    return require_module("torch")


@pytest.fixture(scope="module")
def tiny():
    return tiny_model(seed=5, num_labels=5)


@pytest.fixture(scope="module")
def good(tiny, tmp_path_factory):
    root = tmp_path_factory.mktemp("good")
    save_slim_checkpoint(tiny, str(root / "m.ckpt"))
    hf.save_hf(tiny, root / "hf")
    tiny.save(root / "m.keras")
    return root


def _cli(*args) -> tuple[int, str]:
    run = cli(*args)
    return run.returncode, run.stderr


# ----------------------------------------------------------------- pickles that run code
class _OpenPayload:
    """Unpickling calls ``open(marker, "w")``: a file appears if the pickle is ever loaded."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


class _SystemPayload:
    """Unpickling runs a shell command through ``os.system``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(self.marker)}",)


class _ExecPayload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').close()",)


def _payloads(torch, marker, sd) -> dict[str, bytes]:
    """Malicious ``.bin`` contents in every pickle form torch.load meets."""
    out = {}
    for name, cls in (("open", _OpenPayload), ("system", _SystemPayload),
                      ("exec", _ExecPayload)):
        evil = {**sd, "mobilenet_v1.note": cls(marker)}  # hidden among real tensors
        buf = io.BytesIO()
        torch.save(evil, buf)
        out[f"torch_zip_{name}"] = buf.getvalue()
        buf = io.BytesIO()
        torch.save(evil, buf, _use_new_zipfile_serialization=False)
        out[f"torch_legacy_{name}"] = buf.getvalue()
        for protocol in (0, 2, 5):
            out[f"raw_pickle{protocol}_{name}"] = pickle.dumps({"w": cls(marker)},
                                                               protocol=protocol)
    # hand-written opcodes: GLOBAL posix.system, then REDUCE
    out["opcodes_posix_system"] = (b"cposix\nsystem\n(S'touch " + str(marker).encode()
                                   + b"'\ntR.")
    return out


@pytest.fixture(scope="module")
def torch_sd(torch, tiny):
    return {k: torch.from_numpy(v) for k, v in hf.keras_to_state_dict(tiny).items()}


@pytest.mark.interop
def test_payloads_are_live(tmp_path, torch):
    """Control: each payload really runs its code when unpickled without weights_only."""
    for name, data in _payloads(torch, tmp_path / "marker", {}).items():
        if name.startswith("torch_"):
            continue  # same objects as the raw pickles
        pickle.loads(data)
        assert (tmp_path / "marker").exists(), name
        (tmp_path / "marker").unlink()


@pytest.mark.interop
def test_malicious_bin_is_refused_everywhere(tmp_path, torch, torch_sd, capsys):
    marker = tmp_path / "marker"
    for name, data in _payloads(torch, marker, torch_sd).items():
        case = tmp_path / name
        case.mkdir()
        path = case / "pytorch_model.bin"
        path.write_bytes(data)
        err = TALLY.bad(lambda p=path: hf_loader.load_hf(str(p)), str(path))
        assert "weights_only" in str(err) or "cannot read" in str(err), (name, err)
        TALLY.bad(lambda p=path: load_any(str(p)), str(path))
        TALLY.bad(lambda c=case: load_any(str(c)), str(case))  # as an HF directory
        TALLY.bad(lambda p=path: MobileNetV1Model.from_pretrained(str(p)), str(path))
        rc, err = _cli("convert", path, tmp_path / "out.keras")
        assert rc == 1 and str(path) in err and len(err.strip().splitlines()) == 1
        rc, err = _cli("predict", path, "--weights", path)
        assert rc == 1 and str(path) in err
        assert not marker.exists(), f"{name}: the payload ran"
        assert not (tmp_path / "out.keras").exists()


@pytest.mark.interop
def test_sharded_index_cannot_point_outside(tmp_path, good, torch, torch_sd):
    """An index naming ``../x`` or an absolute path is refused before that file is read."""
    marker = tmp_path / "marker"
    evil = tmp_path / "evil.bin"
    evil.write_bytes(_payloads(torch, marker, torch_sd)["torch_zip_open"])
    hf_dir = tmp_path / "hf"
    hf_dir.mkdir()
    shutil.copy(good / "hf" / "config.json", hf_dir)
    for shard in ("../evil.bin", str(evil), "sub/../../evil.bin", ".."):
        (hf_dir / "pytorch_model.bin.index.json").write_text(
            json.dumps({"weight_map": {"mobilenet_v1.conv_stem.convolution.weight": shard}}))
        err = TALLY.bad(lambda: load_any(str(hf_dir)), str(hf_dir))
        assert "same directory" in str(err) or "weights_only" in str(err)
        assert not marker.exists()


# ----------------------------------------------------------------- .keras archives
def test_keras_lambda_is_never_deserialized(tmp_path, capsys):
    marker = tmp_path / "marker"
    path = str(marker)
    inputs = keras.Input((4,))
    outputs = keras.layers.Lambda(lambda x: (open(path, "w").close(), x)[1])(inputs)
    marker.unlink()  # the call above ran the lambda once, at build time
    keras.Model(inputs, outputs).save(tmp_path / "evil.keras")
    TALLY.bad(lambda: load_any(str(tmp_path / "evil.keras")), str(tmp_path / "evil.keras"))
    TALLY.bad(lambda: MobileNetV1ForImageClassification.from_pretrained(
        str(tmp_path / "evil.keras")), str(tmp_path / "evil.keras"))
    rc, err = _cli("convert", tmp_path / "evil.keras", tmp_path / "out.safetensors")
    assert rc == 1 and "not a MobileNet V1 model" in err
    assert not marker.exists()
    # Control: Keras itself, with its safe mode off, would have run the code.
    keras.saving.load_model(tmp_path / "evil.keras", safe_mode=False)
    assert marker.exists()


def _rewrite_keras(src, dst, config: dict):
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename == "config.json":
                data = json.dumps(config).encode()
            zout.writestr(item, data)
    return str(dst)


@pytest.mark.parametrize("config", [
    {"module": "os", "class_name": "system", "config": {"command": "touch MARKER"},
     "registered_name": "os>system"},
    {"module": "subprocess", "class_name": "Popen", "config": {"args": ["touch", "MARKER"]}},
    {"module": "builtins", "class_name": "exec", "config": "open('MARKER', 'w')"},
    {"module": "keras.layers", "class_name": "Lambda", "config": {"function": "exec"}},
    [], "x",
])
def test_keras_archive_naming_foreign_code_is_refused(tmp_path, good, monkeypatch, config):
    monkeypatch.chdir(tmp_path)
    path = _rewrite_keras(good / "m.keras", tmp_path / "evil.keras", config)
    TALLY.bad(lambda: load_any(path), path)
    assert not (tmp_path / "MARKER").exists()


# ----------------------------------------------------------------- absurd configs
class _WeightSpy:
    """Counts Keras weights created (what building a model allocates)."""

    def __init__(self, monkeypatch):
        self.count = 0
        original = keras.layers.Layer.add_weight

        def add_weight(layer, *args, **kwargs):
            self.count += 1
            return original(layer, *args, **kwargs)
        monkeypatch.setattr(keras.layers.Layer, "add_weight", add_weight)


def _refused_before_allocating(monkeypatch, fn, *names, peak_mb=32):
    spy = _WeightSpy(monkeypatch)
    tracemalloc.start()
    try:
        err = TALLY.bad(fn, *names)
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert spy.count == 0, f"{spy.count} weights were created before refusing"
    assert peak < peak_mb * 2**20, f"peak {peak / 2**20:.0f} MiB"  # time: pytest-timeout's
    return err


ABSURD = [
    {"depth_multiplier": 1e9}, {"depth_multiplier": -0.25}, {"depth_multiplier": 0},
    {"depth_multiplier": 16.0}, {"depth_multiplier": "0.25"}, {"depth_multiplier": None},
    {"depth_multiplier": float("nan")}, {"depth_multiplier": float("inf")},
    {"depth_multiplier": True}, {"image_size": -224}, {"image_size": 10**9},
    {"image_size": "224"}, {"image_size": [10**9, 10**9]}, {"image_size": 224.5},
    {"num_labels": 1e12}, {"num_labels": 10**12}, {"num_labels": -5}, {"num_labels": "5"},
    {"num_labels": 10**6}, {"min_depth": -1}, {"min_depth": 10**9}, {"num_channels": 10**9},
    {"num_channels": 0}, {"layer_norm_eps": "1e-3"}, {"layer_norm_eps": -1.0},
    {"layer_norm_eps": float("inf")}, {"classifier_dropout_prob": "0.1"},
    {"classifier_dropout_prob": 2.0}, {"tf_padding": "false"}, {"hidden_act": {"x": 1}},
    {"output_stride": 10**9}, {"output_stride": "16"}, {"id2label": ["a"] * 5},
    {"id2label": {str(10**12): "x", "1": "a", "2": "b", "3": "c", "4": "d"}},
    {"initializer_range": "big"},
]


def _absurd_id(case):
    return "-".join(f"{k}={str(v)[:12]}" for k, v in case.items())


@pytest.mark.parametrize("case", ABSURD, ids=[_absurd_id(c) for c in ABSURD])
def test_absurd_config_json_is_refused_before_allocating(good, tmp_path, monkeypatch, case):
    d = tmp_path / "hf"
    shutil.copytree(good / "hf", d)
    config = json.loads((d / "config.json").read_text())
    if "num_labels" in case:
        config.pop("id2label"), config.pop("label2id")  # so num_labels alone decides
    (d / "config.json").write_text(json.dumps({**config, **case}))
    # 10**6 labels are allowed by the config; their default names alone take ~170 MiB of
    # Python strings, but no weight is allocated before the shapes are compared.
    peak = 512 if case.get("num_labels") == 10**6 else 32
    err = _refused_before_allocating(monkeypatch, lambda: load_any(str(d)), str(d),
                                     peak_mb=peak)
    assert "config" in str(err)
    if peak == 32:  # the same through from_pretrained (spared for the slow 10**6 names)
        _refused_before_allocating(
            monkeypatch, lambda: MobileNetV1ForImageClassification.from_pretrained(str(d)),
            str(d))


@pytest.mark.parametrize("case", [{"depth_multiplier": 1e9}, {"depth_multiplier": 16.0},
                                  {"image_size": -1}, {"num_labels": 10**6},
                                  {"depth_multiplier": 1.0}, {"min_depth": 4096},
                                  {"hidden_act": "__lambda__"}])
def test_absurd_config_inside_keras_archive(good, tmp_path, monkeypatch, case):
    base = json.loads(zipfile.ZipFile(good / "m.keras").read("config.json"))
    inner = {k: v for k, v in base["config"].items() if k not in ("id2label", "label2id")}
    path = _rewrite_keras(good / "m.keras", tmp_path / "absurd.keras",
                          {**base, "config": {**inner, **case}})
    peak = 512 if case.get("num_labels") == 10**6 else 32
    _refused_before_allocating(monkeypatch, lambda: load_any(path), path, peak_mb=peak)


# ----------------------------------------------------------------- tarballs
def _add(tar, name, data: bytes = b"", **fields):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for k, v in fields.items():
        setattr(info, k, v)
    tar.addfile(info, io.BytesIO(data) if data else None)


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    """tmp_path holds everything; temporary files go to tmp_path/tmp, watched for leftovers."""
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "tmp"))
    return tmp_path


def _evil_tarballs(root, good) -> dict[str, tuple[str, bool]]:
    """name -> (tarball path, whether it still holds a readable model)."""
    ckpt = {s: (good / f"m.ckpt{s}").read_bytes() for s in (".index", DATA_SUFFIX)}
    outside = root / "outside"
    out = {}

    def make(name, loadable, build):
        path = root / f"{name}.tgz"
        with tarfile.open(path, "w:gz") as tar:
            build(tar)
        out[name] = (str(path), loadable)

    make("dotdot", True, lambda t: [_add(t, f"../../../escaped.ckpt{s}", d)
                                    for s, d in ckpt.items()])
    make("absolute", True, lambda t: [_add(t, f"{outside}/abs.ckpt{s}", d)
                                      for s, d in ckpt.items()])
    make("symlink_dir", True, lambda t: (
        _add(t, "m", type=tarfile.SYMTYPE, linkname=str(outside)),
        [_add(t, f"m/m.ckpt{s}", d) for s, d in ckpt.items()]))
    make("symlink_graph", False, lambda t: _add(t, "m/frozen_graph.pb", type=tarfile.SYMTYPE,
                                                linkname="/etc/passwd"))
    make("symlink_index", False, lambda t: (
        _add(t, "m/m.ckpt.index", type=tarfile.SYMTYPE, linkname="../../outside/x.index"),
        _add(t, f"m/m.ckpt{DATA_SUFFIX}", ckpt[DATA_SUFFIX])))
    make("hardlink_index", False, lambda t: (
        _add(t, "m/m.ckpt.index", type=tarfile.LNKTYPE, linkname="/etc/passwd"),
        _add(t, f"m/m.ckpt{DATA_SUFFIX}", ckpt[DATA_SUFFIX])))
    make("hardlink_dotdot", False, lambda t: _add(t, "m/frozen_graph.pb", type=tarfile.LNKTYPE,
                                                  linkname="../../../etc/passwd"))
    make("fifo_graph", False, lambda t: _add(t, "m/frozen_graph.pb", type=tarfile.FIFOTYPE))
    make("device_index", False, lambda t: (
        _add(t, "m/m.ckpt.index", type=tarfile.CHRTYPE, devmajor=1, devminor=3),
        _add(t, f"m/m.ckpt{DATA_SUFFIX}", ckpt[DATA_SUFFIX])))
    return out


def test_tarballs_never_write_outside(scratch, good, capsys):
    outside = scratch / "outside"
    outside.mkdir()
    cases = _evil_tarballs(scratch, good)
    before = snapshot(scratch.parent)
    for name, (path, loadable) in cases.items():
        if loadable:
            model = load_any(path)  # read from memory, by base name: harmless
            assert model.config.num_labels == 5
        else:
            TALLY.bad(lambda p=path: load_any(p), path)
        assert snapshot(scratch.parent) == before, f"{name} wrote something"
    rc, err = _cli("convert", cases["symlink_dir"][0], scratch / "out.keras")
    assert rc == 0 and (scratch / "out.keras").exists()
    assert os.listdir(outside) == [] and os.listdir(scratch / "tmp") == []
    assert not (scratch.parent / "escaped.ckpt.index").exists()


def test_naive_extraction_would_have_escaped(scratch, good):
    """Control: the symlink-directory tarball really is malicious for a naive extractor."""
    (scratch / "outside").mkdir()
    path, _ = _evil_tarballs(scratch, good)["symlink_dir"]
    with tarfile.open(path) as tar:
        tar.extractall(scratch / "naive", filter="fully_trusted")
    assert sorted(os.listdir(scratch / "outside")) == ["m.ckpt.data-00000-of-00001",
                                                       "m.ckpt.index"]
    shutil.rmtree(scratch / "naive")
    for p in (scratch / "outside").iterdir():
        p.unlink()
    with tarfile.open(path) as tar, pytest.raises(tarfile.FilterError):
        tar.extractall(scratch / "safe", filter="data")  # Python's own safe filter agrees


def test_member_claiming_too_many_bytes_is_refused(scratch, good, monkeypatch):
    path = scratch / "big.tgz"
    with tarfile.open(path, "w:gz") as tar:
        for s in (".index", DATA_SUFFIX):
            tar.add(good / f"m.ckpt{s}", arcname=f"m/m.ckpt{s}")
    monkeypatch.setattr(tarball, "MAX_WEIGHTS_BYTES", 1000)
    err = TALLY.bad(lambda: load_any(str(path)), str(path))
    assert "members claim 884,998 bytes" in str(err)
    assert os.listdir(scratch / "tmp") == []


def test_frozen_graph_constant_declaring_a_huge_shape(tmp_path, monkeypatch):
    """A Const may declare 10^12 elements with one value that make_ndarray would repeat."""
    import tensorflow as tf

    graph = tf.compat.v1.GraphDef()
    node = graph.node.add(name="MobilenetV1/Conv2d_0/weights", op="Const")
    proto = tf.make_tensor_proto(np.float32(0.5))
    proto.tensor_shape.CopyFrom(tf.TensorShape([10**6, 10**6]).as_proto())
    node.attr["value"].tensor.CopyFrom(proto)
    path = tmp_path / "bomb_frozen.pb"
    path.write_bytes(graph.SerializeToString())
    err = _refused_before_allocating(monkeypatch, lambda: load_any(str(path)), str(path))
    assert "declares the shape" in str(err)


# ----------------------------------------------------------------- image bombs
def _png_header(w, h, mode=2):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + \
            struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, mode, 0, 0, 0)) \
        + chunk(b"IEND", b"")


def _gif_claiming(w, h) -> bytes:
    buf = io.BytesIO()
    Image.new("P", (1, 1)).save(buf, "GIF")
    data = bytearray(buf.getvalue())
    data[6:10] = struct.pack("<HH", w, h)  # logical screen size, which Pillow reports
    return bytes(data)


def test_pillow_limit_is_left_on():
    assert Image.MAX_IMAGE_PIXELS == 1024 * 1024 * 1024 // 4 // 3  # Pillow's own default


@pytest.mark.parametrize("name, data", [
    ("warn_range.png", _png_header(10_000, 9_000)),  # > MAX, < 2 MAX: Pillow only warns
    ("error_range.png", _png_header(20_000, 20_000, mode=0)),
    ("screen.gif", _gif_claiming(65_535, 65_535)),
])
def test_decompression_bombs_are_refused(tmp_path, monkeypatch, name, data):
    from tf_mobilenet_v1.images import read_image

    path = tmp_path / name
    path.write_bytes(data)
    err = _refused_before_allocating(monkeypatch, lambda: read_image(path), str(path))
    assert "decompression-bomb" in str(err)


def test_bombs_in_predict_are_reported_and_the_rest_classified(good, tmp_path, capsys):
    d = tmp_path / "imgs"
    d.mkdir()
    (d / "bomb.png").write_bytes(_png_header(10_000, 9_000))
    Image.fromarray(np.zeros((1, 400_000, 3), np.uint8)).save(d / "strip.png")
    Image.fromarray(np.full((40, 50, 3), 90, np.uint8)).save(d / "ok.png")
    rc, err = _cli("predict", d, "--weights", good / "m.keras", "--json",
                   "--preprocessing", "crop")
    assert rc == 1
    assert "bomb.png" in err and "decompression-bomb" in err
    assert "strip.png" in err and "MAX_IMAGE_PIXELS" in err
    assert "2 of 3 images could not be classified" in err


def test_check_clean_rejects_raw_library_errors():
    """The suite's own judge: a raw library exception is never accepted as a clean error."""
    import json as _json

    for raw in (_json.JSONDecodeError("x", "doc", 0), UnicodeDecodeError("utf-8", b"", 0, 1, "x"),
                struct.error("unpack requires a buffer"), KeyError("101"),
                zipfile.BadZipFile("Bad CRC-32")):
        with pytest.raises(AssertionError):
            check_clean(raw)


# ----------------------------------------------------------------- no unsafe loader anywhere


def _safetensors(path, dtype: str, nbytes: int = 4):
    header = json.dumps({"w": {"dtype": dtype, "shape": [nbytes], "data_offsets": [0, nbytes]}})
    header = header.encode() + b" " * (-len(header) % 8)
    path.write_bytes(struct.pack("<Q", len(header)) + header + bytes(nbytes))


@pytest.mark.parametrize("dtype", ["F8_E4M3", "F8_E5M2", "U8", "I8", "BOOL"])
def test_safetensors_of_an_unusual_dtype(tmp_path, dtype):
    path = tmp_path / "odd.safetensors"
    _safetensors(path, dtype)
    line = cli("info", path).one_line_error()
    assert f"entry 'w' is dtype {dtype}, which MobileNet V1 weights never are" in line


def _odd_torch_tensors():
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch deprecates its quantized tensors
        return {
            "float8_e4m3fn": torch.zeros(4, dtype=torch.float8_e4m3fn),
            "qint8": torch.quantize_per_tensor(torch.zeros(4), 0.1, 0, torch.qint8),
            "sparse_coo": torch.zeros(4, 4).to_sparse(),
            "sparse_csr": torch.zeros(4, 4).to_sparse_csr(),
        }


@pytest.mark.interop
@pytest.mark.parametrize("kind", ["float8_e4m3fn", "qint8", "sparse_coo", "sparse_csr"])
def test_bin_with_float8_quantized_or_sparse_tensors(tmp_path, kind):
    from conftest import require_module

    torch = require_module("torch")
    path = tmp_path / "odd.bin"
    torch.save({"w": _odd_torch_tensors()[kind]}, path)
    line = cli("info", path).one_line_error()
    what = f"a {kind} tensor" if kind.startswith("sparse") else f"dtype {kind}"
    assert f"entry 'w' is {what}, which MobileNet V1 weights never are" in line


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("form", [".keras", ".weights.h5"])
def test_keras_files_with_non_finite_weights_are_refused(tmp_path, bad, form):
    model = tiny_model()
    w = model.get_layer("Conv2d_3_pointwise").conv.kernel
    value = np.asarray(w.numpy())
    value.flat[7] = bad
    w.assign(value)
    path = tmp_path / f"diverged_0.25_32{form}"
    model.save(path) if form == ".keras" else model.save_weights(path)
    line = cli("predict", "--weights", path, fixture_path("images", "burger.jpg")).one_line_error()
    assert "Conv2d_3_pointwise/conv/kernel holds NaN or infinite values" in line
    with pytest.raises(ValueError, match="NaN or infinite"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a bare .weights.h5 does not know its image size
        load_any(str(path))


@pytest.fixture
def hf_dir(tmp_path):
    return save_hf(tiny_model(), tmp_path / "hf")


def test_dangling_config_json_is_an_error(hf_dir, tmp_path):
    config = os.path.join(hf_dir, "config.json")
    os.remove(config)
    os.symlink(tmp_path / "moved_away.json", config)
    with pytest.raises(ValueError, match="symbolic link to .*moved_away.json, which does not"):
        load_any(hf_dir)


def test_fifo_config_json_is_an_error(hf_dir):
    config = os.path.join(hf_dir, "config.json")
    os.remove(config)
    os.mkfifo(config)
    line = cli("info", hf_dir).one_line_error()
    assert "config.json is a named pipe (FIFO), not a regular file" in line


@pytest.mark.parametrize("text, reason", [
    ("[" * 100_000 + "]" * 100_000, "nests too deeply"),
    ('{"image_size": ' + "9" * 5000 + "}", "number too large"),
])
def test_hostile_json_errors_name_the_file(hf_dir, text, reason):
    config = os.path.join(hf_dir, "config.json")
    with open(config, "w") as f:
        f.write(text)
    line = cli("info", hf_dir).one_line_error()
    assert f"cannot read config {config}: " in line and reason in line


# What a refused source may cost on top of a clean small load (TensorFlow's own footprint is
# the same in both): far below the gigabytes these inputs asked for before.
HEADROOM_MIB = 150


@pytest.fixture(scope="module")
def baseline_mib(tmp_path_factory):
    """Peak memory of loading a real (0.25_128) checkpoint in a fresh process."""
    peak, outcome = peak_load_mib(fixture_path("official", "mobilenet_v1_0.25_128"))
    assert outcome == "loaded"
    return peak


def _frozen_graph_asking_for(nbytes_each: int, count: int, dtype) -> bytes:
    import tensorflow as tf

    graph = tf.compat.v1.GraphDef()
    side = int((nbytes_each // np.dtype(dtype).itemsize) ** 0.5)
    for i in range(count):
        node = graph.node.add(name=f"MobilenetV1/Conv2d_{i}/weights", op="Const")
        proto = tf.make_tensor_proto(np.zeros((), dtype))
        proto.tensor_shape.CopyFrom(tf.TensorShape([side, side]).as_proto())
        node.attr["value"].tensor.CopyFrom(proto)
    return graph.SerializeToString()


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [np.float32, np.complex128])
def test_tiny_frozen_graph_declaring_gigabytes(tmp_path, baseline_mib, dtype):
    """Each constant is under the cap, together they ask for about 2 GB (dtype width counts)."""
    path = tmp_path / "amplify_frozen.pb"
    path.write_bytes(_frozen_graph_asking_for(MAX_WEIGHTS_BYTES // 2, 8, dtype))
    assert path.stat().st_size < 1000
    peak, outcome = peak_load_mib(path)
    assert outcome.startswith("ValueError") and "corrupt or crafted" in outcome, outcome
    assert peak < baseline_mib + HEADROOM_MIB, (peak, baseline_mib)
    print(f"frozen .pb of {path.stat().st_size} bytes ({np.dtype(dtype).name}): peak {peak} MiB "
          f"(real 0.25_128 checkpoint: {baseline_mib} MiB)")


class _Zeros(io.RawIOBase):
    def __init__(self, n):
        self.left = n

    def readinto(self, b):
        n = min(len(b), self.left)
        b[:n] = bytes(n)
        self.left -= n
        return n


@pytest.mark.slow
def test_small_tgz_unpacking_to_hundreds_of_megabytes(tmp_path, baseline_mib):
    src = fixture_path("official", "mobilenet_v1_0.25_128")
    path = tmp_path / "amplify.tgz"
    size = MAX_WEIGHTS_BYTES + (32 << 20)
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        tar.add(src / "mobilenet_v1_0.25_128.ckpt.index", arcname="m/m.ckpt.index")
        info = tarfile.TarInfo("m/m.ckpt.data-00000-of-00001")
        info.size = size
        tar.addfile(info, _Zeros(size))
    assert path.stat().st_size < 2 << 20
    peak, outcome = peak_load_mib(path)
    assert "claim" in outcome and "corrupt or crafted" in outcome, outcome
    assert peak < baseline_mib + HEADROOM_MIB, (peak, baseline_mib)
    print(f".tgz of {path.stat().st_size:,} bytes claiming {size:,}: peak {peak} MiB")


def _large_shards(folder):
    """An HF folder of 4 sparse shards (no disk used) that together exceed any MobileNet V1."""
    n = 4
    shards = [f"model-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)]
    for name in shards:
        with open(folder / name, "wb") as f:
            f.truncate(MAX_WEIGHTS_BYTES // 2)
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {f"t{i}": name for i, name in enumerate(shards)}}))
    return folder


def test_many_large_shards_are_refused_before_reading(tmp_path):
    with pytest.raises(ValueError, match="shards.*more than any MobileNet V1"):
        load_any(str(_large_shards(tmp_path)))


@pytest.mark.slow  # two fresh processes; the refusal itself is checked in the fast tier above
def test_many_large_shards_cost_no_memory(tmp_path, baseline_mib):
    peak, outcome = peak_load_mib(_large_shards(tmp_path))
    assert "shards" in outcome and "more than any MobileNet V1" in outcome, outcome
    assert peak < baseline_mib + HEADROOM_MIB


@pytest.mark.parametrize("target", ["/dev/zero", "/dev/urandom"])
@pytest.mark.parametrize("name", ["weights.tgz", "frozen_graph.pb", "model.safetensors"])
def test_endless_streams_as_weights(tmp_path, target, name):
    link = tmp_path / name
    link.symlink_to(target)
    line = cli("info", link).one_line_error()
    assert "character device, not a regular file" in line


def test_fifo_as_weights_does_not_hang(tmp_path):
    fifo = tmp_path / "weights.safetensors"
    os.mkfifo(fifo)
    image = fixture_path("images", "burger.jpg")
    line = cli("predict", "--weights", fifo, image).one_line_error()
    assert "named pipe (FIFO)" in line


def test_config_asking_for_8192_pixels_is_refused(tmp_path):
    from tf_mobilenet_v1.converters.hf import save_hf

    out = save_hf(tiny_model(), tmp_path / "hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    config["image_size"] = 8192
    (tmp_path / "hf" / "config.json").write_text(json.dumps(config))
    line = cli("predict", "--weights", out, fixture_path("images", "burger.jpg")).one_line_error()
    assert "image_size must be an integer in [32, 2048], got 8192" in line


@pytest.mark.parametrize("member, size", [("model.weights.h5", 300 << 20),
                                          ("config.json", 20 << 20)])
def test_a_keras_archive_declaring_too_much_is_refused_before_decompressing(tmp_path, member,
                                                                             size):
    """A few hundred KB of .keras whose weights (or config: a million labels) declare more
    than any MobileNet V1: refused from the zip directory alone, ours or a user's own model,
    before a byte is inflated."""
    import zipfile

    from tf_mobilenet_v1.loaders.dispatch import load_any

    path = tmp_path / "bomb.keras"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("metadata.json", "{}")
        if member != "config.json":
            zf.writestr("config.json", '{"class_name": "MobileNetV1ForImageClassification"}')
        with zf.open(member, "w", force_zip64=True) as f:
            block = b"\0" * (1 << 20)
            for _ in range(size >> 20):
                f.write(block)
    assert path.stat().st_size < 1 << 20
    with pytest.raises(ValueError, match=f"its {member} declares {size:,} bytes"):
        load_any(str(path))
    run = cli("export", str(path), str(tmp_path / "out.tflite"))
    assert run.returncode == 1 and "declares" in run.one_line_error()
