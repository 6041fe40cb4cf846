"""``mobilenet-v1 export``: load any weights, write a SavedModel, TFLite or ONNX model,
summarize it.

Default outputs go under ``saved_models/<variant>/`` (relative to the current directory):
``saved_model/`` for a SavedModel, ``model_<mode>.tflite`` plus ``labels.txt`` for TFLite,
``model.onnx`` for ONNX; ``feature_vector_...`` names for ``task="feature-vector"``.
"""

from __future__ import annotations

import os

from ._deploy import (
    LABELS_FILE,
    NORM_MEAN,
    NORM_STD,
    at_size,
    check_classifier,
    check_task,
    human_size,
)

FORMATS = ("saved_model", "tflite", "onnx")
DEFAULT_ROOT = "saved_models"

_MODE_TEXT = {
    "none": "float32",
    "float16": "float16 weights (the GPU delegate's native precision)",
    "dynamic": "dynamic-range int8 weights, float activations",
    "int8": "full-integer int8",
}


def default_output(variant: str, format: str, quantize: str = "none",
                   io_type: str | None = None, task: str = "classification",
                   outputs: str | None = None) -> str:
    """``saved_models/<variant>/saved_model``, ``.../model_<mode>.tflite`` or
    ``.../model.onnx`` (``feature_vector...`` for the feature-vector task)."""
    from .tflite import default_tflite_name

    prefix = "feature_vector_" if task == "feature-vector" else ""
    if format == "saved_model":
        name = f"{prefix}saved_model"
    elif format == "onnx":
        name = f"{prefix.rstrip('_') or 'model'}.onnx"
    else:
        name = default_tflite_name(quantize, io_type, task, outputs)
    return os.path.join(DEFAULT_ROOT, variant, name)


def _default_folder(src, variant: str) -> str:
    """Where a default output goes under ``saved_models/``: the variant for official weights
    (a registry name, a model object), the source's own name for a file or directory of the
    user's (``fine_tuned.keras`` -> ``fine_tuned``), so it never lands in, or is refused as
    "already exists" by, the official model's folder."""
    from tf_mobilenet_v1.formats import FORMS

    if not isinstance(src, (str, os.PathLike)) or not os.path.lexists(os.fspath(src)) and \
            not os.path.exists(os.fspath(src) + ".index"):
        return variant
    name = os.path.basename(os.fspath(src).rstrip(os.sep))
    suffixes = sorted((x for f in FORMS for x in f.suffixes), key=len, reverse=True)
    stem = next((name[:-len(x)] for x in suffixes if name.lower().endswith(x)), name)
    return stem or variant


def _may_carry_ranges(src) -> bool:
    """Whether ``src`` can bring quantization ranges (a ``_quant`` registry name, a slim
    checkpoint or release, a ``.tflite``), so that int8 needs no calibration: decided before
    loading, so the others fail at once."""
    from tf_mobilenet_v1 import formats, registry

    if not isinstance(src, (str, os.PathLike)):
        return bool(getattr(src, "quant_ranges", None))
    src = os.fspath(src)
    key = registry.canonical_name(src) if not os.path.exists(src) else None
    if key is not None:
        return registry.get(key).quantized
    try:
        return formats.recognise(src).family in ("slim", "tflite")
    except (ValueError, OSError):
        return False


def _check_args(format, quantize, io_type, image_size, calibration_dir, task="classification",
                outputs=None):
    if format not in FORMATS:
        raise ValueError(f"unknown export format {format!r}; use one of {', '.join(FORMATS)}")
    if image_size is not None and (not isinstance(image_size, int) or image_size < 32):
        raise ValueError(f"--image-size must be an integer of at least 32, got {image_size!r}")
    check_task(task, outputs)
    if format != "tflite":
        if quantize != "none" or io_type is not None or calibration_dir is not None:
            raise ValueError("--quantize, --io-type and --calibration-dir apply to TFLite only; "
                             "use --format tflite")
        if outputs is not None:
            raise ValueError(f"--outputs applies to TFLite; a {format} classifier outputs "
                             "both logits and probabilities")
        return None
    from .tflite import check_options

    io_type = check_options(quantize, io_type, calibration_dir)
    if calibration_dir is not None and calibration_dir != "ranges" \
            and not os.path.exists(calibration_dir):
        raise FileNotFoundError(f"calibration directory {calibration_dir} does not exist")
    return io_type


def _load(src):
    import keras

    if isinstance(src, keras.Model):
        return check_classifier(src)
    path = os.fspath(src)
    if path.endswith(".keras") and os.path.isfile(path):
        from tf_mobilenet_v1.loaders.keras_files import load_keras_file

        return check_classifier(load_keras_file(path, users_own=True))  # a fine-tune, too
    from tf_mobilenet_v1.loaders.dispatch import load_any

    return check_classifier(load_any(src))


def export(src, out=None, *, format: str = "tflite", quantize: str = "none",
           io_type: str | None = None, image_size: int | None = None,
           calibration_dir: str | None = None, force: bool = False,
           task: str = "classification", outputs: str | None = None,
           dynamic_batch: bool = False) -> str:
    """Export ``src`` (registry name, weights path or a loaded classifier); return the path.

    Prints a summary: path, size, inputs / outputs, and for TFLite the operator list, the
    GPU-delegate verdict and the metadata. ``out`` defaults to ``saved_models/<variant>/...``.
    ``task``: ``classification`` or ``feature-vector``; ``outputs`` (TFLite classifiers):
    ``probabilities`` (default) or ``logits``; ``dynamic_batch``: a TFLite input of any batch
    size (SavedModel and ONNX always take any batch).
    """
    from tf_mobilenet_v1.errors import import_tensorflow_quietly
    from tf_mobilenet_v1.fileio import check_writable

    from .quantized import RANGES

    own_ranges = quantize == "int8" and calibration_dir is None and _may_carry_ranges(src)
    io_type = _check_args(format, quantize, io_type, image_size,
                          RANGES if own_ranges else calibration_dir, task, outputs)
    if out is not None:
        check_writable(os.fspath(out).rstrip(os.sep), force)  # fail before loading weights
    import_tensorflow_quietly()  # after the checks: a wrong option costs no start-up
    model = _load(src)
    if own_ranges:
        if not getattr(model, "quant_ranges", None):
            raise ValueError(f"--quantize int8 needs calibration images: {src} carries no "
                             "quantization ranges; pass --calibration-dir with a few hundred "
                             "representative photos")
        calibration_dir = RANGES  # the ranges it was trained with, no calibration
    model, size = at_size(model, image_size)
    variant = model.config.replace(image_size=size).variant
    out = os.fspath(out).rstrip(os.sep) if out is not None \
        else default_output(_default_folder(src, variant), format, quantize, io_type, task,
                            outputs)
    check_writable(out, force)
    if format == "saved_model":
        from .saved_model import export_saved_model

        export_saved_model(model, out, force=force, image_size=size, task=task)
        print(saved_model_summary(out, variant))
    elif format == "onnx":
        from .onnx_export import export_onnx

        export_onnx(model, out, image_size=size, task=task, force=force)
        print(onnx_summary(out, variant))
    else:
        from .tflite import export_tflite

        export_tflite(model, out, quantize=quantize, io_type=io_type, image_size=size,
                      calibration_images=calibration_dir, force=force, task=task,
                      outputs=outputs, dynamic_batch=dynamic_batch)
        print(tflite_summary(out, variant, quantize))
    return out


def _dir_size(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path)
               for f in files)


def tflite_summary(path: str, variant: str = "", quantize: str = "none") -> str:
    """Human-readable report of a ``.tflite`` file: size, I/O, operators, GPU verdict."""
    from .tflite_inspect import gpu_compatibility, op_counts, tflite_io
    from .tflite_metadata import read_metadata

    inputs, outputs = tflite_io(path)
    counts = op_counts(path)
    lines = [
        f"wrote {path}" + (f" ({variant})" if variant else ""),
        f"  size:    {human_size(os.path.getsize(path))}",
        f"  weights: {_MODE_TEXT.get(quantize, quantize)}",
    ]
    lines += [f"  input:   {t}" for t in inputs]
    if inputs and inputs[0].dtype == "float32":
        lines.append(f"           RGB normalized as (pixel - {NORM_MEAN}) / {NORM_STD}, "
                     "i.e. [-1, 1]")
    elif inputs and inputs[0].dtype == "int8":
        lines.append("           RGB normalized to [-1, 1], quantized as shown (q = pixel - 128)")
    elif inputs:
        lines.append("           raw RGB pixels, quantized as shown")
    lines += [f"  output:  {t}" for t in outputs]
    lines.append(f"  ops ({sum(counts.values())}): "
                 + ", ".join(f"{k} x{v}" for k, v in counts.items()))
    gpu = gpu_compatibility(path)
    lines.append(f"  GPU delegate: {gpu}")
    if gpu.compatible:
        # tests/test_gpu_delegate.py runs every float-I/O export kind on the real delegate.
        lines.append("           runs whole on it in MediaPipe's GPU mode (OpenGL ES), as "
                     "tested for this export kind (docs/android.md)")
    meta = read_metadata(path)
    if meta is not None:
        norm = meta["inputs"][0].get("normalization") if meta["inputs"] else None
        packed = ", ".join(meta["packed_files"]) or "no files"
        lines.append(f"  metadata: {meta['name']!r}, input "
                     + (f"normalization mean {norm['mean']} std {norm['std']}" if norm
                        else "raw pixels (no normalization)")
                     + f", packed: {packed} (Task Library / MediaPipe ready)")
    labels = os.path.join(os.path.dirname(os.path.abspath(path)), LABELS_FILE)
    # A feature-vector model has no labels, even beside a classifier's labels.txt.
    if os.path.isfile(labels) and (meta is None or LABELS_FILE in meta["packed_files"]):
        lines.append(f"  labels:  {os.path.join(os.path.dirname(path), LABELS_FILE)}")
    return "\n".join(lines)


def onnx_summary(path: str, variant: str = "") -> str:
    """Human-readable report of an ``.onnx`` file: size, inputs / outputs, opset."""
    try:
        import onnx
    except ImportError as e:
        raise ImportError(f"reading ONNX files needs onnx: pip install '.[onnx]' from the checkout "
                          f"({e})") from None
    model = onnx.load(path)

    def dims(v):
        return [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]

    lines = [f"wrote {path}" + (f" ({variant})" if variant else ""),
             f"  size: {human_size(os.path.getsize(path))}, "
             f"opset {max(o.version for o in model.opset_import)}"]
    lines += [f"  input:  {v.name} float32{dims(v)}" for v in model.graph.input]
    lines += [f"  output: {v.name}{dims(v)}" for v in model.graph.output]
    lines.append(f"  expects RGB NHWC normalized as (pixel - {NORM_MEAN}) / {NORM_STD}")
    return "\n".join(lines)


def saved_model_summary(path: str, variant: str = "") -> str:
    """Human-readable report of a SavedModel: size and each signature's inputs / outputs."""
    from .saved_model import saved_model_signatures

    lines = [f"wrote {path}" + (f" ({variant})" if variant else ""),
             f"  size: {human_size(_dir_size(path))}"]
    for key, sig in saved_model_signatures(path).items():
        ins = ", ".join(f"{k} {d}{list(s)}" for k, (d, s) in sig["inputs"].items())
        outs = ", ".join(f"{k}" for k in sig["outputs"])
        lines.append(f"  signature {key}: {ins} -> {outs}")
    lines.append(f"  serving_default expects RGB normalized as (pixel - {NORM_MEAN}) / {NORM_STD}")
    return "\n".join(lines)
