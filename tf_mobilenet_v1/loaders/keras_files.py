"""Keras files: ``.keras`` archives (checked before Keras allocates anything) and bare
``.weights.h5`` files (config inferred from the stored shapes)."""

from __future__ import annotations

import dataclasses
import math
import warnings

from ..architecture import infer_depth_multiplier, layer_specs, model_weight_shapes
from ..config import MobileNetV1Config
from ..errors import first_line
from ..fileio import check_archive_sizes
from ..models import MobileNetV1ForImageClassification, MobileNetV1Model
from ..variants import variant_in_path
from .source import WeightSource, model_source, tensor_problem

_CONFIG_FIELDS = frozenset(f.name for f in dataclasses.fields(MobileNetV1Config))


def load_keras_file(path: str, users_own: bool = False):
    """Our model from a ``.keras`` archive, in Keras's safe mode, after ``check_keras_archive``.

    ``users_own``: also accept any Keras model built around one of ours (a fine-tuned
    keras.applications-style model); it must contain a MobileNet V1.
    """
    import zipfile

    import keras

    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path} is not a .keras archive (not a zip file: truncated, corrupt or "
                         "another format); pass a .keras file saved by this package")
    check_archive_sizes(path)
    if not (users_own and keras_archive_class(path) not in _KERAS_CLASSES):
        check_keras_archive(path)
    try:
        # safe_mode (the default, spelled out): a Lambda layer's pickled bytecode is refused.
        model = keras.saving.load_model(path, safe_mode=True)
    except (ValueError, OSError, TypeError, KeyError, RuntimeError, EOFError,
            zipfile.BadZipFile) as e:
        if _flat_classifier(path):
            raise ValueError(
                f"cannot load Keras file {path}: it is a classifier saved by an earlier "
                "tf_mobilenet_v1, whose layers were one flat graph (this version's classifier "
                "holds its backbone); load it with that version and save it as a Hugging Face "
                "directory or .safetensors, which every version reads") from None
        first = first_line(e)
        raise ValueError(f"cannot load Keras file {path} ({first}); pass a .keras file saved "
                         "by this package") from None
    check_finite(model, path)
    if users_own and contains_mobilenet(model):
        return model
    if not isinstance(model, (MobileNetV1Model, MobileNetV1ForImageClassification)):
        raise ValueError(f"{path} holds a {type(model).__name__}, not a MobileNet V1 model; "
                         "pass a MobileNet V1 .keras file")
    return model


def _flat_classifier(path: str) -> bool:
    """Whether ``path`` is our classifier in the flat layout of earlier versions (its blocks at
    the top of the weights file, not inside the backbone): asked only once loading failed."""
    import io
    import zipfile

    import h5py

    if keras_archive_class(path) != MobileNetV1ForImageClassification.__name__:
        return False
    try:
        with zipfile.ZipFile(path) as zf:
            data = zf.read("model.weights.h5")  # its size was capped by check_archive_sizes
        with h5py.File(io.BytesIO(data), "r") as f:
            return "layers/conv_block" in f and "layers/mobile_net_v1_model" not in f
    except (KeyError, OSError, ValueError, RuntimeError, zipfile.BadZipFile):
        return False


def check_finite(model, path: str) -> None:
    """Refuse a model whose weights hold NaN or infinity (as the slim and HF readers do):
    it would load silently and then print ``nan%`` for every image."""
    for v in model.weights:
        value = v.numpy()
        problem = tensor_problem(value) if value.dtype.kind in "fV" else None
        if problem:
            raise ValueError(f"{path}: {v.path} {problem}")


def contains_mobilenet(model) -> bool:
    """True when ``model`` is, or has among its layers, one of our MobileNet V1 models."""
    import keras

    classes = (MobileNetV1Model, MobileNetV1ForImageClassification)
    if not isinstance(model, keras.layers.Layer):
        return False
    return any(isinstance(layer, classes) for layer in model._flatten_layers(include_self=True))


def keras_archive_class(path: str) -> str | None:
    """The top-level class name a ``.keras`` archive's config.json declares (None if unreadable)."""
    import json
    import zipfile

    try:
        with zipfile.ZipFile(path) as zf:
            data = json.loads(zf.read("config.json"))
    except (KeyError, zipfile.BadZipFile, EOFError, OSError, ValueError):
        return None
    return data.get("class_name") if isinstance(data, dict) else None


_KERAS_CLASSES = {cls.__name__: cls
                  for cls in (MobileNetV1Model, MobileNetV1ForImageClassification)}


def check_keras_archive(path: str) -> None:
    """Refuse, before Keras builds (allocates) anything, a ``.keras`` archive that does not hold
    one of our models or whose config needs more weights than the archive stores."""
    import json
    import zipfile

    def bad(why: str):
        raise ValueError(f"{path} {why}; pass a .keras file saved by this package")

    try:
        with zipfile.ZipFile(path) as zf:
            stored = zf.getinfo("model.weights.h5").file_size
            data = json.loads(zf.read("config.json"))
    except KeyError:
        bad("lacks config.json or model.weights.h5, so it is no Keras model archive")
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as e:  # ValueError: bad JSON
        first = first_line(e)
        bad(f"is a corrupt .keras archive ({first})")
    if not isinstance(data, dict) or not isinstance(data.get("config"), dict):
        bad("has a config.json that describes no Keras model")
    name = data.get("class_name")
    if name not in _KERAS_CLASSES or data.get("module") != _KERAS_CLASSES[name].__module__:
        bad(f"holds a {data.get('module')}.{name}, not a MobileNet V1 model")
    fields = {k: v for k, v in data["config"].items() if k in _CONFIG_FIELDS}
    try:
        config = MobileNetV1Config(**fields)
    except (TypeError, ValueError) as e:
        bad(f"has an invalid config ({e})")
    # Kernels alone (float32) are a lower bound on what the weights file must store.
    shapes = model_weight_shapes(config, head=name == MobileNetV1ForImageClassification.__name__)
    kernels = sum(math.prod(shape) for path, shape in shapes.items()
                  if path.endswith("/kernel"))
    if 4 * kernels > stored:
        bad(f"declares a {config.variant} model ({config.num_labels} labels) whose weights "
            f"need at least {4 * kernels:,} bytes, but it stores {stored:,}; it is corrupt or "
            "crafted")


def h5_layout(path: str) -> dict[str, tuple[int, ...]]:
    """``{dataset path: shape}`` of an HDF5 file, without reading any data."""
    import h5py

    shapes = {}
    try:
        with h5py.File(path, "r") as f:
            f.visititems(lambda n, o: shapes.__setitem__(n, tuple(o.shape))
                         if isinstance(o, h5py.Dataset) else None)
    except (OSError, RuntimeError) as e:  # h5py: RuntimeError on a corrupt object header
        raise ValueError(f"{path} is not a readable HDF5 weights file ({e}); pass a "
                         ".weights.h5 written by model.save_weights") from None
    return shapes


def weights_h5_source(path: str, overrides: dict) -> WeightSource:
    """Build the model the file was saved from (config inferred from shapes), then load it."""
    shapes = h5_layout(path)
    # Keras names saved layers by class: conv_block, conv_block_1, ..., inside the classifier's
    # backbone (mobile_net_v1_model) or at the top of a backbone's file.
    specs = layer_specs()
    blocks = ["conv_block"] + [f"conv_block_{i}" for i in range(1, len(specs))]
    nested = "layers/mobile_net_v1_model/layers/conv_block/conv/vars/0" in shapes
    root = "layers/mobile_net_v1_model/layers" if nested else "layers"
    kernels = [shapes.get(f"{root}/{b}/conv/vars/0") for b, s in zip(blocks, specs, strict=True)
               if s.kind != "depthwise"]
    head = shapes.get("layers/conv2d/vars/0")
    if any(k is None or len(k) != 4 for k in kernels):
        raise ValueError(f"{path} does not hold MobileNet V1 weights saved by this package; "
                         "pass a .weights.h5 written by model.save_weights")
    try:
        multiplier, min_depth = infer_depth_multiplier([k[3] for k in kernels],
                                                       overrides.get("min_depth"))
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    fields = {"num_channels": kernels[0][2], "depth_multiplier": multiplier,
              "min_depth": min_depth}
    hint = variant_in_path(path)
    if hint:
        fields["image_size"] = hint.resolution
    elif "image_size" not in overrides:
        warnings.warn(f"{path} stores weights only: image size, labels and padding are unknown "
                      "and default to 224, ImageNet and tf_padding=True; name the file "
                      "..._<alpha>_<size>.weights.h5, save a .keras file (which keeps the "
                      "config), or in Python pass image_size=...", stacklevel=3)
    if head is not None:
        fields["num_labels"] = head[3]
    for key in ("output_stride", "hidden_act", "layer_norm_eps"):
        if key in overrides:
            fields[key] = overrides[key]
    config = MobileNetV1Config(**fields)
    folded = f"{root}/conv_block/conv/vars/1" in shapes  # a conv bias: batch norm folded
    cls = MobileNetV1ForImageClassification if head is not None else MobileNetV1Model
    model = cls(config, fold_batchnorm=folded)
    try:
        model.load_weights(path)
    except (ValueError, OSError, KeyError, RuntimeError, TypeError) as e:
        first = first_line(e)
        raise ValueError(f"cannot load {path} into a {config.variant} model ({first}); pass "
                         "the config fields it was saved with") from None
    check_finite(model, path)
    return model_source(model, path)


def keras_source(path: str, use_ema: bool, overrides: dict) -> WeightSource:
    """The ``keras`` form's reader (``formats``): one of our models, or keras.applications'
    MobileNet saved as ``.keras``."""
    from .keras_applications import applications_file_source, is_applications_archive

    if is_applications_archive(path):
        return applications_file_source(path, use_ema, overrides)
    return model_source(load_keras_file(path), path)


def weights_h5_reader(path: str, use_ema: bool, overrides: dict) -> WeightSource:
    """The ``weights_h5`` form's reader (``formats``)."""
    return weights_h5_source(path, overrides)
