"""Hardening round two: small files that ask for gigabytes, inputs that never end, and runs
that must stop on Ctrl-C. Every hostile input is made here, in a temporary directory."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time

import numpy as np
import pytest
from conftest import cli, fixture_path, tiny_model
from hostile import child_env, peak_load_mib

from tf_mobilenet_v1.fileio import MAX_WEIGHTS_BYTES

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


def test_many_large_shards_are_refused_before_reading(tmp_path, baseline_mib):
    n = 4
    shards = [f"model-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)]
    for name in shards:
        with open(tmp_path / name, "wb") as f:
            f.truncate(MAX_WEIGHTS_BYTES // 2)  # sparse: costs no disk
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {f"t{i}": name for i, name in enumerate(shards)}}))
    peak, outcome = peak_load_mib(tmp_path)
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


def test_fifo_among_images_is_skipped_with_a_reason(tmp_path):
    os.symlink(fixture_path("images", "burger.jpg"), tmp_path / "a.jpg")
    os.mkfifo(tmp_path / "b.jpg")
    run = cli("predict", "--jsonl", tmp_path, os.fspath(tmp_path / "b.jpg"))
    assert run.returncode == 1 and "Traceback" not in run.stderr
    lines = [json.loads(x) for x in run.stdout.splitlines()]
    assert lines[0]["predictions"][0]["label"] == "cheeseburger"
    assert [x["error"] for x in lines[1:]] == [
        f"cannot read image {tmp_path / 'b.jpg'}: not a regular file (a pipe, socket or device); "
        "skipped"] * 2


def test_config_asking_for_8192_pixels_is_refused(tmp_path):
    from converters.hf import save_hf

    out = save_hf(tiny_model(), tmp_path / "hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    config["image_size"] = 8192
    (tmp_path / "hf" / "config.json").write_text(json.dumps(config))
    line = cli("predict", "--weights", out, fixture_path("images", "burger.jpg")).one_line_error()
    assert "image_size must be an integer in [32, 2048], got 8192" in line


def test_out_of_memory_is_one_line(monkeypatch, capsys):
    import tensorflow as tf

    from tf_mobilenet_v1 import predict

    def exhausted(*args, **kwargs):
        raise tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor with "
                                               "shape[32,4096,4096,32]\nmore detail")

    monkeypatch.setattr(predict, "run_predict", exhausted)
    assert cli("predict", fixture_path("images", "burger.jpg")).returncode == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["mobilenet-v1: error: out of memory; use a smaller --batch-size or image "
                   "size, or close other programs (OOM when allocating tensor with "
                   "shape[32,4096,4096,32])"]


@pytest.mark.slow
@pytest.mark.parametrize("fast", ["0", "1"])
def test_ctrl_c_stops_a_long_run_within_a_second(tmp_path, fast):
    """Interrupted mid-folder (Keras path and the cached-TFLite path): exit 130 at once, the
    lines already printed are complete JSON."""
    photo = fixture_path("images", "burger.jpg")
    for i in range(3000):
        os.symlink(photo, tmp_path / f"{i:05d}.jpg")
    proc = subprocess.Popen([sys.executable, "-m", "tf_mobilenet_v1", "predict", "--jsonl",
                             "--top-k", "1", os.fspath(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=child_env(MOBILENET_V1_FAST=fast))
    try:
        first = proc.stdout.readline()
        assert json.loads(first)["predictions"][0]["label"] == "cheeseburger"
        start = time.monotonic()
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
        stopped = time.monotonic() - start
    finally:
        proc.kill()
    rest = proc.stdout.read().splitlines()
    assert proc.returncode == 130, proc.stderr.read()[-2000:]
    assert all(json.loads(x)["image"] for x in rest)
    assert len(rest) < 2999
    # The README's figure; the bound here leaves room for a loaded CI machine.
    print(f"Ctrl-C to exit (MOBILENET_V1_FAST={fast}): {stopped:.2f} s")
    assert stopped < 3.0
