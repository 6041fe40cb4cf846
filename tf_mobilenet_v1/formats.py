"""The weight forms this package reads and writes: one record each, in one table.

A form is recognised here and only here (by its suffix, or for a directory by what it holds).
Its reader (``loaders``) and writer (``converters``) are named as ``module:function`` and
imported when used, so this table loads without TensorFlow. Every reader has one signature,
``read(path, use_ema, overrides) -> WeightSource``, and hands its tensors to the one assembly
step (``loaders.dispatch``); every writer is ``write(model, dst, force) -> dst``. A new form is
one record here plus its reader (and writer) module.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import os

from .loaders.hf_names import WEIGHT_FILES

__all__ = ["FORMS", "Form", "describe_forms", "for_output", "recognise"]


@dataclasses.dataclass(frozen=True)
class Form:
    """One weight form: its name, how messages call it, its suffixes, reader and writer."""

    name: str
    what: str
    family: str  # "keras", "hf", "slim" or "tflite": the forms one reader serves
    suffixes: tuple[str, ...] = ()
    reader: str = ""
    writer: str | None = None
    directory: bool = False  # a folder (an HF model directory, a checkpoint directory)
    moving_averages: bool = False  # may hold ExponentialMovingAverage shadows (use_ema)
    needs: tuple[str, ...] = ()  # optional packages its reader imports: checked before loading

    def check_needs(self, path: str) -> None:
        """An ImportError saying what to install, in milliseconds, before anything loads."""
        missing = [m for m in self.needs if importlib.util.find_spec(m) is None]
        if missing:
            raise ImportError(f"reading {path} ({self.what}) needs {', '.join(missing)}: "
                              f"{_INSTALL.get(missing[0], 'pip install ' + missing[0])}")

    def check_ema(self, path: str, use_ema: bool) -> None:
        if use_ema and not self.moving_averages:
            raise ValueError(f"use_ema applies to TF-slim checkpoints only; {path} is "
                             f"{self.what}, which holds one set of weights")

    def read(self, path: str, use_ema: bool = False, overrides: dict | None = None):
        """``path`` as a ``loaders.source.WeightSource``."""
        self.check_ema(path, use_ema)
        self.check_needs(path)
        return _function(self.reader)(path, use_ema, dict(overrides or {}))

    def write(self, model, dst: str, force: bool = False) -> str:
        if self.writer is None:
            raise ValueError(f"{self.what} is read, not written")
        return _function(self.writer)(model, dst, force=force)


# The versions the project tests with (a bare `pip install torch` downloads gigabytes more).
_INSTALL = {"torch": "pip install torch==2.13.0 (CPU is enough), or convert the file to "
                     ".safetensors where torch is installed"}


def _function(spec: str):
    module, name = spec.split(":")
    return getattr(importlib.import_module(module), name)


_HF = "tf_mobilenet_v1.loaders.hf:hf_source"
_SLIM = "tf_mobilenet_v1.loaders.slim:slim_source"
_SAVE_KERAS = "tf_mobilenet_v1.converters.convert:save_keras"
_SAVE_HF = "tf_mobilenet_v1.converters.hf:save_hf"

FORMS: tuple[Form, ...] = (
    Form("keras", "a .keras file", "keras", (".keras",),
         "tf_mobilenet_v1.loaders.keras_files:keras_source", _SAVE_KERAS),
    Form("weights_h5", "a .weights.h5 file", "keras", (".weights.h5",),
         "tf_mobilenet_v1.loaders.keras_files:weights_h5_reader", _SAVE_KERAS),
    Form("keras_h5", "a keras.applications MobileNet .h5", "keras", (".h5",),
         "tf_mobilenet_v1.loaders.keras_applications:applications_file_source"),
    Form("hf_dir", "a Hugging Face directory", "hf", (), _HF, _SAVE_HF, directory=True),
    Form("safetensors", "a .safetensors state dict", "hf", (".safetensors",), _HF, _SAVE_HF),
    Form("bin", "a PyTorch .bin state dict", "hf", (".bin",), _HF, _SAVE_HF, needs=("torch",)),
    Form("slim_ckpt", "a TF-slim checkpoint (prefix or directory)", "slim", (".ckpt",), _SLIM,
         "tf_mobilenet_v1.converters.slim:save_slim_checkpoint", moving_averages=True),
    Form("tarball", "a release .tgz", "slim", (".tgz", ".tar.gz", ".tar"), _SLIM,
         moving_averages=True),
    Form("frozen_pb", "a frozen .pb", "slim", (".pb",), _SLIM, moving_averages=True),
    Form("tflite", "a .tflite model (float or quantized)", "tflite", (".tflite",),
         "tf_mobilenet_v1.loaders.tflite:tflite_source"),
)
BY_NAME = {f.name: f for f in FORMS}
_CHECKPOINT_PARTS = (".index", ".data-00000-of-00001")


def describe_forms() -> str:
    """The sentence messages use: what may be passed as weights."""
    return ("a registry name (e.g. mobilenet_v1_1.0_224), "
            + ", ".join(f.what for f in FORMS[:-1]) + f" or {FORMS[-1].what}")


def recognise(path: str) -> Form:
    """The form of an existing local source; anything else is a ``ValueError`` that lists the
    forms (a missing path is the caller's ``FileNotFoundError``)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        if any(os.path.isfile(os.path.join(path, n)) for n in WEIGHT_FILES):
            return BY_NAME["hf_dir"]
        return BY_NAME["slim_ckpt"]  # a checkpoint directory (its reader says if it is not)
    if os.path.isfile(path + ".index") or path.endswith(_CHECKPOINT_PARTS):
        return BY_NAME["slim_ckpt"]
    lower = path.lower()
    for form in sorted(FORMS, key=lambda f: -max(map(len, f.suffixes), default=0)):
        if form.suffixes and lower.endswith(form.suffixes) and not form.directory:
            return form
    raise ValueError(f"cannot tell what {path} is; pass {describe_forms()}")


# Deployment outputs belong to `export`, not to `convert`.
_EXPORT_SUFFIXES = (".tflite", ".pb", ".savedmodel", ".saved_model")


def for_output(dst: str) -> Form:
    """The form ``convert`` writes to ``dst``, by its name: a file suffix, or a Hugging Face
    directory (an existing directory, a name ending in the path separator, or no suffix)."""
    bare = dst.rstrip(os.sep)
    files = tuple(s for f in FORMS if f.writer and not f.directory for s in f.suffixes)
    if bare.lower().endswith(_EXPORT_SUFFIXES):
        raise ValueError(f"{dst!r} is a deployment format: convert writes weights; use "
                         f"`mobilenet-v1 export SRC {dst}` (TFLite or SavedModel) instead")
    if dst.endswith(os.sep) and bare.endswith(files):
        raise ValueError(f"{dst!r} ends in {os.sep} (a Hugging Face directory) but is named like "
                         "a file; drop the slash to write that file, or name the directory "
                         "without a file extension")
    for form in FORMS:
        if form.writer and not form.directory and dst.endswith(form.suffixes):
            return form
    if dst.endswith(os.sep) or os.path.isdir(dst) or not os.path.splitext(dst)[1]:
        return BY_NAME["hf_dir"]
    raise ValueError(
        f"cannot tell the output format of {dst!r}; use a name ending in "
        + ", ".join(files[:-1]) + f" or {files[-1]}, or for a Hugging Face directory an "
        f"existing directory or a name ending in {os.sep} (e.g. {dst}{os.sep})")
