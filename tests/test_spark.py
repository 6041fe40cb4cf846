"""``mobilenet-v1 spark`` on a real Spark standalone cluster (a master and two workers on
localhost, started here from pyspark's jars, always stopped): ``predict --jsonl``'s lines,
error rows for bad files, local weights shipped to the executors."""

from __future__ import annotations

import io
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import PHOTOS, cli, fixture_path, photo_folder, require_module, tiny_model

pytestmark = [pytest.mark.spark, pytest.mark.slow]


@pytest.fixture(scope="module")
def spark(tmp_path_factory):
    """A session on a fresh standalone cluster: 2 workers of 1 core each."""
    require_module("pyspark")
    from tf_mobilenet_v1.spark import session, standalone_cluster

    os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"  # the driver JVM binds where the workers are
    os.environ["PYSPARK_PYTHON"] = sys.executable
    logs = tmp_path_factory.mktemp("spark-logs")
    with standalone_cluster(workers=2, cores=1, memory="2g", log_dir=str(logs)) as url:
        s = session(url, batch_size=8)
        try:
            yield s
        finally:
            s.stop()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """The fixture photos, a truncated JPEG, a text file named .jpg, a non-image extension
    (skipped by both) and a photo in a subfolder with a space in its name."""
    root = photo_folder(tmp_path_factory.mktemp("photos"), "fake.jpg")
    (root / "sub dir").mkdir()
    shutil.copy(fixture_path("images", "cat.bmp"), root / "sub dir" / "cat 2.BMP")
    return root


def _predict_lines(folder, **kwargs) -> list[str]:
    from tf_mobilenet_v1.predict import run_predict

    stream = io.StringIO()
    assert run_predict([str(folder)], output="jsonl", stream=stream, **kwargs) == 1
    return sorted(stream.getvalue().splitlines())


def _spark_lines(out: Path) -> list[str]:
    assert (out / "_SUCCESS").exists()
    return sorted(line for part in out.glob("part-*") for line in part.read_text().splitlines())


def test_cluster_writes_predicts_jsonl_lines(spark, folder, tmp_path, capsys):
    from tf_mobilenet_v1.spark import run_spark

    assert spark.sparkContext.master.startswith("spark://127.0.0.1:")
    assert run_spark(str(folder), str(tmp_path / "out"), spark=spark) == 0
    lines = _spark_lines(tmp_path / "out")
    assert lines == _predict_lines(folder)  # byte for byte, error lines included
    assert len(lines) == 7 and sum('"error"' in line for line in lines) == 2
    err = capsys.readouterr().err
    assert "classified 5 images, 2 unreadable" in err and spark.sparkContext.uiWebUrl in err
    # Both workers' executors took part (the driver counts as one more block manager).
    assert spark.sparkContext._jsc.sc().getExecutorMemoryStatus().size() == 3


def test_keras_on_the_executors_matches_no_fast_predict(spark, folder, tmp_path):
    """Paths (not bytes) in a DataFrame, the Keras model on the executors."""
    from tf_mobilenet_v1.spark import add_predictions

    paths = sorted(str(folder / n) for n in (*PHOTOS, "truncated.jpg"))
    df = spark.createDataFrame([(p,) for p in paths], "path string")
    rows = add_predictions(df, image_col="path", path_col=None, fast=False,
                           top_k=3).orderBy("path").collect()
    ref = {json.loads(line)["image"]: json.loads(line) for line in _predict_lines(
        folder, fast=False, top_k=3)}
    assert [r.path for r in rows] == paths
    for r in rows:
        want = ref[r.path]
        if "error" in want:
            assert r.predictions.predictions is None and r.predictions.error == want["error"]
            continue
        assert r.predictions.error is None
        got = r.predictions.predictions
        assert [p["index"] for p in got] == [p["index"] for p in want["predictions"]]
        assert [p["label"] for p in got] == [p["label"] for p in want["predictions"]]
        # Other batches than predict's: float32 rounding differs in the last digits.
        np.testing.assert_allclose([p["score"] for p in got],
                                   [p["score"] for p in want["predictions"]], atol=1e-5)


def test_local_weights_are_shipped_with_the_job(spark, folder, tmp_path):
    weights = tmp_path / "weights" / "tiny.keras"
    weights.parent.mkdir()
    tiny_model(image_size=64).save(weights)
    out = tmp_path / "out"
    run = cli("spark", "--input", folder / "*.bmp", "--output", out, "--weights", weights,
              "--master", spark.sparkContext.master)
    assert run.returncode == 0, run.stderr
    from tf_mobilenet_v1.predict import run_predict

    stream = io.StringIO()
    bmps = sorted(str(p) for p in folder.glob("*.bmp"))
    assert run_predict(bmps, weights=str(weights), output="jsonl", stream=stream) == 0
    assert _spark_lines(out) == sorted(stream.getvalue().splitlines())
    assert [f.rsplit("/", 2)[-2:] for f in spark.sparkContext.listFiles] == [
        ["files", "tiny.keras"]]


def test_cli_errors_are_one_line_and_keep_the_output(spark, folder, tmp_path):
    url = spark.sparkContext.master
    run = cli("spark", "--input", tmp_path / "nothing-*.jpg", "--output", tmp_path / "o",
              "--master", url)
    assert run.one_line_error() == (
        f"mobilenet-v1: error: --input {tmp_path}/nothing-*.jpg matches no file")
    run = cli("spark", "--input", folder / "*.txt", "--output", tmp_path / "o", "--master", url)
    assert "matches no image file" in run.one_line_error()
    assert not (tmp_path / "o").exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "keep.txt").write_text("a user's file")
    run = cli("spark", "--input", folder, "--output", tmp_path / "mine", "--master", url)
    assert "exists; give a new directory" in run.one_line_error()
    assert (tmp_path / "mine" / "keep.txt").read_text() == "a user's file"


def test_bad_weights_fail_in_one_line(spark, folder, tmp_path):
    url = spark.sparkContext.master
    run = cli("spark", "--input", folder, "--output", tmp_path / "o", "--master", url,
              "--weights", "mobilenet_v1_1.0_22")  # a typo: refused before any job
    assert "mobilenet_v1_1.0_224" in run.one_line_error()
    (tmp_path / "bad.keras").write_bytes(b"PK\x03\x04 not a zip archive")
    run = cli("spark", "--input", folder / "*.bmp", "--output", tmp_path / "o", "--master",
              url, "--weights", tmp_path / "bad.keras")  # fails on the executors
    assert run.returncode == 1 and "Traceback" not in run.stderr
    progress, line = run.errors  # the UI address, then the executor's error in one line
    assert progress.startswith("mobilenet-v1: Spark ")
    assert line.startswith("mobilenet-v1: error: the Spark job failed on an executor: "
                           "ValueError: ") and "bad.keras is not a .keras archive" in line
    assert not (tmp_path / "o" / "_SUCCESS").exists()
