"""Crafted checkpoint indexes: entries that make TensorFlow's bundle reader abort the process
are refused in one line before TensorFlow sees them (hardening round two)."""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys

import pytest
from conftest import tiny_model

from converters.slim import save_slim_checkpoint

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


def _load_in_child(prefix: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tf_mobilenet_v1", "info", prefix],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})


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


@pytest.mark.parametrize("change, reason", [
    (_negative, "negative dimension"), (_rank, "rank 44"), (_dtype, "unknown dtype 99"),
    (_truncated, "outside its data file"), (_size, "needs"),
])
def test_crafted_entries_are_refused_in_one_line(checkpoint, change, reason):
    _crafted(checkpoint, TENSOR, lambda e: None)  # our rewriting alone keeps it loadable
    assert _load_in_child(checkpoint).returncode == 0
    _crafted(checkpoint, TENSOR, change)
    run = _load_in_child(checkpoint)
    assert run.returncode == 1, (run.returncode, run.stderr[-2000:])  # never a signal
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and reason in lines[0], lines
    assert "truncated or corrupt (or crafted)" in lines[0]
    assert TENSOR in lines[0] or reason == "rank 44"


@pytest.mark.parametrize("change", [_negative, _dtype])
def test_tensorflow_itself_aborts_on_these_entries(checkpoint, change):
    """Why the index is checked first: TensorFlow's own reader kills the process (SIGABRT)."""
    _crafted(checkpoint, TENSOR, change)
    code = ("import sys, tensorflow as tf; r = tf.train.load_checkpoint(sys.argv[1]); "
            "[r.get_tensor(n) for n in r.get_variable_to_shape_map()]")
    run = subprocess.run([sys.executable, "-c", code, checkpoint], capture_output=True,
                         timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert run.returncode == -signal.SIGABRT


def test_an_index_that_is_no_table_is_refused(checkpoint):
    with open(checkpoint + ".index", "wb") as f:
        f.write(os.urandom(4096))
    run = _load_in_child(checkpoint)
    assert run.returncode == 1 and "does not end in the table magic number" in run.stderr
