"""TFLite export at a fixed resolution, batch 1: float32, float16, dynamic-range or full int8.

The graph is converted from a ``tf.function`` of the batch-norm-folded model, so each layer is
one ``CONV_2D`` / ``DEPTHWISE_CONV_2D`` with bias and fused ReLU6, which is what the TFLite GPU
delegate runs natively. The model takes normalized float pixels (``x / 127.5 - 1``), or with
full-int8 and ``io_type="uint8"`` the raw 0..255 RGB pixels, and outputs ``logits``.

Labels: no maintained package writes Android Task Library metadata next to TF 2.21 (see
``saved_models/README.md``), so ``labels.txt`` is written beside the ``.tflite`` file.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np

from tf_mobilenet_v1.fileio import atomic_output, check_writable
from tf_mobilenet_v1.outputs import logits_of

from ._deploy import (
    LABELS_FILE,
    at_size,
    check_classifier,
    labels_text,
    same_text,
    write_text,
)

QUANTIZE_MODES = ("none", "float16", "dynamic", "int8")
IO_TYPES = ("float32", "uint8", "int8")
DEFAULT_INT8_IO = "uint8"
MAX_CALIBRATION_IMAGES = 500


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
                         "with a few hundred representative photos")
    return io_type or DEFAULT_INT8_IO


def _tf_dtype(name: str):
    import tensorflow as tf

    return {"float32": tf.float32, "uint8": tf.uint8, "int8": tf.int8}[name]


def _concrete_function(model, size: int):
    """A ``tf.function`` of the model for a (1, size, size, C) input, plus what tracks it."""
    import tensorflow as tf

    channels = model.config.num_channels

    @tf.function(input_signature=[tf.TensorSpec([1, size, size, channels], tf.float32,
                                                name="pixel_values")])
    def serve(pixel_values):
        return {"logits": logits_of(model(pixel_values, training=False))}

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
    for p in images[:limit]:
        yield np.asarray(prep(read_image(p)[None]), np.float32)


def convert_tflite(model, *, quantize: str = "none", io_type: str | None = None,
                   image_size: int | None = None, calibration_images=None) -> bytes:
    """Convert a classifier to TFLite flatbuffer bytes (see :func:`export_tflite`)."""
    import tensorflow as tf

    io_type = check_options(quantize, io_type, calibration_images)
    model, size = at_size(check_classifier(model), image_size)
    inference_model = model.folded()  # batch norm folded into conv bias: no MUL/ADD ops
    concrete, holder = _concrete_function(inference_model, size)
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
                  write_labels: bool = True) -> str:
    """Write a batch-1 ``.tflite`` model (and ``labels.txt`` beside it); return ``dst``.

    ``quantize``: ``"none"`` (float32), ``"float16"`` (float16 weights, the GPU delegate's
    native precision), ``"dynamic"`` (int8 weights, float activations) or ``"int8"`` (full
    integer, calibrated on ``calibration_images``: a directory, paths or normalized arrays).
    ``io_type`` (int8 only): ``"uint8"`` (default), ``"int8"`` or ``"float32"`` inputs/outputs.
    ``image_size`` defaults to the config's. Nothing is written if anything fails.
    """
    dst = check_writable(os.fspath(dst), force)
    if not dst.endswith(".tflite"):
        raise ValueError(f"TFLite output {dst!r} must end in .tflite")
    model = check_classifier(model)
    labels_path = os.path.join(os.path.dirname(os.path.abspath(dst)), LABELS_FILE)
    text = labels_text(model) if write_labels else None
    if text is not None and not force and os.path.lexists(labels_path) \
            and not same_text(labels_path, text):
        raise FileExistsError(f"{labels_path} already exists with other labels; pass "
                              "force=True (CLI: --force) to replace it")
    content = convert_tflite(model, quantize=quantize, io_type=io_type, image_size=image_size,
                             calibration_images=calibration_images)
    wrote_labels = text is not None and write_text(labels_path, text, force)
    try:
        with atomic_output(dst, force, suffix=".tflite") as tmp:
            with open(tmp, "wb") as f:
                f.write(content)
    except BaseException:
        if wrote_labels:  # a failed export leaves nothing behind
            os.remove(labels_path)
        raise
    return dst


def default_tflite_name(quantize: str, io_type: str | None = None) -> str:
    """File name used under ``saved_models/<variant>/`` for a weight mode."""
    if quantize == "none":
        return "model_float32.tflite"
    if quantize == "float16":
        return "model_float16.tflite"
    if quantize == "dynamic":
        return "model_dynamic_int8.tflite"
    return f"model_int8_io_{io_type or DEFAULT_INT8_IO}.tflite"

