"""``convert(src, dst)``: load weights in any supported form, write them in the form of ``dst``.

Destination forms: ``*.keras`` and ``*.weights.h5`` (Keras), ``*.ckpt`` (TF-slim checkpoint),
``*.safetensors`` / ``*.bin`` (a Hugging Face state dict) or a directory (a Hugging Face model
directory with ``config.json``, ``preprocessor_config.json`` and ``model.safetensors``).
Weights that came with batch norm folded (a ``.tflite``) get an identity batch norm for the
Hugging Face and slim forms, which have no other place for the bias.
"""

from __future__ import annotations

import os
import shutil
import zipfile

from tf_mobilenet_v1.fileio import atomic_output
from tf_mobilenet_v1.formats import for_output


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


def convert(src: str, dst: str, *, force: bool = False, use_ema: bool = False) -> str:
    """Convert ``src`` (registry name or any supported path) into ``dst``; return ``dst``."""
    from tf_mobilenet_v1.loaders.dispatch import load_any

    form = for_output(dst)  # fail on a bad destination before loading anything
    if os.path.lexists(dst.rstrip(os.sep)) and not force:
        raise FileExistsError(f"{dst} already exists; pass --force to replace it")
    model = load_any(src, use_ema=use_ema)
    if form.family in ("hf", "slim") and model.fold_batchnorm:
        model = model.unfolded()  # a .tflite's folded weights, as formats with batch norm
    return form.write(model, dst.rstrip(os.sep) if dst != os.sep else dst, force=force)
