"""Image preprocessing for MobileNet V1, one module per job.

* ``processor``: :class:`MobileNetV1ImageProcessor`, Hugging Face's processor in numpy and
  Pillow (no Keras import).
* ``slim``: :func:`slim_eval_preprocess` / :class:`SlimEvalPreprocessor`, TF-slim's evaluation
  preprocessing.
* ``layer``: :class:`MobileNetV1Preprocessing`, the processor as an in-graph Keras layer for
  SavedModel and TFLite.
"""

from __future__ import annotations

import importlib

from .processor import CROP_PADDING, LookupProcessor, MobileNetV1ImageProcessor

_LAZY = {"MobileNetV1Preprocessing": "layer", "slim_eval_preprocess": "slim",
         "SlimEvalPreprocessor": "slim", "SLIM_CENTRAL_FRACTION": "slim"}
__all__ = ["CROP_PADDING", "LookupProcessor", "MobileNetV1ImageProcessor", "PREPROCESSING_NAMES",
           "get_preprocessor", *_LAZY]

PREPROCESSING_NAMES = ("model", "crop", "resize", "slim")


def get_preprocessor(name: str = "crop", image_size: int = 224, model=None):
    """A processor by name: ``"model"`` (the one that belongs to ``model``'s weights, see
    ``MobileNetV1ImageProcessor.for_model``), ``"crop"`` (Hugging Face's resize + center crop
    at ``image_size``), ``"resize"`` (Pillow bilinear straight to ``image_size``) or
    ``"slim"`` (TF-slim's evaluation preprocessing)."""
    if name == "model":
        if model is None:
            return MobileNetV1ImageProcessor.for_variant(image_size)
        return MobileNetV1ImageProcessor.for_model(model)
    if name in ("crop", "resize"):
        return MobileNetV1ImageProcessor.for_variant(image_size, mode=name)
    if name == "slim":
        from .slim import SlimEvalPreprocessor

        return SlimEvalPreprocessor(image_size)
    raise ValueError(f"unknown preprocessing {name!r}; use one of "
                     f"{', '.join(PREPROCESSING_NAMES)}")


def __getattr__(name):
    # Lazy: the numpy processor must not pull in Keras (layer) or TensorFlow (slim).
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
