"""Classify images at scale with Apache Beam's RunInference (``pip install
".[beam]"`` in the checkout): DirectRunner locally; Dataflow, Flink or Spark for a bucket.

The data flow is ``predict``'s: match files -> read bytes -> decode + the weights' own
processor -> model -> top-k softmax, one JSON line per image in ``predict --jsonl``'s schema.
Decoding happens inside the model handler, with the processor that came with the loaded
weights, so a worker can never pair weights with another size's crops. An unreadable image
becomes a line of the errors output and never fails the job.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterable, Sequence

from .engines import Engine, open_engine
from .errors import first_line
from .fileio import check_regular_file, check_writable
from .images import MAX_IMAGE_BYTES, is_image_file
from .predict import classify

# Beam logs "apitools not found ..." on the root logger when it is imported without the GCP
# extras: noise on every run of a command that never touches BigQuery.
_root = logging.getLogger()
_level = _root.level
_root.setLevel(max(_level, logging.ERROR))
try:
    import apache_beam as beam
    from apache_beam.io import fileio
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.metrics import Metrics
    from apache_beam.metrics.metric import MetricsFilter
    from apache_beam.ml.inference.base import ModelHandler, PredictionResult, RunInference
    from apache_beam.options.pipeline_options import PipelineOptions
except ImportError as e:
    raise ImportError("the beam command needs Apache Beam: pip install "
                      f"'.[beam]' from the checkout, or the wheel with [beam] ({e})") from None
finally:
    _root.setLevel(_level)

NAMESPACE = "tf_mobilenet_v1"
DEFAULT_WEIGHTS = "mobilenet_v1_1.0_224"


# ----- the Beam pieces -----
class MobileNetV1ModelHandler(ModelHandler):
    """Beam ``ModelHandler``: examples are ``(path, encoded image bytes)``; each result is a
    ``PredictionResult`` keyed by the path (its ``example``) whose ``inference`` is the
    image's ``predict --jsonl`` line: ``{"image", "predictions"}`` or ``{"image", "error"}``.

    Each worker opens the engine once (``load_model``: Keras weights of any form, an exported
    ``.tflite`` or SavedModel); Beam batches up to ``max_batch_size``.
    """

    def __init__(self, weights: str = DEFAULT_WEIGHTS, top_k: int = 5,
                 preprocessing: str = "model", min_batch_size: int = 1,
                 max_batch_size: int = 32):
        super().__init__(min_batch_size=min_batch_size, max_batch_size=max_batch_size)
        self.weights, self.top_k, self.preprocessing = weights, top_k, preprocessing

    def load_model(self) -> Engine:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        return open_engine(self.weights, self.preprocessing)

    def get_metrics_namespace(self) -> str:
        return NAMESPACE

    def run_inference(self, batch: Sequence, model: Engine,
                      inference_args=None) -> Iterable[PredictionResult]:
        results = classify(batch, model, top_k=self.top_k, batch_size=max(1, len(batch)))
        return [PredictionResult(path, r) for (path, _), r in zip(batch, results, strict=True)]


def build_pipeline(pipeline, inputs: Sequence[str], output: str, *,
                   weights: str = DEFAULT_WEIGHTS, top_k: int = 5, preprocessing: str = "model",
                   batch_size: int = 32):
    """Add the classification steps to ``pipeline``; writes ``<output>-SSSSS-of-NNNNN.jsonl``
    and ``<output>-errors-...jsonl``. Returns the (results, errors) PCollections."""
    classified = Metrics.counter(NAMESPACE, "classified")
    failed = Metrics.counter(NAMESPACE, "failed")
    handler = MobileNetV1ModelHandler(weights, top_k, preprocessing, max_batch_size=batch_size)

    def read(readable):
        path = readable.metadata.path
        try:
            # predict's checks: a FIFO named *.jpg would block the worker for ever, and a
            # 2 GB sparse file would be read whole into memory.
            if "://" not in path:
                check_regular_file(path, "image", MAX_IMAGE_BYTES)
            size = readable.metadata.size_in_bytes
            if size is not None and size > MAX_IMAGE_BYTES:
                raise ValueError(f"it holds {size:,} bytes, more than any image this reads "
                                 f"({MAX_IMAGE_BYTES:,})")
            return path, readable.read()
        except Exception as e:  # noqa: BLE001 - an unreadable file is an error line
            return path, e

    def split(item):
        path, value = item
        if isinstance(value, Exception):
            yield beam.pvalue.TaggedOutput("errors", (path, value))
        else:
            yield path, value

    def to_line(result):
        line = json.dumps(result.inference)
        if "error" in result.inference:
            failed.inc()
            return beam.pvalue.TaggedOutput("errors", line)
        classified.inc()
        return line

    def read_error(item):
        failed.inc()
        path, err = item
        return json.dumps({"image": path, "error": f"cannot read image {path}: "
                                                   f"{first_line(err)}"})

    files = (pipeline
             | "Patterns" >> beam.Create(list(inputs))
             | "Match" >> fileio.MatchAll()
             | "Images" >> beam.Filter(lambda m: is_image_file(m.path))
             | "Reshuffle" >> beam.Reshuffle()  # spread the files over workers
             | "Open" >> fileio.ReadMatches(skip_directories=True)
             | "Read" >> beam.Map(read)
             | "Split" >> beam.FlatMap(split).with_outputs("errors", main="ok"))
    lines = (files.ok
             | "Classify" >> RunInference(handler)
             | "ToJson" >> beam.Map(to_line).with_outputs("errors", main="ok"))
    errors = ((lines.errors, files.errors | "ReadErrors" >> beam.Map(read_error))
              | "AllErrors" >> beam.Flatten())
    lines.ok | "Write" >> beam.io.WriteToText(output, file_name_suffix=".jsonl")
    errors | "WriteErrors" >> beam.io.WriteToText(output + "-errors", file_name_suffix=".jsonl")
    return lines.ok, errors


def _check_inputs(inputs: Sequence[str]) -> None:
    """Fail in a second, in the launcher, when a pattern matches nothing."""
    for pattern, result in zip(inputs, FileSystems.match(list(inputs), [1] * len(inputs)),
                               strict=True):
        if not result.metadata_list:
            raise FileNotFoundError(f"--input {pattern} matches no file")


def _counter(result, name: str) -> int | None:
    try:
        found = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE)
                                       .with_name(name))["counters"]
    except Exception:  # noqa: BLE001 - some runners report no metrics
        return None
    return sum(c.committed or 0 for c in found) if found else 0


def run_beam(inputs: Sequence[str], output: str, pipeline_args: Sequence[str] = (), *,
             weights: str = DEFAULT_WEIGHTS, top_k: int = 5, preprocessing: str = "model",
             batch_size: int = 32) -> int:
    """``mobilenet-v1 beam``: run the pipeline to completion; 0 when it succeeded (unreadable
    images are in the errors output, not a failure). ``pipeline_args`` are Beam's options
    (``--runner``, ``--direct_running_mode``, ``--project``...)."""
    from .preprocessing import get_preprocessor

    get_preprocessor(preprocessing)  # a bad name fails before anything starts
    _check_inputs(inputs)
    if "://" not in output:  # a local prefix under a regular file fails now, in one line
        check_writable(output + "-00000-of-00001.jsonl", force=True)
    args = list(pipeline_args)
    if not any(a.startswith("--default_sdk_harness_log_level") for a in args):
        # Worker processes (multi_processing, portable runners) log about 40 INFO and
        # WARNING lines a run about their own set-up; errors still show.
        args.append("--default_sdk_harness_log_level=ERROR")
    options = PipelineOptions(args)
    with beam.Pipeline(options=options) as pipeline:
        build_pipeline(pipeline, inputs, output, weights=weights, top_k=top_k,
                       preprocessing=preprocessing, batch_size=batch_size)
    result = pipeline.result  # the with-block waited for the run to finish
    done, bad = _counter(result, "classified"), _counter(result, "failed")
    if bad == 0:
        _remove_empty_shards(output + "-errors-*.jsonl")  # ours, and nothing in them
    if done is not None:
        where = f" (see {output}-errors-*.jsonl)" if bad else ""
        print(f"mobilenet-v1: classified {done} images, {bad} unreadable{where}",
              file=sys.stderr)
    return 0


def _remove_empty_shards(pattern: str) -> None:
    """Delete the empty error shards this run wrote when no image failed."""
    matched = FileSystems.match([pattern])[0].metadata_list
    empty = [m.path for m in matched if m.size_in_bytes == 0]
    if empty and len(empty) == len(matched):
        FileSystems.delete(empty)
