"""Output safety of every writer, through the CLI and the Python API, and predict over hundreds
of files.

Each writer (``.keras``, ``.weights.h5``, Hugging Face directory, ``.safetensors``, ``.bin``,
slim ``.ckpt``, SavedModel directory, ``.tflite``) must refuse an existing output without
``--force`` (exit 1, the old output untouched), and a write that fails half-way, by an error or
by Ctrl-C, must leave the previous output intact and no temporary file behind. This one
contract replaces per-module overwrite and partial-write tests.
"""

from __future__ import annotations

import errno
import json
import os
import pty
import re
import resource
import select
import struct
import subprocess
import sys
import time
import warnings

import keras
import numpy as np
import pytest
from conftest import QuickArchive, cli, tiny_model
from PIL import Image
from test_hardening_inputs import Tally, normalize

from tf_mobilenet_v1.images import read_image
from tf_mobilenet_v1.loaders.dispatch import load_any

TALLY = Tally("outputs")
RESULTS: dict = {}


@pytest.fixture(scope="module", autouse=True)
def _summary():
    yield
    TALLY.write()
    out = os.environ.get("HARDENING_SUMMARY_DIR")
    if out and RESULTS:
        with open(os.path.join(out, "predict_many.json"), "w") as f:
            json.dump(RESULTS, f, indent=1)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A random 0.25x model at 64 px (10 classes), saved as .keras: the source of every write."""
    model = tiny_model(seed=21, image_size=64, num_labels=10)
    path = tmp_path_factory.mktemp("src") / "tiny.keras"
    model.save(path)
    return model, str(path)


def _snapshot(root) -> dict[str, tuple]:
    """Every file under ``root`` (temporaries included): content and modification time."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root)
            if os.path.isfile(p):
                with open(p, "rb") as f:
                    out[rel] = (f.read(), os.stat(p).st_mtime_ns)
            else:
                out[rel] = ("dir",)
    return out


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
    from converters import hf

    def write(state_dict, path):
        _partial(path)
        raise exc
    monkeypatch.setattr(hf, "_write_safetensors", write)


def _break_bin(monkeypatch, exc):
    from converters import hf

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
    from converters import saved_model

    class HalfArchive:
        """Stands for keras' ExportArchive (tracing is tested elsewhere): writes, then fails."""

        def write_out(self, filepath, *args, **kwargs):
            os.makedirs(os.path.join(filepath, "variables"), exist_ok=True)
            _partial(os.path.join(filepath, "saved_model.pb"))
            raise exc
    monkeypatch.setattr(saved_model, "build_archive", lambda *a, **k: HalfArchive())


def _break_tflite(monkeypatch, exc):
    from converters import tflite

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
    from converters.convert import convert
    from converters.export import export
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
    if writer == "saved_model":  # tracing is tested elsewhere; here only the writing counts
        from converters import saved_model

        monkeypatch.setattr(saved_model, "build_archive", lambda *a, **k: QuickArchive())
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
    before = _snapshot(out)

    # 3. without --force: exit 1, one line naming the path, nothing touched
    rc, err = _write(via, capsys, command, src, dst)
    assert rc == 1 and err.count("\n") == 1 and "already exists" in err and "force" in err
    assert dst.rstrip(os.sep) in err
    assert _snapshot(out) == before

    # 4. --force, then the write fails half-way (an error, or Ctrl-C): the old output stays
    for exc, code in ((DiskFull(), 1), (KeyboardInterrupt(), 130)):
        with monkeypatch.context() as m:
            breaker(m, exc)
            rc, err = _write(via, capsys, command, src, dst, "--force")
        assert rc == code, err
        assert _snapshot(out) == before, f"{writer}: {type(exc).__name__} changed the output"

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
    before = _snapshot(tmp_path)
    rc, err = _cli("export", src, tmp_path / "m.tflite")
    assert rc == 1 and "labels.txt already exists" in err
    assert _snapshot(tmp_path) == before


def test_convert_to_an_unknown_form_writes_nothing(tiny, tmp_path, capsys):
    _, src = tiny
    for dst in ("out.onnx", "out.h5", "out.pt"):
        rc, err = _cli("convert", src, tmp_path / dst)
        assert rc == 1 and "cannot tell the output format" in err
    assert os.listdir(tmp_path) == []


# ----------------------------------------------------------------- many images
_CHILD = """
import json, resource, sys, time
start = time.time()
from tf_mobilenet_v1.cli import main
from tf_mobilenet_v1.images import read_image
rc = main(sys.argv[2:])
# ru_maxrss survives exec (it may be the forking pytest's); VmHWM belongs to this image alone.
hwm = [int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM")]
with open(sys.argv[1], "w") as f:
    json.dump({"rc": rc, "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
               "hwm_kb": hwm[0] if hwm else None, "seconds": time.time() - start}, f)
sys.exit(rc)
"""

_BAD = {
    "empty": lambda p: p.with_suffix(".jpg").write_bytes(b""),
    "text": lambda p: p.write_text("not an image\n"),
    "truncated": lambda p: p.write_bytes(_png_bytes(p, 40, 50)[:300]),
    "bomb": lambda p: p.write_bytes(_png_header(10_000, 9_000)),
    "dangling_link": lambda p: os.symlink(p.parent / "nowhere.png", p.with_suffix(".jpg")),
    "jpeg_junk": lambda p: p.with_suffix(".jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 64),
}


# Damaged 1x1 TIFFs (byte flips by these seeds): Pillow logs an ERROR for the first six and
# warns about the next six (which still decode); a CLI user must see neither raw.
_TIFF_SEEDS = [105, 148, 307, 313, 327, 348, 23, 27, 31, 37, 42, 49, 0, 1, 2, 3, 4, 5, 6, 7]


def _damaged_tiff(seed: int) -> bytes:
    import io

    buf = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buf, "TIFF")
    data, rng = bytearray(buf.getvalue()), np.random.default_rng(seed)
    for _ in range(int(rng.integers(1, 6))):
        data[int(rng.integers(0, len(data)))] ^= int(rng.integers(1, 256))
    return bytes(data)


def _png_header(w, h):
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + \
            struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) \
        + chunk(b"IEND", b"")


def _png_bytes(seed_path, h, w) -> bytes:
    import io
    import zlib

    rng = np.random.default_rng(zlib.crc32(seed_path.name.encode()))
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _render(stream: str) -> list[str]:
    """What a terminal shows per line: the text after the last carriage return, no escapes."""
    stream = stream.replace("\r\n", "\n")
    stream = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", stream)
    return [line.rsplit("\r", 1)[-1] for line in stream.split("\n")]


def _run_on_a_terminal(cmd, stdout_path, timeout=540) -> str:
    """Run ``cmd`` with stderr on a pseudo-terminal (so the progress bar is drawn)."""
    import fcntl
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))
    with open(stdout_path, "wb") as stdout:
        proc = subprocess.Popen(cmd, stdout=stdout, stderr=slave, stdin=subprocess.DEVNULL,
                                env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    os.close(slave)
    chunks, deadline = [], time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1.0)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        proc.wait(timeout=max(1, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    return b"".join(chunks).decode("utf-8", "replace")


@pytest.mark.slow
def test_predict_500_images_bounded_memory_bad_files_on_the_progress_bar(tiny, tmp_path):
    _, weights = tiny
    d = tmp_path / "images"
    d.mkdir()
    bad, kinds, tiffs = [], sorted(_BAD), []
    for i in range(500):
        p = d / f"{i:03d}.png"
        if i % 25 == 12:
            kind = kinds[(i // 25) % len(kinds)]
            _BAD[kind](p)
            bad.append(next(str(q) for q in (p, p.with_suffix(".jpg")) if os.path.lexists(q)))
        elif i % 25 == 5:
            p = p.with_suffix(".tif")
            p.write_bytes(_damaged_tiff(_TIFF_SEEDS[len(tiffs)]))
            tiffs.append(str(p))
        else:
            p.write_bytes(_png_bytes(p, 16 + i % 61, 16 + (i * 7) % 67))
    paths = sorted(str(p) for p in d.iterdir())
    assert len(paths) == 500 and len(bad) == 20 and len(tiffs) == 20
    for t in tiffs:  # which damaged TIFFs still decode decides what predict must report
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                read_image(t)
            except ValueError:
                bad.append(t)
    assert 20 + 6 <= len(bad) < 40

    stats, out = tmp_path / "stats.json", tmp_path / "out.json"
    cmd = [sys.executable, "-c", _CHILD, str(stats), "predict", str(d), "--weights", weights,
           "--json", "--top-k", "3", "--batch-size", "32"]
    err = _run_on_a_terminal(cmd, out)
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB, the largest child
    info = json.loads(stats.read_text())
    RESULTS.update(images=500, unreadable=len(bad), peak_rss_mib=(info["hwm_kb"] or 0) / 1024,
                   ru_maxrss_mib=info["maxrss_kb"] / 1024, children_maxrss_mib=children / 1024,
                   seconds=info["seconds"])

    assert info["rc"] == 1
    results = json.loads(out.read_text())
    assert [r["image"] for r in results] == paths
    failed = {r["image"]: r["error"] for r in results if "error" in r}
    assert sorted(failed) == sorted(bad)
    for r in results:
        if r["image"] not in failed:
            assert len(r["predictions"]) == 3 and 0 <= r["predictions"][0]["score"] <= 1
    for path, message in failed.items():
        assert path in message
    assert f"{len(bad)} of 500 images could not be classified" in err
    assert re.search(r"classifying:.*\d+/500", err), "no progress bar was drawn"
    # Every error line stands on its own line above the bar, never glued to a bar fragment,
    # and nothing else reaches the terminal (no raw Pillow warning or log record).
    shown = _render(err)
    for path in bad:
        lines = [line for line in shown if path in line]
        assert lines and all(line.startswith("mobilenet-v1: ") for line in lines), lines
    stray = [line for line in shown if line.strip()
             and not line.startswith(("mobilenet-v1: ", "classifying"))]
    assert not stray, stray[:5]
    assert info["maxrss_kb"] < 3 * 2**20 and children < 3 * 2**20
