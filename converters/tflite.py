"""TFLite export at a fixed resolution: float32, float16, dynamic-range or full int8.

The graph is converted from a ``tf.function`` of the batch-norm-folded model, so each layer is
one ``CONV_2D`` / ``DEPTHWISE_CONV_2D`` with bias and fused ReLU6, which is what the TFLite GPU
delegate runs natively. The model takes normalized float pixels (``x / 127.5 - 1``), or with
full-int8 and ``io_type="uint8"`` the raw 0..255 RGB pixels. A classifier outputs
``probabilities`` (a ``SOFTMAX`` at the end, as Google's hosted models) or, with
``outputs="logits"``, the logits; ``task="feature-vector"`` outputs the pooled features.
Batch 1 unless ``dynamic_batch=True``.

Every file carries TFLite metadata (:mod:`converters.tflite_metadata`: name, normalization,
labels packed as ``labels.txt``), so the Android Task Library and MediaPipe load it as is;
``labels.txt`` is also written beside the ``.tflite``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator

import numpy as np

from tf_mobilenet_v1.fileio import atomic_outputs, check_writable

from . import tflite_metadata as tfm
from ._deploy import (
    LABELS_FILE,
    NORM_MEAN,
    NORM_STD,
    at_size,
    check_classifier,
    check_task,
    head_fn,
    labels_text,
    same_text,
)
from .quantized import RANGES

QUANTIZE_MODES = ("none", "float16", "dynamic", "int8")
IO_TYPES = ("float32", "uint8", "int8")
DEFAULT_INT8_IO = "uint8"
MAX_CALIBRATION_IMAGES = 500
MIN_CALIBRATION_IMAGES = 100  # fewer: a warning, not an error (tests and quick tries use 16)


def check_options(quantize: str, io_type: str | None, calibration=None) -> str:
    """Validate a quantize / io_type combination; return the effective io_type."""
    if quantize not in QUANTIZE_MODES:
        raise ValueError(f"unknown quantize mode {quantize!r}; "
                         f"use one of {', '.join(QUANTIZE_MODES)}")
    if io_type is not None and io_type not in IO_TYPES:
        raise ValueError(f"unknown io_type {io_type!r}; use one of {', '.join(IO_TYPES)}")
    if quantize != "int8":
        if io_type not in (None, "float32"):
            raise ValueError(f"io_type {io_type} needs full-integer quantization; "
                             "add --quantize int8 (other modes keep float32 inputs and outputs)")
        if calibration is not None:
            raise ValueError("calibration images are only used by --quantize int8")
        return "float32"
    if calibration is None:
        raise ValueError("--quantize int8 needs calibration images; pass --calibration-dir "
                         "with a few hundred representative photos (a quantization-aware "
                         "model, a _quant checkpoint or a uint8 .tflite, needs none)")
    if isinstance(calibration, str) and calibration == RANGES:
        if io_type not in (None, "uint8"):
            raise ValueError("a model quantized from its own ranges has uint8 input and "
                             "output (as Google's _quant models); drop --io-type or pass "
                             "--calibration-dir to calibrate")
        return "uint8"
    return io_type or DEFAULT_INT8_IO


def _tf_dtype(name: str):
    import tensorflow as tf

    return {"float32": tf.float32, "uint8": tf.uint8, "int8": tf.int8}[name]


def _concrete_function(model, size: int, head: str = "probabilities", batch: int | None = 1):
    """A ``tf.function`` of the model for a (batch, size, size, C) input, plus what tracks it.

    Its one output is named by ``head``: ``probabilities``, ``logits`` or ``features``.
    """
    import tensorflow as tf

    channels = model.config.num_channels
    fn = head_fn(model, head)

    @tf.function(input_signature=[tf.TensorSpec([batch, size, size, channels], tf.float32,
                                                name="pixel_values")])
    def serve(pixel_values):
        return {head: fn(pixel_values)}

    # The converter's SavedModel path freezes only variables that a trackable owns; a plain
    # tf.Module holding the model's tf.Variables gives it exactly those.
    holder = tf.Module()
    holder.model_variables = [v.value for v in model.variables]
    holder.serve = serve
    return serve.get_concrete_function(), holder


def calibration_arrays(source, image_size: int, limit: int = MAX_CALIBRATION_IMAGES
                       ) -> Iterator[np.ndarray]:
    """Normalized (1, S, S, 3) float32 arrays for int8 calibration.

    ``source``: a directory or image file, a list of paths, a (N, S, S, 3) float array already
    normalized to [-1, 1], or an iterable of such arrays. Image files are read as RGB,
    resized to S x S (bilinear, as the Android Task Library does) and scaled to [-1, 1].
    """
    if isinstance(source, (str, os.PathLike)):
        source = [source]
    if isinstance(source, np.ndarray) or hasattr(source, "numpy"):
        source = np.asarray(source, np.float32)
        if source.ndim != 4 or source.shape[1:3] != (image_size, image_size):
            raise ValueError(f"calibration array must be (N, {image_size}, {image_size}, C), "
                             f"got {source.shape}")
        source = list(source)
    count = 0
    for item in source:
        if count >= limit:
            break
        if isinstance(item, (str, os.PathLike)):
            for arr in _images_from_path(item, image_size, limit - count):
                count += 1
                yield arr
            continue
        arr = np.asarray(item, np.float32)
        if arr.ndim == 3:
            arr = arr[None]
        if arr.shape[:3] != (1, image_size, image_size):
            raise ValueError(f"calibration image must be ({image_size}, {image_size}, C), "
                             f"got {arr.shape}")
        count += 1
        yield arr
    if count == 0:
        raise ValueError("no calibration images found; pass a directory with .jpg/.png images")


def _images_from_path(path, image_size: int, limit: int) -> Iterator[np.ndarray]:
    from tf_mobilenet_v1.images import find_images, read_image
    from tf_mobilenet_v1.preprocessing import MobileNetV1Preprocessing

    images, missing, empty = find_images([path])
    if missing:
        raise FileNotFoundError(f"calibration path {missing[0]} does not exist")
    if empty:
        raise ValueError(f"calibration directory {empty[0]} holds no images")
    # Straight resize to S x S (Pillow's bilinear), as the Android Task Library feeds the model.
    prep = MobileNetV1Preprocessing(image_size=image_size, mode="resize")
    skipped = []
    for p in images[:limit]:
        try:
            pixels = read_image(p)
        except ValueError as e:  # an unreadable photo is skipped (said once), not fatal
            skipped.append(str(e))
            continue
        yield np.asarray(prep(pixels[None]), np.float32)
    if skipped:
        warnings.warn(f"skipped {len(skipped)} unreadable calibration image(s) in {path}, "
                      f"e.g. {skipped[0].removesuffix('; skipped')}", stacklevel=2)


def convert_tflite(model, *, quantize: str = "none", io_type: str | None = None,
                   image_size: int | None = None, calibration_images=None,
                   task: str = "classification", outputs: str | None = None,
                   dynamic_batch: bool = False, metadata: dict | None = None,
                   with_metadata: bool = True) -> bytes:
    """Convert a classifier to TFLite flatbuffer bytes with metadata (see
    :func:`export_tflite`); ``with_metadata=False``: the bare model (predict's cache keeps
    the labels itself, and needs none of the Android clients' rules for them)."""
    head = check_task(task, outputs)
    io_type = check_options(quantize, io_type, calibration_images)
    model, size = at_size(check_classifier(model), image_size)
    meta = model_metadata(model, size, head, io_type, quantize, **(metadata or {})) \
        if with_metadata else None
    flat = _convert(model, quantize=quantize, io_type=io_type, image_size=size,
                    calibration_images=calibration_images, head=head,
                    dynamic_batch=dynamic_batch)
    if meta is None:
        return flat
    files = {LABELS_FILE: labels_text(model).encode("utf-8")} if head != "features" else {}
    return tfm.populate(flat, tfm.build_metadata(meta), files)


def model_metadata(model, size: int, head: str, io_type: str, quantize: str = "none",
                   **overrides) -> tfm.ModelMeta:
    """What :func:`convert_tflite` writes as metadata; ``overrides``: name, description,
    version, author, license."""
    from tf_mobilenet_v1 import __version__

    cfg = model.config
    variant = cfg.replace(image_size=size).variant
    n = cfg.num_labels
    float_in = io_type != "uint8"  # int8 input is the normalized value, quantized
    lo, hi = (-1.0, 1.0) if float_in else (0.0, 255.0)
    image = tfm.TensorMeta(
        name="image", content="image", image_size=(size, size),
        description=f"RGB image resized to {size} x {size}"
        + (f", normalized as (pixel - {NORM_MEAN}) / {NORM_STD} to [-1, 1]" if float_in
           else ", raw 0..255 pixels (uint8)"),
        mean=[NORM_MEAN] if float_in else None, std=[NORM_STD] if float_in else None,
        stats_min=[lo], stats_max=[hi])
    if head == "features":
        out = tfm.TensorMeta(name="feature_vector", description=(
            "Pooled features of the MobileNet V1 backbone (the input of its classifier), "
            "for embedding, retrieval and transfer learning."))
        kind = "feature vector"
    else:
        labels = tfm.AssociatedFile(LABELS_FILE, f"{n} class names, line i = class index i.")
        if head == "probabilities":
            out = tfm.TensorMeta(name="probability", stats_min=[0.0], stats_max=[1.0],
                                 description=f"Softmax probabilities of the {n} labels.",
                                 files=[labels])
        else:
            out = tfm.TensorMeta(name="logits", files=[labels], description=(
                f"Logits of the {n} labels (apply a softmax for probabilities)."))
        kind = "image classifier"
    classes = f", {n} classes" if head != "features" and n != 1001 else ""
    meta = tfm.ModelMeta(
        name=f"MobileNet V1 {kind} ({variant}{classes})",
        description=(f"MobileNet V1 {variant} {kind}, {_MODE_NAMES[quantize]} weights, "
                     f"{size} x {size} RGB input; exported by tf_mobilenet_v1."
                     + (f" Identifies the most prominent object among {n} categories."
                        if head != "features" else "")),
        version=f"tf_mobilenet_v1 {__version__}",
        author="tf_mobilenet_v1 (MobileNet V1 architecture and weights by Google)",
        license="Apache License 2.0 (https://www.apache.org/licenses/LICENSE-2.0) for the "
                "architecture and Google's pretrained weights; a fine-tuned model's own "
                "terms may also apply.",
        inputs=[image], outputs=[out])
    for key, value in overrides.items():
        if key not in ("name", "description", "version", "author", "license"):
            raise ValueError(f"unknown metadata field {key!r}")
        setattr(meta, key, str(value))
    return meta


_MODE_NAMES = {"none": "float32", "float16": "float16", "dynamic": "dynamic-range int8",
               "int8": "full-integer int8"}


def _convert(model, *, quantize, io_type, image_size, calibration_images, head,
             dynamic_batch) -> bytes:
    """The converter's flatbuffer, no metadata."""
    import tensorflow as tf

    io_type = check_options(quantize, io_type, calibration_images)
    model, size = at_size(check_classifier(model), image_size)
    if isinstance(calibration_images, str) and calibration_images == RANGES:
        if dynamic_batch:
            raise ValueError("--dynamic-batch is not available for a model quantized from "
                             "its own ranges (batch 1, as Google's _quant models)")
        from .quantized import convert_with_ranges

        return convert_with_ranges(model, size, head)
    inference_model = model.folded()  # batch norm folded into conv bias: no MUL/ADD ops
    concrete, holder = _concrete_function(inference_model, size, head,
                                          None if dynamic_batch else 1)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], holder)
    # Only builtin ops: no Flex (SELECT_TF_OPS) fallback that mobile runtimes lack.
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantize == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantize == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif quantize == "int8":
        arrays = list(calibration_arrays(calibration_images, size))
        if len(arrays) < MIN_CALIBRATION_IMAGES:
            warnings.warn(f"int8 calibration on {len(arrays)} image(s) only: activation ranges "
                          "from so few miss what other photos hold; pass at least "
                          f"{MIN_CALIBRATION_IMAGES} representative photos", stacklevel=2)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([a] for a in arrays)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = _tf_dtype(io_type)
        converter.inference_output_type = _tf_dtype(io_type)
    try:
        return converter.convert()
    except Exception as e:  # the converter raises ConverterError and assorted TF errors
        raise RuntimeError(f"TFLite conversion failed: {str(e).strip().splitlines()[0]}") \
            from e


def export_tflite(model, dst, *, quantize: str = "none", io_type: str | None = None,
                  image_size: int | None = None, calibration_images=None, force: bool = False,
                  write_labels: bool = True, task: str = "classification",
                  outputs: str | None = None, dynamic_batch: bool = False,
                  metadata: dict | None = None) -> str:
    """Write a ``.tflite`` model with metadata (and ``labels.txt`` beside it); return ``dst``.

    ``quantize``: ``"none"`` (float32), ``"float16"`` (float16 weights, the GPU delegate's
    native precision), ``"dynamic"`` (int8 weights, float activations) or ``"int8"`` (full
    integer, calibrated on ``calibration_images``: a directory, paths or normalized arrays).
    ``io_type`` (int8 only): ``"uint8"`` (default), ``"int8"`` or ``"float32"`` inputs/outputs.
    ``image_size`` defaults to the config's. ``task``: ``"classification"`` or
    ``"feature-vector"`` (the pooled features, no labels); ``outputs`` (classification):
    ``"probabilities"`` (default) or ``"logits"``. ``dynamic_batch``: a (-1, S, S, C) input
    that ``resize_tensor_input`` can batch (batch 1 by default, what mobile clients expect).
    ``metadata`` overrides name / description / version / author / license.
    Nothing is written if anything fails.
    """
    dst = check_writable(os.fspath(dst), force)
    if not dst.endswith(".tflite"):
        raise ValueError(f"TFLite output {dst!r} must end in .tflite")
    model = check_classifier(model)
    head = check_task(task, outputs)
    labels_path = os.path.join(os.path.dirname(os.path.abspath(dst)), LABELS_FILE)
    text = labels_text(model) if write_labels and head != "features" else None
    if text is not None and not force and os.path.lexists(labels_path) \
            and not same_text(labels_path, text):
        raise FileExistsError(f"{labels_path} already exists with other labels; pass "
                              "force=True (CLI: --force) to replace it")
    content = convert_tflite(model, quantize=quantize, io_type=io_type, image_size=image_size,
                             calibration_images=calibration_images, task=task,
                             outputs=outputs, dynamic_batch=dynamic_batch, metadata=metadata)
    # The model and a new labels.txt replace the old pair as a unit: a failed export keeps
    # both old files, a successful one never leaves labels that belong to another model.
    outs = [dst]
    if text is not None and not same_text(labels_path, text):
        outs.append(labels_path)
    with atomic_outputs(outs, force, suffixes=[".tflite", ".txt"][:len(outs)]) as tmps:
        with open(tmps[0], "wb") as f:
            f.write(content)
        if len(tmps) > 1:
            with open(tmps[1], "w", encoding="utf-8", newline="\n") as f:
                f.write(text)
    return dst


def default_tflite_name(quantize: str, io_type: str | None = None,
                        task: str = "classification", outputs: str | None = None) -> str:
    """File name used under ``saved_models/<variant>/`` for a weight mode and task."""
    mode = {"none": "float32", "float16": "float16", "dynamic": "dynamic_int8"}.get(
        quantize) or f"int8_io_{io_type or DEFAULT_INT8_IO}"
    if task == "feature-vector":
        return f"feature_vector_{mode}.tflite"
    return f"model_{mode}{'_logits' if outputs == 'logits' else ''}.tflite"

