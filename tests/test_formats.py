"""Every weights form against one contract, fuzzed: damaged files of each form (the table
``KINDS``), the state-dict importer and sharded Hugging Face indexes.

The contract checked throughout: a good input gives a correct result; a bad one ends in a
``ValueError`` (``OSError`` for a missing file) whose first line says what is wrong and, for
files, names the file. Never a raw exception from TensorFlow, protobuf, h5py, safetensors,
torch, zipfile, json or struct, and never a partial output. Every bad input tried and every
distinct error message seen is tallied; set ``HARDENING_SUMMARY_DIR`` to get the counts as JSON.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import math
import os
import shutil
import tarfile
import warnings

import numpy as np
import pytest
from conftest import cli, randomize, tiny_model
from hostile import FUZZ, Tally, corruptions
from hypothesis import given, settings
from hypothesis import strategies as st
from tf_mobilenet_v1.converters.hf import keras_to_state_dict, save_hf
from tf_mobilenet_v1.converters.slim import save_slim_checkpoint
from tf_mobilenet_v1.converters.tflite import export_tflite

from tf_mobilenet_v1 import MobileNetV1ForImageClassification, MobileNetV1Model, formats
from tf_mobilenet_v1.errors import PretrainedWarning
from tf_mobilenet_v1.loaders import hf as hf_loader
from tf_mobilenet_v1.loaders.dispatch import load_any
from tf_mobilenet_v1.loaders.hf import state_dict_to_keras
from tf_mobilenet_v1.loaders.tf_checkpoint import DATA_SUFFIX, read_checkpoint

SIZE = 32
# Hypothesis prints the (large) state-dict fixtures it is given when it reports an example.
pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr")


# ----------------------------------------------------------------- the tally


TALLY = Tally("formats")



# ----------------------------------------------------------------- image processor


# ----------------------------------------------------------------- a tiny model, every format
@pytest.fixture(scope="module")
def tiny():
    return tiny_model(seed=11, image_size=SIZE, num_labels=5)


@pytest.fixture(scope="module")
def diverged():
    """``tiny`` after a diverged training run: one NaN in ``Conv2d_3_pointwise``."""
    model = tiny_model(seed=11, image_size=SIZE, num_labels=5)
    kernel = model.get_layer("Conv2d_3_pointwise").conv.kernel
    value = np.asarray(kernel.numpy())
    value.flat[7] = np.nan
    kernel.assign(value)
    return model


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
    export_tflite(tiny, root / "m.tflite", outputs="logits")
    _write_form("keras_h5", tiny, root / "h5")
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
    "tflite": ("m.tflite", "m.tflite"),
    "keras_h5": ("h5/m.h5", "h5/m.h5"),
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
        _same_weights(out, tiny.folded() if kind == "tflite" else tiny)


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


def _loadable(sd: dict, base: dict, from_file: bool = False) -> bool:
    """The importer's contract as an oracle: same keys (``num_batches_tracked`` optional),
    same shapes, floating dtypes, finite values; the counters may be any array, except that
    a file's entries (counters too) must all be of a dtype weights files hold."""
    if not set(sd) <= set(base):
        return False
    for key in base:
        value = sd.get(key)
        if key.endswith("num_batches_tracked"):
            if key in sd and not isinstance(value, np.ndarray):
                return False
            if key in sd and from_file and value.dtype.name not in hf_loader.TENSOR_DTYPES:
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
        if _loadable(sd, base_sd, from_file=form != "memory"):
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





# ----------------------------------------------------------------- the contract, per form
FORM_FILES = {"keras": "m.keras", "weights_h5": "m.weights.h5", "hf_dir": "hf",
              "safetensors": "m.safetensors", "bin": "m.bin", "slim_ckpt": "m.ckpt",
              "tarball": "m.tgz", "frozen_pb": "m.pb", "tflite": "m.tflite",
              "keras_h5": "m.h5"}
FORM_PARAMS = [pytest.param(f.name, marks=pytest.mark.interop) if f.name == "bin" else f.name
               for f in formats.FORMS]  # .bin needs torch, the [interop] extra


def _write_form(name: str, model, root) -> str:
    """``model`` in the form ``name`` under ``root``: through the form's own writer, or for
    the read-only forms from a slim checkpoint as Google's releases are made."""
    root.mkdir(parents=True)
    path = str(root / FORM_FILES[name])
    form = formats.BY_NAME[name]
    if form.writer:
        return form.write(model, path)
    if name == "tflite":  # written by `export`, float32 logits as our exports make them
        return export_tflite(model, path, outputs="logits")
    if name == "keras_h5":  # keras.applications' MobileNet holding the same weights
        import keras

        from tf_mobilenet_v1.loaders.keras_applications import name_table

        cfg = model.config
        theirs = keras.applications.MobileNet(
            alpha=cfg.depth_multiplier, input_shape=(cfg.image_size, cfg.image_size, 3),
            classes=cfg.num_labels, weights=None)
        by_path = {v.path: v for v in theirs.weights}
        ours = {v.path: v for v in model.weights}
        for path_ours, path_theirs in name_table(head=True).items():
            by_path[path_theirs].assign(ours[path_ours].numpy())
        theirs.save(path)
        return path
    ckpt = formats.BY_NAME["slim_ckpt"].write(model, str(root / "m.ckpt"))
    if name == "tarball":
        with tarfile.open(path, "w:gz") as tar:
            for suffix in (".index", DATA_SUFFIX):
                tar.add(ckpt + suffix, arcname=f"m/m.ckpt{suffix}")
    else:
        raw = {k: v for k, v in read_checkpoint(ckpt).items() if k != "global_step"}
        with open(path, "wb") as f:
            f.write(_frozen_graph_bytes(raw))
    return path


def test_every_form_is_in_the_contract_tests():
    assert sorted(FORM_FILES) == sorted(f.name for f in formats.FORMS)
    damaged = {"keras", "weights_h5", "safetensors", "bin", "hf_config", "hf_weights",
               "ckpt_index", "ckpt_data", "pb", "tgz_checkpoint", "tgz_graph", "tflite",
               "keras_h5"}
    assert set(KINDS) == damaged  # every form's files, damaged, in test_damaged_file_of_...


@pytest.mark.parametrize("name", FORM_PARAMS)
def test_every_form_keeps_the_contract(tiny, diverged, tmp_path, name):
    """Recognised as itself; read back bit-exact; the one head policy (keep, drop, fresh);
    a wrong variant names the tensor; NaN weights are refused."""
    path = _write_form(name, tiny, tmp_path / "good")
    assert formats.recognise(path).name == name
    # A .tflite holds batch norm folded into the convolutions (every TFLite MobileNet does).
    reference = tiny.folded() if name == "tflite" else tiny
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # .weights.h5: image size unknown
        kept = load_any(path)  # a classifier: its head is kept
        assert isinstance(kept, MobileNetV1ForImageClassification)
        assert kept.config.num_labels == 5
        _same_weights(kept, reference)
        with pytest.warns(PretrainedWarning, match="head \\(Logits\\) is left out on purpose"):
            backbone = MobileNetV1Model.from_pretrained(path)
        with pytest.warns(PretrainedWarning, match="5 classes; the new 3-class Logits head"):
            fresh = MobileNetV1ForImageClassification.from_pretrained(path, num_labels=3)
        for model in (backbone, fresh):
            for layer in ("Conv2d_0", "Conv2d_13_pointwise"):
                np.testing.assert_array_equal(model.get_layer(layer).conv.kernel.numpy(),
                                              reference.get_layer(layer).conv.kernel.numpy())
        assert fresh.output_shape == (None, 3)
        with pytest.raises(ValueError, match=r"has shape .* needs"):
            MobileNetV1ForImageClassification.from_pretrained(path, depth_multiplier=0.5)

        bad = _write_form(name, diverged, tmp_path / "nan")
        with pytest.raises(ValueError, match="NaN or infinite"):
            load_any(bad)
