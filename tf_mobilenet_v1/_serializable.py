"""Register the Keras classes on ``import tf_mobilenet_v1`` without importing Keras early.

``keras.saving.load_model`` finds our classes (or a user's model around them) only once their
modules ran ``register_keras_serializable``. Importing them in ``__init__`` would load
TensorFlow for every ``mobilenet-v1 --help``; so when Keras is not imported yet, a one-shot
import hook runs the registration right after Keras finishes importing.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

# The modules whose import registers every serializable class.
MODULES = ("tf_mobilenet_v1.layers", "tf_mobilenet_v1.models",
           "tf_mobilenet_v1.preprocessing.layer")


def register() -> None:
    for name in MODULES:
        importlib.import_module(name)


class _AfterKeras(importlib.abc.MetaPathFinder):
    """Finds ``keras`` with the other finders and registers our classes once it has run."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "keras":
            return None
        sys.meta_path.remove(self)  # one shot; the real finders locate keras
        spec = importlib.util.find_spec("keras")
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        exec_module = loader.exec_module

        def exec_then_register(module):
            exec_module(module)
            try:
                register()
            except Exception as e:  # noqa: BLE001 - never break the user's `import keras`
                warnings.warn(f"tf_mobilenet_v1 could not register its Keras classes: {e}",
                              stacklevel=2)

        loader.exec_module = exec_then_register
        return spec


def register_when_keras_loads() -> None:
    if "keras" in sys.modules:
        register()
    elif not any(isinstance(f, _AfterKeras) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterKeras())
