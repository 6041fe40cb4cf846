"""Exact TensorFlow / Keras 3 MobileNet V1 (TF-slim and Hugging Face compatible).

Public names are imported lazily so that ``mobilenet-v1 --help`` does not load TensorFlow. The
Keras classes are still registered for ``keras.saving.load_model`` as soon as Keras is there:
now if it is already imported, else right after ``import keras`` (see ``_serializable``).
"""

import importlib

_EXPORTS = {
    "MobileNetV1": "applications",
    "CONV_DEFS": "architecture",
    "count_macs": "architecture",
    "count_params": "architecture",
    "layer_specs": "architecture",
    "MobileNetV1Config": "config",
    "imagenet_labels": "labels",
    "MobileNetV1ForImageClassification": "models",
    "MobileNetV1Model": "models",
    "decode_predictions": "outputs",
    "classify": "predict",
    "load_any": "loaders.dispatch",
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


from . import _serializable  # noqa: E402  (needs the names above)

_serializable.register_when_keras_loads()


def _find_converters_in_a_checkout() -> None:
    """Installed, ``converters/`` sits inside this package (pyproject.toml's package-dir). In a
    source checkout it sits beside it: let ``tf_mobilenet_v1.converters`` resolve there too,
    after every other finder, so that scripts and ``python -m`` work from the checkout."""
    import importlib.abc
    import importlib.util
    import os
    import sys

    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(here)
    init = os.path.join(root, "converters", "__init__.py")
    if os.path.isdir(os.path.join(here, "converters")) or not (
            os.path.isfile(init) and os.path.isfile(os.path.join(root, "pyproject.toml"))):
        return

    class CheckoutConverters(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name != f"{__name__}.converters":
                return None
            return importlib.util.spec_from_file_location(
                name, init, submodule_search_locations=[os.path.dirname(init)])

    if not any(type(f).__name__ == "CheckoutConverters" for f in sys.meta_path):
        sys.meta_path.append(CheckoutConverters())


_find_converters_in_a_checkout()
