"""Crafted checkpoint indexes: entries that make TensorFlow's bundle reader abort the process
are refused in one line before TensorFlow sees them (``loaders/ckpt_index.py``)."""

from __future__ import annotations

import os
import shutil
import signal
import struct
import subprocess
import sys

import pytest
from conftest import tiny_model
from hostile import run_cli_many
from tf_mobilenet_v1.converters.slim import save_slim_checkpoint

MAGIC = 0xDB4775248B80FB57


def _crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
    return crc ^ 0xFFFFFFFF


def _masked_crc(data: bytes) -> int:
    crc = _crc32c(data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _block(entries) -> bytes:
    body = b"".join(_varint(0) + _varint(len(k)) + _varint(len(v)) + k + v for k, v in entries)
    body += struct.pack("<II", 0, 1)  # one restart point at 0
    return body


def _write_table(path, entries) -> None:
    """A LevelDB-style table as TensorFlow writes bundle indexes (uncompressed blocks)."""
    out = bytearray()

    def add(block):
        handle = _varint(len(out)) + _varint(len(block))
        out.extend(block + b"\0" + struct.pack("<I", _masked_crc(block + b"\0")))
        return handle

    data = add(_block(entries))
    meta = add(_block([]))
    index = add(_block([(entries[-1][0] + b"\xff", data)]))
    footer = (meta + index).ljust(40, b"\0") + struct.pack("<Q", MAGIC)
    out.extend(footer)
    with open(path, "wb") as f:
        f.write(out)


def _read_entries(path):
    from tf_mobilenet_v1.loaders.ckpt_index import _read_table

    return _read_table(str(path))


@pytest.fixture
def checkpoint(tmp_path):
    prefix = str(tmp_path / "model.ckpt")
    save_slim_checkpoint(tiny_model(), prefix)
    return prefix


def _crafted(prefix: str, tensor: str, change) -> None:
    from tensorflow.core.protobuf import tensor_bundle_pb2

    entries = _read_entries(prefix + ".index")
    out = []
    for key, value in entries:
        if key == tensor.encode():
            entry = tensor_bundle_pb2.BundleEntryProto()
            entry.ParseFromString(value)
            change(entry)
            value = entry.SerializeToString()
        out.append((key, value))
    _write_table(prefix + ".index", out)


TENSOR = "MobilenetV1/Conv2d_0/weights"


def _negative(entry):
    entry.shape.dim[0].size = -5


def _rank(entry):
    for _ in range(40):
        entry.shape.dim.add().size = 1


def _dtype(entry):
    entry.dtype = 99


def _truncated(entry):
    entry.offset = 10 ** 9


def _size(entry):
    entry.size = entry.size * 1000


CASES = [(_negative, "negative dimension"), (_rank, "rank 44"), (_dtype, "unknown dtype 99"),
         (_truncated, "outside its data file"), (_size, "needs")]


def test_crafted_entries_are_refused_in_one_line(tmp_path):
    """Each crafted index in its own checkpoint, all read by one child process (a regression
    would abort it, which is why a child reads them): exit 1 with one line, never a signal."""
    original = save_slim_checkpoint(tiny_model(), str(tmp_path / "original" / "model.ckpt"))
    prefixes = []
    for i, change in enumerate([lambda e: None] + [c for c, _ in CASES] + [None]):
        prefix = str(tmp_path / f"case{i}" / "model.ckpt")
        shutil.copytree(os.path.dirname(original), os.path.dirname(prefix))
        if change is None:  # no table at all
            with open(prefix + ".index", "wb") as f:
                f.write(os.urandom(4096))
        else:
            _crafted(prefix, TENSOR, change)  # case 0: our rewriting alone keeps it loadable
        prefixes.append(prefix)
    runs = run_cli_many([["info", p] for p in prefixes])
    assert runs[0].returncode == 0, runs[0].stderr[-2000:]
    assert "does not end in the table magic number" in runs[-1].one_line_error()
    for run, (change, reason) in zip(runs[1:-1], CASES, strict=True):
        line = run.one_line_error()
        assert reason in line and "truncated or corrupt (or crafted)" in line, change.__name__
        assert TENSOR in line or reason == "rank 44"


@pytest.mark.slow
@pytest.mark.parametrize("change", [_negative, _dtype])
def test_tensorflow_itself_aborts_on_these_entries(checkpoint, change):
    """Why the index is checked first: TensorFlow's own reader kills the process (SIGABRT)."""
    _crafted(checkpoint, TENSOR, change)
    code = ("import sys, tensorflow as tf; r = tf.train.load_checkpoint(sys.argv[1]); "
            "[r.get_tensor(n) for n in r.get_variable_to_shape_map()]")
    run = subprocess.run([sys.executable, "-c", code, checkpoint], capture_output=True,
                         timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert run.returncode == -signal.SIGABRT

