"""Weights in: every supported source becomes one of our Keras models.

``dispatch`` picks the reader for a registry name or path (``load_pretrained``, ``load_any``);
``slim`` (with ``tf_checkpoint``, ``tarball``, ``frozen_graph``) reads TF-slim sources,
``keras_files`` reads ``.keras`` / ``.weights.h5``, ``hf`` (with ``hf_names``) reads Hugging Face
state dicts. Each produces a ``source.WeightSource``. Writers live in ``converters``.
"""

import importlib

_EXPORTS = {"load_pretrained": "dispatch", "load_any": "dispatch",
            "PretrainedWarning": "dispatch"}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    # Lazy: reading a slim checkpoint's names must not import Keras and the models.
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
