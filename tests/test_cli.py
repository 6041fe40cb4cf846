"""The command line: `info`, usage errors and misuse (one line, nothing written), which
subcommands import TensorFlow, out of memory and Ctrl-C, and the README's promises about the CLI
and CI."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import cli, fixture_path
from hostile import FUZZ, child_env
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def test_info_prints_counts(capsys):
    assert cli("info", "mobilenet_v1_1.0_224").returncode == 0
    out = capsys.readouterr().out
    assert "4,233,001" in out and "567,716,352" in out and "depth_multiplier" in out


def test_info_unknown_variant_is_one_line_error(capsys):
    assert cli("info", "mobilenet_v1_x_224").returncode == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("mobilenet-v1: error: unknown variant") and "\n" not in err


def test_ci_runs_the_readme_test_command():
    cmd = subprocess.run(
        ["awk", "/<!-- test-command -->/{getline; getline; print; exit}", "README.md"],
        cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    assert cmd == "bash .ci/tests.sh"
    script = (ROOT / ".ci" / "tests.sh").read_text()
    assert "set -euo pipefail" in script  # pytest's exit 5 (no tests) fails the run too
    assert 'pip_in .venv-quickstart "$src[test]"' in script and "pytest" in script
    assert "mobilenet-v1 predict" in (ROOT / "README.md").read_text()


def test_info_reads_a_checkpoint_path(capsys):
    ckpt = fixture_path("slim_reference", "mobilenet_v1_0.5_160", "mobilenet_v1_0.5_160.ckpt.index")
    assert cli("info", str(ckpt)).returncode == 0
    out = capsys.readouterr().out
    assert "mobilenet_v1_0.5_160" in out and "1,332,105" in out


_NO_TF = """
import contextlib, io, sys
from tf_mobilenet_v1.cli import main
codes = []
for args in (["info", "mobilenet_v1_0.25_128_quant"], ["info", "resnet_50"],
             ["convert", "nowhere/m.keras", "out.keras"], ["export", "mobilenet_v1_9_999"],
             ["export", "mobilenet_v1_1.0_224", "--quantize", "int8"],
             ["export", "mobilenet_v1_1.0_224", "--format", "onnx", "--quantize", "int8"],
             ["predict", "x.jpg", "--top-k", "0"], ["predcit", "x.jpg"]):
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        try:
            codes.append(main(args))
        except SystemExit as e:
            codes.append(e.code)
print(codes, sorted(m for m in ("tensorflow", "keras", "torch") if m in sys.modules))
"""


def test_cheap_subcommands_do_not_import_tensorflow(tmp_path):
    """Import-time behaviour, so a fresh process: a registry name's info, usage errors and
    missing sources answer without TensorFlow's seconds of start-up."""
    import sys

    proc = subprocess.run([sys.executable, "-c", _NO_TF], capture_output=True, text=True,
                          cwd=tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[0, 1, 1, 1, 1, 1, 2, 2] []"


def test_unknown_options_are_refused_outside_beam():
    run = cli("info", "mobilenet_v1_1.0_224", "--runner=DirectRunner")
    assert run.returncode == 2 and "unrecognized arguments: --runner=DirectRunner" in run.stderr


@FUZZ
@given(variant=st.one_of(
    st.text(max_size=30),
    st.from_regex(r"mobilenet_v1_[-+0-9.eEinfa]{0,8}_[-+0-9.]{0,7}(_quant)?", fullmatch=True)))
def test_cli_info_any_variant_name(variant):
    """``info`` with any string: a summary, or exit 1 with one line (2 for argparse misuse)."""
    run = cli("info", variant)
    rc, err = run.returncode, run.stderr
    assert rc in (0, 1, 2), rc
    if rc == 1:
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
def test_cli_misuse_is_one_line_and_writes_nothing(tiny_keras, tmp_path, args, code, text):
    img = tmp_path / "x.png"
    Image.new("RGB", (8, 8)).save(img)
    out = tmp_path / "out"
    out.mkdir()
    args = [a.replace("IMG", str(img)).replace("SRC", tiny_keras[1]).replace("OUT", str(out))
            for a in args]
    run = cli(*args)
    rc, err = run.returncode, run.stderr
    assert rc == code and text in err, (rc, err)
    assert re.match(r"mobilenet-v1( \w+)?: error: ", err.strip().splitlines()[-1]), err
    if code == 1:
        assert err.count("\n") == 1
    assert os.listdir(out) == [] and sorted(os.listdir(tmp_path)) == ["out", "x.png"]


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
        proc.wait(timeout=30)  # a run that ignores Ctrl-C fails here
        stopped = time.monotonic() - start
    finally:
        proc.kill()
    rest = proc.stdout.read().splitlines()
    assert proc.returncode == 130, proc.stderr.read()[-2000:]
    assert all(json.loads(x)["image"] for x in rest)
    assert len(rest) < 2999
    # The README's figure, printed (no wall-clock assertion: a hang fails the wait above).
    print(f"Ctrl-C to exit (MOBILENET_V1_FAST={fast}): {stopped:.2f} s")


# ----------------------------------------------------------------- meeting users halfway
def test_typos_get_a_suggestion_and_the_subcommands_usage():
    run = cli("predcit", "x.jpg")
    assert run.returncode == 2 and "did you mean 'predict'?" in run.stderr
    run = cli("predict", "--top_k", "3", "x.jpg")
    assert run.returncode == 2
    assert run.stderr.startswith("usage: mobilenet-v1 predict")
    assert "unrecognized arguments: --top_k; did you mean '--top-k'?" in run.stderr
    run = cli("export", "m", "--format", "tfl")
    assert run.returncode == 2 and "did you mean 'tflite'?" in run.stderr


def test_info_lists_the_registry_without_tensorflow_work():
    run = cli("info", "--list")
    lines = run.stdout.splitlines()
    assert run.returncode == 0 and len(lines) == 32
    assert lines[0].startswith("mobilenet_v1_1.0_224 ") and "bundled with the package" in lines[0]
    assert sum("_quant " in line for line in lines) == 16
    assert all("top-1" in line for line in lines)
    assert cli("info").returncode == 2 and cli("info", "--list", "x").returncode == 2


def test_urls_and_skipped_files_are_explained(tmp_path, tiny_keras):
    _, weights = tiny_keras
    photo = fixture_path("images", "burger.jpg")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "photo_without_extension").write_bytes(open(photo, "rb").read())
    os.symlink(photo, tmp_path / "a.jpg")
    run = cli("predict", "--weights", weights, "--no-fast", str(tmp_path),
              "https://example.com/cat.jpg")
    assert run.returncode == 1
    assert "cannot read image https://example.com/cat.jpg: URLs are not fetched; download " \
        "the image first" in run.stderr
    assert "skipped 2 file(s) in the folders without an image extension" in run.stderr
    assert "name a file explicitly" in run.stderr
    explicit = cli("predict", "--weights", weights, "--no-fast", "--jsonl",
                   str(tmp_path / "photo_without_extension"))
    assert explicit.returncode == 0 and "predictions" in explicit.stdout


def test_a_missing_optional_dependency_is_named_before_loading(tmp_path, monkeypatch):
    """``convert m.bin`` without torch: the one line says what to install (the version the
    project tests with), before anything loads."""
    import importlib.util

    (tmp_path / "m.bin").write_bytes(b"not read at all")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "torch" else real(name, *a))
    run = cli("convert", str(tmp_path / "m.bin"), str(tmp_path / "out.keras"))
    assert run.returncode == 1
    assert "needs torch: pip install torch==2.13.0" in run.one_line_error()


def test_warnings_are_one_line_of_the_cli(tmp_path):
    from conftest import tiny_model

    tiny_model().save_weights(tmp_path / "w.weights.h5")
    run = cli("convert", str(tmp_path / "w.weights.h5"), str(tmp_path / "o.keras"),
              keep_warnings=True)
    assert run.returncode == 0
    (line,) = [x for x in run.stderr.splitlines() if "warning" in x]
    assert line.startswith("mobilenet-v1: warning: ") and "stores weights only" in line
    assert "UserWarning" not in run.stderr and "warnings.warn" not in run.stderr
