"""``mobilenet-v1 beam``: Apache Beam RunInference gives ``predict --jsonl``'s answers, keeps
going past bad files, and its handler serves every weights form, exports included."""

from __future__ import annotations

import glob
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import PHOTOS, cli, fixture_path, photo_folder, require_module, tiny_model
from hostile import child_env

pytestmark = pytest.mark.beam


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """The fixture photos, a truncated JPEG, a text file named .png and a non-image file."""
    return photo_folder(tmp_path_factory.mktemp("photos"), "fake.png")


def _lines(pattern: str) -> list[dict]:
    out = []
    for path in sorted(glob.glob(pattern)):
        with open(path, encoding="utf-8") as f:
            out += [json.loads(line) for line in f if line.strip()]
    return sorted(out, key=lambda r: r["image"])


@pytest.fixture(scope="module")
def predicted(folder):
    """``mobilenet-v1 predict --jsonl`` on the same files, the reference."""
    from tf_mobilenet_v1.predict import run_predict

    stream = io.StringIO()
    images = sorted(str(folder / n) for n in (*PHOTOS, "truncated.jpg", "fake.png"))
    assert run_predict(images, output="jsonl", stream=stream) == 1  # two files are bad
    return {r["image"]: r for r in map(json.loads, stream.getvalue().splitlines())}


def _check_against_predict(out_prefix: str, predicted: dict, folder) -> None:
    results = _lines(out_prefix + "-[0-9]*-of-*.jsonl")
    assert [r["image"] for r in results] == sorted(str(folder / n) for n in PHOTOS)
    for r in results:
        ref = predicted[r["image"]]["predictions"]
        assert [p["index"] for p in r["predictions"]] == [p["index"] for p in ref]
        assert [p["label"] for p in r["predictions"]] == [p["label"] for p in ref]
        np.testing.assert_allclose([p["score"] for p in r["predictions"]],
                                   [p["score"] for p in ref], atol=1e-5)
    errors = _lines(out_prefix + "-errors-*.jsonl")
    assert [e["image"] for e in errors] == [str(folder / "fake.png"),
                                           str(folder / "truncated.jpg")]
    for e in errors:
        assert e["error"].startswith(f"cannot read image {e['image']}")
        assert predicted[e["image"]]["error"] == e["error"]  # the same reason as predict


@pytest.mark.slow
def test_direct_runner_equals_predict_jsonl(folder, predicted, tmp_path, capsys):
    require_module("apache_beam")
    from tf_mobilenet_v1.beam import run_beam

    assert run_beam([str(folder / "*")], str(tmp_path / "preds")) == 0
    _check_against_predict(str(tmp_path / "preds"), predicted, folder)
    assert "classified 4 images, 2 unreadable" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_on_multi_processing_direct_runner(folder, predicted, tmp_path):
    require_module("apache_beam")
    out = str(tmp_path / "out" / "preds")
    run = subprocess.run(
        [sys.executable, "-m", "tf_mobilenet_v1", "beam", "--input", str(folder / "*.jpg"),
         "--input", str(folder / "*.bmp"), "--input", str(folder / "*.png"), "--output", out,
         "--direct_running_mode=multi_processing", "--direct_num_workers=2"],
        capture_output=True, text=True, timeout=900,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert run.returncode == 0, run.stderr[-3000:]
    _check_against_predict(out, predicted, folder)
    # The workers' set-up logging is off unless asked for: one "Logging handler created."
    # line per worker remains (logged before the level applies), against about 20 before.
    chatter = [line for line in run.stderr.splitlines() if line.startswith("INFO:")]
    assert len(chatter) <= 2, chatter


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_portable_runner_with_an_external_worker_pool(folder, predicted, tmp_path):
    """Beam's portable path, which serializes the pipeline and the model handler as Dataflow,
    Flink and Spark do (the DirectRunner skips that): a local job service and a worker pool
    of SDK harnesses, each its own process."""
    require_module("apache_beam")
    from tf_mobilenet_v1.beam import run_beam

    jobs, pool = _free_port(), _free_port()
    # The pool starts each worker as `python ...`: this venv's python.
    env = child_env(PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    logs = [open(tmp_path / f"{n}.log", "wb") for n in ("jobs", "pool")]
    procs = [subprocess.Popen([sys.executable, "-m", module, flag], env=env, stdout=log,
                              stderr=subprocess.STDOUT)
             for module, flag, log in (
                 ("apache_beam.runners.portability.local_job_service_main", f"--port={jobs}",
                  logs[0]),
                 ("apache_beam.runners.worker.worker_pool_main", f"--service_port={pool}",
                  logs[1]))]
    try:
        for port in (jobs, pool):
            for _ in range(120):
                with socket.socket() as s:
                    if s.connect_ex(("127.0.0.1", port)) == 0:
                        break
                time.sleep(0.5)
        out = str(tmp_path / "preds")
        assert run_beam([str(folder / "*")], out, [
            "--runner=PortableRunner", f"--job_endpoint=localhost:{jobs}",
            "--environment_type=EXTERNAL", f"--environment_config=localhost:{pool}"]) == 0
        _check_against_predict(out, predicted, folder)
        assert b"Starting worker" in (tmp_path / "pool.log").read_bytes()  # it did the work
    finally:
        for p in procs:
            p.terminate()
            p.wait(30)
        for log in logs:
            log.close()


def test_cli_reports_an_empty_pattern_in_one_line(tmp_path):
    require_module("apache_beam")

    missing = str(tmp_path / "nothing" / "*.jpg")
    assert cli("beam", "--input", missing, "--output", str(tmp_path / "p")).returncode == 1
    assert not list(tmp_path.glob("p*"))


@pytest.mark.slow
def test_handler_serves_keras_tflite_and_saved_model(folder, tmp_path):
    """One handler for every form: the exports answer like the Keras model they came from."""
    require_module("apache_beam")
    from tf_mobilenet_v1.converters.saved_model import export_saved_model
    from tf_mobilenet_v1.converters.tflite import export_tflite

    from tf_mobilenet_v1.beam import MobileNetV1ModelHandler

    model = tiny_model(image_size=64)
    model.save(tmp_path / "m.keras")
    export_tflite(model, tmp_path / "lite" / "m.tflite")
    export_saved_model(model, tmp_path / "sm")
    batch = [(str(folder / n), (folder / n).read_bytes()) for n in (*PHOTOS, "fake.png")]
    answers = {}
    for form in ("m.keras", "lite/m.tflite", "sm"):
        handler = MobileNetV1ModelHandler(str(tmp_path / form), top_k=3)
        results = list(handler.run_inference(batch, handler.load_model()))
        assert [r.example for r in results] == [path for path, _ in batch]
        assert "error" in results[-1].inference
        answers[form] = [r.inference["predictions"] for r in results[:-1]]
    for form in ("lite/m.tflite", "sm"):
        for ours, theirs in zip(answers["m.keras"], answers[form], strict=True):
            assert [p["index"] for p in ours] == [p["index"] for p in theirs], form
            assert [p["label"] for p in ours] == [p["label"] for p in theirs], form
            np.testing.assert_allclose([p["score"] for p in ours],
                                       [p["score"] for p in theirs], atol=1e-5)


@pytest.mark.slow
def test_hostile_files_in_the_glob_become_error_lines(tmp_path):
    """A FIFO named *.jpg (which would block a worker for ever) and a 2 GB sparse "photo"
    (read whole into memory): each an error line with its reason; the photo beside them is
    classified and the job succeeds."""
    require_module("apache_beam")
    weights = tmp_path / "m.keras"
    tiny_model(image_size=64).save(weights)
    images = tmp_path / "in"
    images.mkdir()
    shutil.copy(fixture_path("images", "burger.jpg"), images / "burger.jpg")
    os.mkfifo(images / "fifo.jpg")
    with open(images / "big.jpg", "wb") as f:
        f.truncate(2 << 30)
    out = str(tmp_path / "out" / "p")
    run = cli("beam", "--input", str(images / "*.jpg"), "--output", out, "--weights", weights)
    assert run.returncode == 0, run.stderr
    assert [r["image"] for r in _lines(out + "-0*.jsonl")] == [str(images / "burger.jpg")]
    errors = {e["image"]: e["error"] for e in _lines(out + "-errors-*.jsonl")}
    assert sorted(errors) == [str(images / "big.jpg"), str(images / "fifo.jpg")]
    assert "more than" in errors[str(images / "big.jpg")]
    assert "not a regular file" in errors[str(images / "fifo.jpg")] or \
        "named pipe" in errors[str(images / "fifo.jpg")]


def test_a_clean_run_is_quiet(tmp_path):
    """No Beam import noise, and when nothing failed no empty errors file to look at. (The
    import happens in a child: this process may have imported Beam already.)"""
    require_module("apache_beam")
    code = ("import tf_mobilenet_v1.beam, logging; logging.getLogger().warning('visible')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, env=child_env())
    assert "apitools" not in proc.stderr and "visible" in proc.stderr
    from tf_mobilenet_v1.beam import _remove_empty_shards

    (tmp_path / "p-errors-00000-of-00001.jsonl").write_text("")
    (tmp_path / "q-errors-00000-of-00002.jsonl").write_text("")
    (tmp_path / "q-errors-00001-of-00002.jsonl").write_text('{"image": "x"}\n')
    _remove_empty_shards(str(tmp_path / "p-errors-*.jsonl"))
    _remove_empty_shards(str(tmp_path / "q-errors-*.jsonl"))  # one holds an error: kept
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "q-errors-00000-of-00002.jsonl", "q-errors-00001-of-00002.jsonl"]


def test_an_output_prefix_under_a_regular_file_is_one_line(tmp_path):
    require_module("apache_beam")
    (tmp_path / "afile").write_text("mine")
    images = tmp_path / "in"
    images.mkdir()
    shutil.copy(fixture_path("images", "cat.bmp"), images / "cat.bmp")
    run = cli("beam", "--input", str(images / "*.bmp"), "--output", tmp_path / "afile" / "p")
    assert run.returncode == 1
    assert "afile is not a directory" in run.one_line_error()
    assert "Traceback" not in run.stderr and (tmp_path / "afile").read_text() == "mine"
