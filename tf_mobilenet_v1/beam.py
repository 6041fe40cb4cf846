"""Classify images at scale with Apache Beam's RunInference (``pip install
"tf-mobilenet-v1[beam]"``): DirectRunner locally; Dataflow, Flink or Spark for a bucket.

The data flow is ``predict``'s: match files -> read bytes -> decode + the weights' own
processor -> model -> top-k softmax, one JSON line per image in ``predict --jsonl``'s schema.
Decoding happens inside the model handler, with the processor that came with the loaded
weights, so a worker can never pair weights with another size's crops. An unreadable image
becomes a line of the errors output and never fails the job.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Sequence

import numpy as np

from .errors import first_line
from .images import is_image_file, open_image

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
                      f"'tf-mobilenet-v1[beam]' ({e})") from None

NAMESPACE = "tf_mobilenet_v1"
DEFAULT_WEIGHTS = "mobilenet_v1_1.0_224"


# ----- what a worker loads: Keras weights, a SavedModel or a TFLite model -----
class _Classifier:
    """Logits for batches of [-1, 1] pixels, the label names and the weights' processor."""

    def __init__(self, logits_fn, id2label: dict, processor):
        self.logits, self.id2label, self.processor = logits_fn, id2label, processor


def _labels_file(path: str, count: int) -> dict[int, str]:
    try:
        with open(path, encoding="utf-8") as f:
            names = f.read().splitlines()
    except OSError:
        names = []
    if len(names) != count:
        names = [f"LABEL_{i}" for i in range(count)]
    return dict(enumerate(names))


def _keras_classifier(weights: str, preprocessing: str) -> _Classifier:
    from .loaders.dispatch import load_any
    from .predict import _batch_logits
    from .preprocessing import get_preprocessor

    model = load_any(weights)
    if not any(layer.name == "Logits" for layer in model.layers):
        raise ValueError(f"{weights} has no classification head; pass classifier weights")
    processor = get_preprocessor(preprocessing, model.config.image_size, model=model)
    return _Classifier(lambda x: _batch_logits(model.predict_on_batch(x)),
                       model.config.id2label, processor)


def _tflite_classifier(path: str, preprocessing: str) -> _Classifier:
    from tf_mobilenet_v1.converters.tflite_inspect import output_kind

    from .litert import make_interpreter
    from .outputs import logits_from_probabilities
    from .preprocessing import get_preprocessor

    interp = make_interpreter(path)
    (inp,), (out,) = interp.get_input_details(), interp.get_output_details()
    kind = output_kind(interp)
    if kind == "features":
        raise ValueError(f"{path} is a feature-vector model; pass a classifier export")
    size = int(inp["shape"][1])
    in_scale, in_zero = inp["quantization"]
    out_scale, out_zero = out["quantization"]

    def logits(x):
        rows = []
        for row in x:
            if in_scale:  # integer input: quantize the [-1, 1] pixels as the model says
                info = np.iinfo(inp["dtype"])
                row = np.clip(np.round(row / in_scale + in_zero), info.min, info.max)
            interp.set_tensor(inp["index"], row[None].astype(inp["dtype"]))
            interp.invoke()
            y = interp.get_tensor(out["index"])[0].astype(np.float32)
            rows.append((y - out_zero) * out_scale if out_scale else y)
        y = np.stack(rows)
        # Our exports output probabilities by default: their log has the same softmax.
        return logits_from_probabilities(y) if kind == "probabilities" else y

    labels = _labels_file(os.path.join(os.path.dirname(os.path.abspath(path)), "labels.txt"),
                          int(out["shape"][-1]))
    return _Classifier(logits, labels, get_preprocessor(preprocessing, size))


def _saved_model_classifier(path: str, preprocessing: str) -> _Classifier:
    import tensorflow as tf

    from .preprocessing import MobileNetV1ImageProcessor, get_preprocessor

    loaded = tf.saved_model.load(path)
    serve = loaded.signatures["serving_default"]
    if "logits" not in serve.structured_outputs:
        raise ValueError(f"{path} is a feature-vector SavedModel; pass a classifier export")
    count = int(serve.structured_outputs["logits"].shape[-1])
    extra = os.path.join(path, "assets.extra")
    labels = _labels_file(os.path.join(extra, "labels.txt"), count)
    own = os.path.join(extra, "preprocessor_config.json")
    if preprocessing == "model" and os.path.isfile(own):  # written by our export
        processor = MobileNetV1ImageProcessor.from_pretrained(own)
    else:
        size = serve.structured_input_signature[1]["pixel_values"].shape[1] or 224
        processor = get_preprocessor(preprocessing, int(size))
    return _Classifier(lambda x: serve(pixel_values=tf.constant(x))["logits"].numpy(),
                       labels, processor)


def load_classifier(weights: str, preprocessing: str = "model") -> _Classifier:
    """Any weights source ``predict`` reads, or an exported ``.tflite`` / SavedModel dir."""
    path = os.fspath(weights)
    if path.endswith(".tflite"):
        return _tflite_classifier(path, preprocessing)
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        return _saved_model_classifier(path, preprocessing)
    return _keras_classifier(path, preprocessing)


# ----- the Beam pieces -----
def _softmax_top(logits: np.ndarray, top_k: int, id2label: dict) -> list[list[dict]]:
    from .outputs import decode_predictions

    return [[{"index": i, "label": label, "score": score} for i, label, score in row]
            for row in decode_predictions(logits, top_k, id2label)]


class MobileNetV1ModelHandler(ModelHandler):
    """Beam ``ModelHandler``: examples are ``(path, encoded image bytes)``; each result is a
    ``PredictionResult`` keyed by the path (its ``example``) whose ``inference`` is
    ``{"predictions": [...]}`` (``predict --jsonl``'s entries) or ``{"error": message}``.

    The weights load once per worker (``load_model``); Beam batches up to ``max_batch_size``.
    """

    def __init__(self, weights: str = DEFAULT_WEIGHTS, top_k: int = 5,
                 preprocessing: str = "model", min_batch_size: int = 1,
                 max_batch_size: int = 32):
        super().__init__(min_batch_size=min_batch_size, max_batch_size=max_batch_size)
        self.weights, self.top_k, self.preprocessing = weights, top_k, preprocessing

    def load_model(self) -> _Classifier:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        return load_classifier(self.weights, self.preprocessing)

    def get_metrics_namespace(self) -> str:
        return NAMESPACE

    def run_inference(self, batch: Sequence, model: _Classifier,
                      inference_args=None) -> Iterable[PredictionResult]:
        paths = [path for path, _ in batch]
        results = classify_bytes([data for _, data in batch], model, self.top_k, paths)
        return [PredictionResult(path, r) for path, r in zip(paths, results, strict=True)]


def classify_bytes(data: Sequence[bytes], model: _Classifier, top_k: int = 5,
                   keys: Sequence[str] = ()) -> list[dict]:
    """Decode, preprocess and classify a batch of encoded images; one dict per image."""
    pixels, slots, results = [], [], [None] * len(data)
    for i, blob in enumerate(data):
        name = keys[i] if i < len(keys) else f"image {i}"
        try:
            pixels.append(model.processor.preprocess_one(open_image(name, data=blob)))
            slots.append(i)
        except Exception as e:  # noqa: BLE001 - one bad image must not fail the batch
            msg = first_line(e)
            results[i] = {"error": msg if name in msg else f"cannot read image {name}: {msg}"}
    if pixels:
        top = _softmax_top(model.logits(np.stack(pixels).astype(np.float32)), top_k,
                           model.id2label)
        for i, preds in zip(slots, top, strict=True):
            results[i] = {"predictions": preds}
    return results


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
        path, inference = result.example, result.inference
        if "error" in inference:
            failed.inc()
            return beam.pvalue.TaggedOutput("errors", json.dumps(
                {"image": path, "error": inference["error"]}))
        classified.inc()
        return json.dumps({"image": path, "predictions": inference["predictions"]})

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
    options = PipelineOptions(list(pipeline_args))
    with beam.Pipeline(options=options) as pipeline:
        build_pipeline(pipeline, inputs, output, weights=weights, top_k=top_k,
                       preprocessing=preprocessing, batch_size=batch_size)
    result = pipeline.result  # the with-block waited for the run to finish
    done, bad = _counter(result, "classified"), _counter(result, "failed")
    if done is not None:
        print(f"mobilenet-v1: classified {done} images, {bad} unreadable "
              f"(see {output}-errors-*.jsonl)", file=sys.stderr)
    return 0
