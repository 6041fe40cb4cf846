"""``convert(src, dst)``: load weights in any supported form, write them in the form of ``dst``.

Destination forms: ``*.keras`` and ``*.weights.h5`` (Keras), ``*.ckpt`` (TF-slim checkpoint),
``*.safetensors`` / ``*.bin`` (a Hugging Face state dict) or a directory (a Hugging Face model
directory with ``config.json``, ``preprocessor_config.json`` and ``model.safetensors``).
"""

from __future__ import annotations

import os
import shutil
import zipfile

from tf_mobilenet_v1.fileio import atomic_output


def save_keras(model, dst: str, force: bool = False) -> str:
    """Write a ``.keras`` archive or ``.weights.h5`` file atomically."""
    if dst.endswith(".weights.h5"):
        with atomic_output(dst, force, suffix=".weights.h5") as tmp:
            # h5py crashes the process (SIGSEGV) when the disk fills during save_weights. A
            # .keras archive holds the same model.weights.h5, built in memory; copying it out
            # with Python turns a full disk into an ordinary error.
            staging = os.path.join(os.path.dirname(tmp), "staging.keras")
            model.save(staging)
            with zipfile.ZipFile(staging) as zf, zf.open("model.weights.h5") as src, \
                    open(tmp, "wb") as out:
                shutil.copyfileobj(src, out)
            os.remove(staging)
    else:
        with atomic_output(dst, force, suffix=".keras") as tmp:
            model.save(tmp)
    return dst


_FILE_FORMS = (".keras", ".weights.h5", ".ckpt", ".safetensors", ".bin")


_EXPORT_FORMS = (".tflite", ".pb", ".savedmodel", ".saved_model")


def _writer(dst: str):
    if dst.rstrip(os.sep).lower().endswith(_EXPORT_FORMS):
        raise ValueError(f"{dst!r} is a deployment format: convert writes weights; use "
                         f"`mobilenet-v1 export SRC {dst}` (TFLite or SavedModel) instead")
    if dst.endswith(os.sep) and dst.rstrip(os.sep).endswith(_FILE_FORMS):
        raise ValueError(f"{dst!r} ends in {os.sep} (a Hugging Face directory) but is named like "
                         "a file; drop the slash to write that file, or name the directory "
                         "without a file extension")
    if dst.endswith((".keras", ".weights.h5")):
        return save_keras
    if dst.endswith(".ckpt"):
        from .slim import save_slim_checkpoint

        return save_slim_checkpoint
    if dst.endswith((".safetensors", ".bin")) or dst.endswith(os.sep) or os.path.isdir(dst) \
            or not os.path.splitext(dst)[1]:
        from .hf import save_hf

        return save_hf
    raise ValueError(
        f"cannot tell the output format of {dst!r}; use a name ending in .keras, .weights.h5, "
        ".ckpt, .safetensors or .bin, or for a Hugging Face directory an existing directory or "
        f"a name ending in {os.sep} (e.g. {dst}{os.sep})"
    )


def convert(src: str, dst: str, *, force: bool = False, use_ema: bool = False) -> str:
    """Convert ``src`` (registry name or any supported path) into ``dst``; return ``dst``."""
    from tf_mobilenet_v1.loaders.dispatch import load_any

    writer = _writer(dst)  # fail on a bad destination before loading anything
    if os.path.lexists(dst.rstrip(os.sep)) and not force:
        raise FileExistsError(f"{dst} already exists; pass --force to replace it")
    model = load_any(src, use_ema=use_ema)
    return writer(model, dst.rstrip(os.sep) if dst != os.sep else dst, force=force)
