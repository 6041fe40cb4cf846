"""``mobilenet-v1 export``: load any weights, write a SavedModel or a TFLite model, summarize it.

Default outputs go under ``saved_models/<variant>/`` (relative to the current directory):
``saved_model/`` for a SavedModel, ``model_<mode>.tflite`` plus ``labels.txt`` for TFLite.
"""

from __future__ import annotations

import os

from ._deploy import LABELS_FILE, NORM_MEAN, NORM_STD, at_size, check_classifier, human_size

FORMATS = ("saved_model", "tflite")
DEFAULT_ROOT = "saved_models"

_MODE_TEXT = {
    "none": "float32",
    "float16": "float16 weights (the GPU delegate's native precision)",
    "dynamic": "dynamic-range int8 weights, float activations",
    "int8": "full-integer int8",
}


def default_output(variant: str, format: str, quantize: str = "none",
                   io_type: str | None = None) -> str:
    """``saved_models/<variant>/saved_model`` or ``saved_models/<variant>/model_<mode>.tflite``."""
    from .tflite import default_tflite_name

    name = "saved_model" if format == "saved_model" else default_tflite_name(quantize, io_type)
    return os.path.join(DEFAULT_ROOT, variant, name)


def _check_args(format, quantize, io_type, image_size, calibration_dir):
    if format not in FORMATS:
        raise ValueError(f"unknown export format {format!r}; use saved_model or tflite")
    if image_size is not None and (not isinstance(image_size, int) or image_size < 32):
        raise ValueError(f"--image-size must be an integer of at least 32, got {image_size!r}")
    if format == "saved_model":
        if quantize != "none" or io_type is not None or calibration_dir is not None:
            raise ValueError("--quantize, --io-type and --calibration-dir apply to TFLite only; "
                             "use --format tflite")
        return None
    from .tflite import check_options

    io_type = check_options(quantize, io_type, calibration_dir)
    if calibration_dir is not None and not os.path.exists(calibration_dir):
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
           calibration_dir: str | None = None, force: bool = False) -> str:
    """Export ``src`` (registry name, weights path or a loaded classifier); return the path.

    Prints a summary: path, size, inputs / outputs, and for TFLite the operator list and the
    GPU-delegate verdict. ``out`` defaults to ``saved_models/<variant>/...``.
    """
    from tf_mobilenet_v1.fileio import check_writable

    io_type = _check_args(format, quantize, io_type, image_size, calibration_dir)
    if out is not None:
        check_writable(os.fspath(out).rstrip(os.sep), force)  # fail before loading weights
    model = _load(src)
    model, size = at_size(model, image_size)
    variant = model.config.replace(image_size=size).variant
    out = os.fspath(out).rstrip(os.sep) if out is not None \
        else default_output(variant, format, quantize, io_type)
    check_writable(out, force)
    if format == "saved_model":
        from .saved_model import export_saved_model

        export_saved_model(model, out, force=force, image_size=size)
        print(saved_model_summary(out, variant))
    else:
        from .tflite import export_tflite

        export_tflite(model, out, quantize=quantize, io_type=io_type, image_size=size,
                      calibration_images=calibration_dir, force=force)
        print(tflite_summary(out, variant, quantize))
    return out


def _dir_size(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path)
               for f in files)


def tflite_summary(path: str, variant: str = "", quantize: str = "none") -> str:
    """Human-readable report of a ``.tflite`` file: size, I/O, operators, GPU verdict."""
    from .tflite_inspect import gpu_compatibility, op_counts, tflite_io

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
    elif inputs:
        lines.append("           raw RGB pixels, quantized as shown")
    lines += [f"  output:  {t}" for t in outputs]
    lines.append(f"  ops ({sum(counts.values())}): "
                 + ", ".join(f"{k} x{v}" for k, v in counts.items()))
    lines.append(f"  GPU delegate: {gpu_compatibility(path)}")
    labels = os.path.join(os.path.dirname(os.path.abspath(path)), LABELS_FILE)
    if os.path.isfile(labels):
        lines.append(f"  labels:  {os.path.join(os.path.dirname(path), LABELS_FILE)}")
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
