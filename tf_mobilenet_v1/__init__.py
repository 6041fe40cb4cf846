"""Exact TensorFlow / Keras 3 MobileNet V1 (TF-slim and Hugging Face compatible).

Public names are imported lazily so that ``mobilenet-v1 --help`` does not load TensorFlow.
"""

import importlib

_EXPORTS = {
    "CONV_DEFS": "architecture",
    "count_macs": "architecture",
    "count_params": "architecture",
    "layer_specs": "architecture",
    "MobileNetV1Config": "config",
    "imagenet_labels": "labels",
    "MobileNetV1ForImageClassification": "models",
    "MobileNetV1Model": "models",
    "decode_predictions": "outputs",
    "MobileNetV1ImageProcessor": "preprocessing",
    "MobileNetV1Preprocessing": "preprocessing",
}

__all__ = sorted(_EXPORTS)
__version__ = "0.1.0"


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
