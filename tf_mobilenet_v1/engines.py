"""One interface for running a classifier, whatever holds it: a Keras model, a TFLite model
(exported, or predict's cached fast model) or an exported SavedModel.

An engine gives logits for (N, H, W, 3) float32 pixels, the processor that makes those pixels
and the label names; :func:`tf_mobilenet_v1.predict.classify` turns any engine's output into
results. :func:`open_engine` picks the engine for a weights source or an export.
"""

from __future__ import annotations

import os
import threading

import numpy as np

from .architecture import LOGITS_NAME
from .fileio import MAX_JSON_BYTES, MAX_WEIGHTS_BYTES, check_regular_file
from .graph_check import check_saved_model
from .labels import default_id2label
from .litert import make_interpreter
from .loaders.tflite import packed_labels
from .outputs import logits_from_probabilities
from .preprocessing import MobileNetV1ImageProcessor, get_preprocessor

LABELS_FILE = "labels.txt"  # beside a .tflite, in a SavedModel's assets.extra (our exports)


def cores() -> int:
    """The CPU cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


class Engine:
    """A classifier: ``logits(pixels)`` for (N, H, W, 3) float32 images made by
    ``processor``, and ``id2label``. An engine with ``per_image`` takes one image at a time and
    may be called from several threads at once (each gets its own interpreter)."""

    per_image = False

    def __init__(self, processor, id2label: dict[int, str]):
        self.processor, self.id2label = processor, dict(id2label)

    def logits(self, pixels: np.ndarray, threads: int = 1) -> np.ndarray:
        """(N, num_labels) logits; ``threads`` is a hint for per-image engines."""
        raise NotImplementedError


def batch_logits(output) -> np.ndarray:
    """(batch, num_labels) logits of a classifier's output, or a ValueError saying why not."""
    logits = np.asarray(output)
    if logits.ndim != 2:
        raise ValueError(f"expected (batch, num_labels) logits, got shape {logits.shape}; use "
                         "a model with global pooling or inputs of its image_size")
    return logits


class KerasEngine(Engine):
    """A Keras classifier; ``processor`` is a name for
    :func:`~tf_mobilenet_v1.preprocessing.get_preprocessor` (``"model"``, the default: the
    weights' own) or a processor object."""

    def __init__(self, model, processor=None):
        if not any(layer.name == LOGITS_NAME for layer in model.layers):
            raise ValueError("the model has no classification head (a backbone); load weights "
                             "with a Logits layer to classify images")
        if processor is None or isinstance(processor, str):
            processor = get_preprocessor(processor or "model", model.config.image_size,
                                         model=model)
        super().__init__(processor, model.config.id2label or {})
        self.model = model

    def logits(self, pixels, threads: int = 1):
        return batch_logits(self.model.predict_on_batch(pixels))


class TFLiteEngine(Engine):
    """A batch-1 TFLite classifier (float or integer input) run by LiteRT, with one
    interpreter per calling thread. ``output``: what the model's output is, ``"logits"`` or
    ``"probabilities"`` (our exports' default; their log has the same softmax)."""

    per_image = True

    def __init__(self, model, processor, id2label: dict[int, str], output: str = "logits",
                 num_labels: int | None = None):
        if output not in ("logits", "probabilities"):
            name = model if isinstance(model, str) else "the TFLite model"
            raise ValueError(f"{name} is a feature-vector model; pass a classifier export")
        self.model, self.output = model, output
        self._local = threading.local()
        interp = self._interpreter(1)  # checks the signature now
        (inp,), (out,) = interp.get_input_details(), interp.get_output_details()
        size = processor.output_size()
        n = int(out["shape"][-1])
        if size is None or list(inp["shape"]) != [1, *size, 3] or len(out["shape"]) != 2 \
                or (num_labels is not None and n != num_labels):
            raise ValueError(f"the TFLite model's signature {list(inp['shape'])} -> "
                             f"{list(out['shape'])} does not take the processor's {size} "
                             "images to one row of scores")
        super().__init__(processor, id2label or {i: f"LABEL_{i}" for i in range(n)})

    def _interpreter(self, threads: int):
        """This thread's interpreter with ``threads`` threads."""
        made = self._local.__dict__
        if threads not in made:
            made[threads] = make_interpreter(self.model, threads)
        return made[threads]

    def logits(self, pixels, threads: int = 1):
        """Logits of (N, H, W, 3) float32 pixels, one image at a time; ``threads``: how many
        threads the interpreter uses (all cores when a single image at a time is wanted)."""
        interp = self._interpreter(threads)
        (inp,), (out,) = interp.get_input_details(), interp.get_output_details()
        in_scale, in_zero = inp["quantization"]
        out_scale, out_zero = out["quantization"]
        rows = []
        for row in np.asarray(pixels, np.float32):
            if in_scale:  # integer input: quantize the [-1, 1] pixels as the model says
                info = np.iinfo(inp["dtype"])
                row = np.clip(np.round(row / in_scale + in_zero), info.min, info.max)
            interp.set_tensor(inp["index"], row[None].astype(inp["dtype"]))
            interp.invoke()
            y = interp.get_tensor(out["index"])[0].astype(np.float32)
            rows.append((y - out_zero) * out_scale if out_scale else y)
        y = np.stack(rows)
        return logits_from_probabilities(y) if self.output == "probabilities" else y


class SavedModelEngine(Engine):
    """Our exported SavedModel's ``serving_default`` signature (float pixels -> logits)."""

    def __init__(self, path: str, preprocessing: str = "model"):
        import tensorflow as tf

        check_saved_model(path)  # a foreign graph could run anything
        serve = tf.saved_model.load(path).signatures["serving_default"]
        if "logits" not in serve.structured_outputs:
            raise ValueError(f"{path} is a feature-vector SavedModel; pass a classifier export")
        extra = os.path.join(path, "assets.extra")
        own = os.path.join(extra, MobileNetV1ImageProcessor.FILE_NAME)
        if preprocessing == "model" and os.path.isfile(own):  # written by our export
            processor = MobileNetV1ImageProcessor.from_pretrained(own)
        else:
            size = serve.structured_input_signature[1]["pixel_values"].shape[1] or 224
            processor = get_preprocessor(preprocessing, int(size))
        count = int(serve.structured_outputs["logits"].shape[-1])
        super().__init__(processor, labels_file(os.path.join(extra, LABELS_FILE), count))
        self._serve, self._tf = serve, tf

    def logits(self, pixels, threads: int = 1):
        return self._serve(pixel_values=self._tf.constant(pixels))["logits"].numpy()


def labels_file(path: str, count: int, fallback: list[str] | None = None) -> dict[int, str]:
    """The ``count`` label names in a ``labels.txt``; else ``fallback``, else the defaults
    (ImageNet's for 1001 or 1000 classes, ``LABEL_i`` otherwise). A file that is missing or
    does not hold exactly one name per class counts as none."""
    try:
        check_regular_file(path, "labels file", MAX_JSON_BYTES)
        with open(path, encoding="utf-8") as f:
            names = f.read().splitlines()
    except (OSError, UnicodeDecodeError, ValueError):
        names = []
    if len(names) == count:
        return dict(enumerate(names))
    return dict(enumerate(fallback)) if fallback else default_id2label(count)


def is_export(path) -> bool:
    """Whether ``path`` is a deployment export that runs as it is: a ``.tflite`` file or a
    SavedModel directory."""
    path = os.fspath(path)
    return path.lower().endswith(".tflite") or os.path.isfile(os.path.join(path, "saved_model.pb"))


def open_engine(weights: str, preprocessing: str = "model") -> Engine:
    """The engine for any weights source ``predict`` reads (a Keras model), an exported
    ``.tflite`` file or an exported SavedModel directory (ours only: see ``graph_check``)."""
    path = os.fspath(weights)
    if path.lower().endswith(".tflite"):
        from tf_mobilenet_v1.converters.tflite_inspect import output_kind

        check_regular_file(path, "TFLite model", MAX_WEIGHTS_BYTES)
        interp = make_interpreter(path)
        (inp,), (out,) = interp.get_input_details(), interp.get_output_details()
        if len(inp["shape"]) != 4 or len(out["shape"]) != 2:
            raise ValueError(f"{path} takes {list(inp['shape'])} to {list(out['shape'])}; "
                             "pass an image classifier (one image in, one row of scores out)")
        count = int(out["shape"][-1])
        labels = labels_file(os.path.join(os.path.dirname(os.path.abspath(path)), LABELS_FILE),
                             count, fallback=packed_labels(path, count))
        return TFLiteEngine(path, get_preprocessor(preprocessing, int(inp["shape"][1])),
                            labels, output=output_kind(interp, path))
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        return SavedModelEngine(path, preprocessing)
    from .loaders.dispatch import load_any

    return KerasEngine(load_any(path), preprocessing)
