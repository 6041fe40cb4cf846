"""Output safety of every writer, through the CLI and the Python API.

Each writer (``.keras``, ``.weights.h5``, Hugging Face directory, ``.safetensors``, ``.bin``,
slim ``.ckpt``, SavedModel directory, ``.tflite``) must refuse an existing output without
``--force`` (exit 1, the old output untouched), and a write that fails half-way, by an error or
by Ctrl-C, must leave the previous output intact and no temporary file behind. This one
contract replaces per-module overwrite and partial-write tests.
"""

from __future__ import annotations

import errno
import os
import time
import warnings

import keras
import numpy as np
import pytest
from conftest import QuickArchive, cli, snapshot, tiny_model
from hostile import Tally, normalize

from tf_mobilenet_v1.loaders.dispatch import load_any

TALLY = Tally("outputs")



@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A random 0.25x model at 64 px (10 classes), saved as .keras: the source of every write."""
    model = tiny_model(seed=21, image_size=64, num_labels=10)
    path = tmp_path_factory.mktemp("src") / "tiny.keras"
    model.save(path)
    return model, str(path)


def _cli(*args) -> tuple[int, str]:
    run = cli(*args)
    if run.returncode:  # a refused or failed write: tally it with its message
        TALLY.tried += 1
        TALLY.messages[normalize(run.stderr.strip().splitlines()[-1])] += 1
    return run.returncode, run.stderr


# ----------------------------------------------------------------- failing writers
class DiskFull(OSError):
    def __init__(self):
        super().__init__(errno.ENOSPC, "No space left on device")


def _partial(path, data=b"PK\x03\x04 half-written junk " * 8):
    with open(path, "wb") as f:
        f.write(data)


def _break_keras_save(monkeypatch, exc):
    def save(self, filepath, *args, **kwargs):
        _partial(filepath)
        raise exc
    monkeypatch.setattr(keras.Model, "save", save)


def _break_safetensors(monkeypatch, exc):
    from tf_mobilenet_v1.converters import hf

    def write(state_dict, path):
        _partial(path)
        raise exc
    monkeypatch.setattr(hf, "_write_safetensors", write)


def _break_bin(monkeypatch, exc):
    from tf_mobilenet_v1.converters import hf

    def write(torch, state_dict, path):
        _partial(path)
        raise exc
    monkeypatch.setattr(hf, "_write_bin", write)


def _break_save_v2(monkeypatch, exc):
    import tensorflow as tf

    def save_v2(prefix, tensor_names, shape_and_slices, tensors, name=None):
        _partial(f"{prefix}.index")
        _partial(f"{prefix}.data-00000-of-00001")
        raise exc
    monkeypatch.setattr(tf.raw_ops, "SaveV2", save_v2)


def _break_saved_model(monkeypatch, exc):
    from tf_mobilenet_v1.converters import saved_model

    class HalfArchive:
        """Stands for keras' ExportArchive (tracing is tested elsewhere): writes, then fails."""

        def write_out(self, filepath, *args, **kwargs):
            os.makedirs(os.path.join(filepath, "variables"), exist_ok=True)
            _partial(os.path.join(filepath, "saved_model.pb"))
            raise exc
    monkeypatch.setattr(saved_model, "build_archive", lambda *a, **k: HalfArchive())


def _break_tflite(monkeypatch, exc):
    from tf_mobilenet_v1.converters import tflite

    class HalfWriter:
        def __init__(self, path):
            self.f = open(path, "wb")  # noqa: SIM115 - closed in __exit__

        def __enter__(self):
            return self

        def __exit__(self, *exc_info):
            self.f.close()

        def write(self, data):
            self.f.write(data[: len(data) // 2])
            raise exc

    # The conversion itself is tested elsewhere; here only the file write fails half-way.
    monkeypatch.setattr(tflite, "convert_tflite", lambda *a, **k: b"TFL3" * 4096)
    monkeypatch.setattr(tflite, "open", lambda path, mode="r", *a, **k: HalfWriter(path),
                        raising=False)


_CONVERTED: dict = {}  # (model, arguments) -> TFLite bytes
_SOURCE: dict = {}  # the source's path -> the model read from it, once for the module


# writer -> (command, output name, files the output consists of, how to break it)
WRITERS = {
    "keras": ("convert", "out.keras", ["out.keras"], _break_keras_save),
    # .weights.h5 is cut out of an in-memory .keras archive (h5py segfaults on a full disk)
    "weights_h5": ("convert", "out.weights.h5", ["out.weights.h5"], _break_keras_save),
    "hf_dir": ("convert", "out_hf", ["out_hf"], _break_safetensors),
    "safetensors": ("convert", "out.safetensors", ["out.safetensors"], _break_safetensors),
    "bin": ("convert", "out.bin", ["out.bin"], _break_bin),
    "slim_ckpt": ("convert", "out.ckpt", ["out.ckpt.index", "out.ckpt.data-00000-of-00001"],
                  _break_save_v2),
    "saved_model": ("export", "sm", ["sm"], _break_saved_model),
    "tflite": ("export", "m.tflite", ["m.tflite", "labels.txt"], _break_tflite),
}


def _args(command, src, dst, *extra):
    args = [command, src, dst, *extra]
    if command == "export" and dst.endswith("sm"):
        args += ["--format", "saved_model"]
    return args


def _api(command, src, dst, force=False) -> tuple[int, str]:
    """The Python function behind the CLI command, with the CLI's exit codes."""
    from tf_mobilenet_v1.converters.convert import convert
    from tf_mobilenet_v1.converters.export import export

    from tf_mobilenet_v1.errors import first_line

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if command == "convert":
                convert(src, dst, force=force)
            else:
                export(src, dst, format="saved_model" if dst.endswith("sm") else "tflite",
                       force=force)
    except KeyboardInterrupt:
        return 130, ""
    except Exception as e:  # noqa: BLE001 - the test inspects whatever the writer raised
        return 1, first_line(e) + "\n"
    return 0, ""


def _write(via, capsys, command, src, dst, *extra) -> tuple[int, str]:
    if via == "cli":
        return _cli(*_args(command, src, dst, *extra))
    return _api(command, src, dst, force="--force" in extra)


@pytest.mark.parametrize("via", ["cli", "api"])
@pytest.mark.parametrize("writer", [  # .bin needs torch, the [interop] extra
    pytest.param(w, marks=pytest.mark.interop) if w == "bin" else w for w in sorted(WRITERS)])
def test_writer_never_overwrites_or_leaves_partial_output(tiny, tmp_path, capsys, monkeypatch,
                                                          writer, via):
    """The contract of every writer, through the CLI and through its Python function."""
    model, src = tiny
    command, name, parts, breaker = WRITERS[writer]
    from tf_mobilenet_v1.loaders import dispatch

    def read_once(path, **kwargs):  # reading is tested elsewhere; here only the writing counts
        if path != src:
            return load_any(path, **kwargs)
        if path not in _SOURCE:
            _SOURCE[path] = load_any(path, **kwargs)
        return _SOURCE[path]
    monkeypatch.setattr(dispatch, "load_any", read_once)
    if writer == "saved_model":  # tracing is tested elsewhere; here only the writing counts
        from tf_mobilenet_v1.converters import saved_model

        monkeypatch.setattr(saved_model, "build_archive", lambda *a, **k: QuickArchive())
    if writer == "tflite":  # the module's one model, really converted once per option set
        from tf_mobilenet_v1.converters import tflite

        convert = tflite.convert_tflite

        def once(m, **k):
            key = (m.config.to_json_string(), tuple(sorted(k.items())))
            if key not in _CONVERTED:
                _CONVERTED[key] = convert(m, **k)
            return _CONVERTED[key]
        monkeypatch.setattr(tflite, "convert_tflite", once)
    out = tmp_path / "out_dir"
    out.mkdir()
    dst = str(out / name)

    # 1. a failing write with nothing there before leaves nothing at all
    with monkeypatch.context() as m:
        breaker(m, DiskFull())
        rc, err = _write(via, capsys, command, src, dst)
    assert rc == 1 and "No space left on device" in err, err
    assert os.listdir(out) == [], f"left behind: {os.listdir(out)}"

    # 2. a real write, whose output later attempts must keep
    rc, err = _write(via, capsys, command, src, dst)
    assert rc == 0, err
    assert sorted(os.listdir(out)) == sorted(parts)
    before = snapshot(out)

    # 3. without --force: exit 1, one line naming the path, nothing touched
    rc, err = _write(via, capsys, command, src, dst)
    assert rc == 1 and err.count("\n") == 1 and "already exists" in err and "force" in err
    assert dst.rstrip(os.sep) in err
    assert snapshot(out) == before

    # 4. --force, then the write fails half-way (an error, or Ctrl-C): the old output stays
    for exc, code in ((DiskFull(), 1), (KeyboardInterrupt(), 130)):
        with monkeypatch.context() as m:
            breaker(m, exc)
            rc, err = _write(via, capsys, command, src, dst, "--force")
        assert rc == code, err
        assert snapshot(out) == before, f"{writer}: {type(exc).__name__} changed the output"

    # 5. --force with a working writer replaces it, and what it wrote loads back exactly
    time.sleep(0.01)
    rc, err = _write(via, capsys, command, src, dst, "--force")
    assert rc == 0, err
    assert sorted(os.listdir(out)) == sorted(parts)
    main_file = os.path.join(out, parts[0])
    if os.path.isdir(main_file):  # SavedModel / HF directory: the graph or config file
        main_file = os.path.join(main_file, "saved_model.pb" if command == "export"
                                 else "config.json")
        before_main = before[os.path.relpath(main_file, out)]
    else:
        before_main = before[parts[0]]
    assert os.stat(main_file).st_mtime_ns != before_main[1]
    if command == "export":
        return  # exports hold no Keras weights to compare; their outputs are tested elsewhere
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        back = load_any(dst)
    for v, w in zip(back.weights, model.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(v.numpy()), np.asarray(w.numpy()))


def test_existing_labels_with_other_names_are_kept(tiny, tmp_path, capsys):
    """TFLite's labels.txt beside the model: another model's labels need --force too."""
    _, src = tiny
    (tmp_path / "labels.txt").write_text("cat\ndog\n")
    before = snapshot(tmp_path)
    rc, err = _cli("export", src, tmp_path / "m.tflite")
    assert rc == 1 and "labels.txt already exists" in err
    assert snapshot(tmp_path) == before


def test_convert_to_an_unknown_form_writes_nothing(tiny, tmp_path, capsys):
    _, src = tiny
    for dst in ("out.onnx", "out.h5", "out.pt"):
        rc, err = _cli("convert", src, tmp_path / dst)
        assert rc == 1 and "cannot tell the output format" in err
    assert os.listdir(tmp_path) == []


# ----------------------------------------------------------------- many images


