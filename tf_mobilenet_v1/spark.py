"""Classify images with Apache Spark (``pip install ".[spark]"`` in the checkout): any
master (``local[*]``, a standalone cluster, YARN, Kubernetes, Databricks).

:func:`add_predictions` adds a predictions column to a DataFrame of images through
``pyspark.ml.functions.predict_batch_udf``, Spark's API for batch inference: each Python
worker opens ``predict``'s engine once (:func:`~tf_mobilenet_v1.predict.open_classifier`:
the cached fast TFLite model where LiteRT is installed, else Keras) and every row goes
through :func:`~tf_mobilenet_v1.predict.classify`. :func:`run_spark` (``mobilenet-v1
spark``) classifies a glob into a directory of ``predict --jsonl`` lines. An unreadable
image becomes an error row and never fails the job.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import numpy as np

from .errors import first_line
from .fast_predict import weight_files
from .images import IMAGE_EXTENSIONS, MAX_IMAGE_BYTES
from .loaders.source import locate
from .predict import DEFAULT_PREPROCESSING, classify, json_safe, open_classifier
from .preprocessing import get_preprocessor

try:
    from py4j.protocol import Py4JJavaError
    from pyspark import SparkFiles
    from pyspark.errors import PySparkException
    from pyspark.ml.functions import predict_batch_udf
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql import functions as F
    from pyspark.sql import types as T
    from pyspark.sql.utils import AnalysisException
except ImportError as e:
    raise ImportError("the spark command needs pyspark, pyarrow and pandas: pip install "
                      f"'.[spark]' from the checkout, or the wheel with [spark] ({e})") from None

DEFAULT_WEIGHTS = "mobilenet_v1_1.0_224"
# What predict_batch_udf returns per row (its struct fields can only hold scalars and flat
# arrays); add_predictions turns it into PREDICTIONS.
_RAW = T.StructType([
    T.StructField("index", T.ArrayType(T.IntegerType())),
    T.StructField("label", T.ArrayType(T.StringType())),
    T.StructField("score", T.ArrayType(T.DoubleType())),
    T.StructField("error", T.StringType()),
])
PREDICTIONS = T.StructType([
    T.StructField("predictions", T.ArrayType(T.StructType([
        T.StructField("index", T.IntegerType()), T.StructField("label", T.StringType()),
        T.StructField("score", T.DoubleType())]))),
    T.StructField("error", T.StringType()),
])
_IMAGE_NAME = "(?i)(" + "|".join(re.escape(e) for e in sorted(IMAGE_EXTENSIONS)) + ")$"


def local_name(uri: str) -> str:
    """A Hadoop ``file:`` URI as the local path ``predict`` names the file by; other URIs
    (``hdfs://``, ``s3a://``, ``dbfs:``) as they are."""
    if uri.startswith("file://"):
        return uri[len("file://"):]
    return uri[len("file:"):] if uri.startswith("file:/") else uri


def ship_weights(spark: SparkSession, weights: str) -> str:
    """Send local weights to every executor with the job (``SparkContext.addFile``); return
    what executors load: ``"shipped:NAME"`` for shipped weights, else ``weights`` (a
    registry name: the package carries or downloads them)."""
    if locate(weights)[1] is not None:  # a registry name (a typo raises here, in one line)
        return weights
    path = os.path.abspath(weights)
    if os.path.isdir(path):
        spark.sparkContext.addFile(path, recursive=True)
        return "shipped:" + os.path.basename(path)
    files = weight_files(path) or [path]
    beside = os.path.join(os.path.dirname(path), "labels.txt")  # a .tflite's class names
    if path.lower().endswith(".tflite") and os.path.isfile(beside):
        files.append(beside)
    for f in files:
        spark.sparkContext.addFile(f)
    return "shipped:" + os.path.basename(path)


def _executor_weights(weights: str) -> str:
    return SparkFiles.get(weights[len("shipped:"):]) if weights.startswith("shipped:") \
        else weights


def _make_predict_fn(weights: str, preprocessing: str, top_k: int, fast: bool | None,
                     named: bool):
    """Runs once per Python worker (predict_batch_udf caches what it returns)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    engine = open_classifier(_executor_weights(weights), preprocessing, fast)

    def predict_paths(images: np.ndarray) -> list[dict]:
        return predict(images, images)

    def predict(names: np.ndarray, images: np.ndarray) -> list[dict]:
        items = []
        for name, image in zip(names, images, strict=True):
            name = local_name(str(name))
            if isinstance(image, (bytes, bytearray)):
                items.append((name, bytes(image)))
            else:  # a path (or a file too large to have been read): read it here
                items.append(name if image is None else local_name(str(image)))
        rows = []
        for result in classify(items, engine, top_k=top_k, batch_size=max(1, len(items))):
            found = result.get("predictions", [])
            rows.append({"index": np.array([p["index"] for p in found], np.int32),
                         "label": np.array([p["label"] for p in found], object),
                         "score": np.array([p["score"] for p in found], np.float64),
                         "error": result.get("error", "")})
        return rows

    return predict if named else predict_paths  # predict_batch_udf counts the arguments


def add_predictions(df: DataFrame, image_col: str = "content", path_col: str | None = "path",
                    output_col: str = "predictions", *, weights: str = DEFAULT_WEIGHTS,
                    top_k: int = 5, preprocessing: str = DEFAULT_PREPROCESSING,
                    batch_size: int = 32, fast: bool | None = None) -> DataFrame:
    """``df`` with ``output_col`` added: ``{predictions: [{index, label, score}, ...] (best
    first), error: null}``, or ``{predictions: null, error: message}`` for an unreadable
    image (``predict``'s message). ``image_col``: encoded image bytes (``binaryFile``'s
    ``content``) or paths every executor can read; ``path_col`` names the image in error
    messages (``None``: the path or row). Local ``weights`` are shipped with the job."""
    get_preprocessor(preprocessing)  # a bad name fails now, not in every task
    if top_k < 1 or batch_size < 1:
        raise ValueError("top_k and batch_size must be at least 1")
    weights = ship_weights(df.sparkSession, weights)
    udf = predict_batch_udf(
        functools.partial(_make_predict_fn, weights, preprocessing, top_k, fast,
                          bool(path_col)),
        return_type=_RAW, batch_size=batch_size)
    raw = udf(F.col(path_col), F.col(image_col)) if path_col else udf(F.col(image_col))
    found = F.transform(F.arrays_zip(raw["index"], raw["label"], raw["score"]),
                        lambda p: F.struct(p["index"].alias("index"), p["label"].alias("label"),
                                           p["score"].alias("score")))
    ok = raw["error"] == F.lit("")
    return df.withColumn(output_col, F.struct(F.when(ok, found).alias("predictions"),
                                              F.when(~ok, raw["error"]).alias("error")))


def read_images(spark: SparkSession, pattern: str) -> DataFrame:
    """``path`` (``binaryFile``'s URI), ``content`` of every image file ``pattern`` (a
    glob, or a directory read recursively) matches; a file over the image size limit gets
    ``content`` null without being read (it becomes an error row, as in ``predict``)."""
    reader = spark.read.format("binaryFile")
    if not any(c in pattern for c in "*?[{"):
        reader = reader.option("recursiveFileLookup", "true")
    try:
        files = reader.load(pattern).filter(F.col("path").rlike(_IMAGE_NAME))
    except AnalysisException as e:
        if "PATH_NOT_FOUND" in str(e) or "does not exist" in str(e):
            raise FileNotFoundError(f"--input {pattern} matches no file") from None
        raise
    # The length filter is applied to the listing, so oversized files are never read.
    small = files.filter(F.col("length") <= MAX_IMAGE_BYTES).select("path", "content")
    large = files.filter(F.col("length") > MAX_IMAGE_BYTES).select(
        "path", F.lit(None).cast("binary").alias("content"))
    return small.unionByName(large)


@F.pandas_udf(T.StringType())
def _lines(path, result):
    """``predict --jsonl``'s line for each row."""
    import pandas as pd

    out = []
    for name, row in zip(path, result.itertuples(index=False), strict=True):
        name = local_name(name)
        if row.predictions is None:
            r = {"image": name, "error": row.error}
        else:
            r = {"image": name, "predictions": [
                {"index": int(p["index"]), "label": p["label"], "score": float(p["score"])}
                for p in row.predictions]}
        out.append(json.dumps(json_safe(r)))
    return pd.Series(out)


def _executor_error(error: BaseException) -> str:
    """The Python exception an executor raised, as its one line, from Spark's report of it
    (a Java stack trace around a Python traceback)."""
    found = re.findall(r"^(?:\w+\.)*(\w*(?:Error|Exception)): (.+)$", str(error), re.M)
    ours = [f for f in found if f[0] not in ("PythonException", "Py4JJavaError",
                                             "SparkException")]
    return ": ".join(ours[-1]) if ours else first_line(error)


def _check_output(output: str) -> None:
    if "://" not in output and os.path.lexists(local_name(output)):
        raise FileExistsError(f"--output {output} exists; give a new directory (Spark writes "
                              "its part files into it)")


def session(master: str | None = None, batch_size: int = 32) -> SparkSession:
    """The SparkSession the CLI runs in: ``master`` (else Spark's default, ``local[*]`` or
    ``spark-submit``'s), Arrow batches of ``batch_size`` rows so a task holds few images,
    Spark's own logging off in this driver."""
    submitted = "PYSPARK_GATEWAY_PORT" in os.environ  # spark-submit started this driver
    local = master.startswith("local") if master else not submitted
    if local and "PYSPARK_PYTHON" not in os.environ:
        os.environ["PYSPARK_PYTHON"] = sys.executable  # local workers: this interpreter
    builder = SparkSession.builder.appName("mobilenet-v1")
    if master:
        builder = builder.master(master)
    spark = (builder
             .config("spark.sql.execution.arrow.maxRecordsPerBatch", str(batch_size))
             .config("spark.executorEnv.TF_CPP_MIN_LOG_LEVEL", "3")
             .getOrCreate())
    # A failed task's Java stack traces would bury the one line run_spark reports (the UI
    # and the executors' logs keep them).
    spark.sparkContext.setLogLevel("FATAL")
    return spark


def run_spark(input: str, output: str, *, master: str | None = None,
              weights: str = DEFAULT_WEIGHTS, top_k: int = 5,
              preprocessing: str = DEFAULT_PREPROCESSING, batch_size: int = 32,
              fast: bool | None = None, spark: SparkSession | None = None) -> int:
    """``mobilenet-v1 spark``: classify every image ``input`` matches into ``output`` (a new
    directory of ``part-*.txt`` files holding ``predict --jsonl``'s lines, in no particular
    order); 0 when the job succeeded (unreadable images are error lines, not a failure).
    ``spark``: an existing session (``master`` is then ignored)."""
    get_preprocessor(preprocessing)  # a bad name, a typo in --weights or an existing
    locate(weights)                  # output fails before Spark starts
    _check_output(output)
    spark = spark or session(master, batch_size)
    images = read_images(spark, input)
    if images.select("path").limit(1).count() == 0:
        raise FileNotFoundError(f"--input {input} matches no image file")
    print(f"mobilenet-v1: Spark {spark.version} on {spark.sparkContext.master}, progress at "
          f"{spark.sparkContext.uiWebUrl}", file=sys.stderr)
    result = add_predictions(images, weights=weights, top_k=top_k,
                             preprocessing=preprocessing, batch_size=batch_size, fast=fast)
    lines = result.select(_lines("path", "predictions").alias("value"),
                          F.col("predictions.error").isNotNull().alias("failed")).cache()
    try:
        lines.select("value").write.mode("errorifexists").text(output)
        failed = lines.filter("failed").count()
        done = lines.count() - failed
    except (PySparkException, Py4JJavaError) as e:
        raise RuntimeError(f"the Spark job failed on an executor: {_executor_error(e)}; "
                           "Spark's UI and the executors' logs have the rest") from None
    finally:
        lines.unpersist()
    where = ' (their lines have an "error" key)' if failed else ""
    print(f"mobilenet-v1: classified {done} images, {failed} unreadable{where}; wrote "
          f"{output}", file=sys.stderr)
    return 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _alive_workers(ui_port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/json/", timeout=5) as r:
            state = json.load(r)
    except (OSError, ValueError):
        return 0
    return sum(w.get("state") == "ALIVE" for w in state.get("workers", []))


@contextlib.contextmanager
def standalone_cluster(workers: int = 2, cores: int = 1, memory: str = "2g",
                       log_dir: str | None = None, timeout: float = 300):
    """A throwaway Spark standalone cluster on localhost (one master, ``workers`` workers,
    from pyspark's own jars; needs ``java``), stopped on exit; yields its master URL. For
    trying ``mobilenet-v1 spark --master`` and for the tests; logs go to ``log_dir``."""
    import pyspark

    home = os.path.dirname(os.path.abspath(pyspark.__file__))
    spark_class = os.path.join(home, "bin", "spark-class")
    log_dir = log_dir or tempfile.mkdtemp(prefix="mobilenet-v1-spark-")
    os.makedirs(log_dir, exist_ok=True)
    env = {**os.environ, "SPARK_HOME": home, "SPARK_LOCAL_IP": "127.0.0.1",
           "PYSPARK_PYTHON": os.environ.get("PYSPARK_PYTHON", sys.executable)}
    port, ui = _free_port(), _free_port()
    url = f"spark://127.0.0.1:{port}"
    procs: list[subprocess.Popen] = []

    def start(name: str, *args: str) -> None:
        with open(os.path.join(log_dir, name + ".log"), "wb") as log:
            procs.append(subprocess.Popen(
                ["bash", spark_class, *args], env=env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True))

    try:
        start("master", "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
              "--port", str(port), "--webui-port", str(ui))
        for i in range(workers):
            work = os.path.join(log_dir, f"worker{i}")
            os.makedirs(work, exist_ok=True)
            start(f"worker{i}", "org.apache.spark.deploy.worker.Worker", url, "--host",
                  "127.0.0.1", "--cores", str(cores), "--memory", memory, "--webui-port", "0",
                  "--work-dir", work)
        deadline = time.monotonic() + timeout
        while _alive_workers(ui) < workers:
            if any(p.poll() is not None for p in procs) or time.monotonic() > deadline:
                raise RuntimeError(f"the Spark cluster did not start (logs in {log_dir}; "
                                   "is java 17+ installed?)")
            time.sleep(1)
        yield url
    finally:
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
