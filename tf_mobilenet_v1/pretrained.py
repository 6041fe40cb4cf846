"""``from_pretrained`` / ``load_any``: one entry point for every weights source.

Dispatch: an official registry name (downloaded once, then read as a tarball); ``.keras``;
``.weights.h5``; a Hugging Face directory, ``.safetensors`` or ``.bin`` (``converters.hf``);
anything else is a TF-slim source (checkpoint prefix or directory, release ``.tgz``, frozen
``.pb``). Every source becomes a config plus ``{keras weight path: array}``, and one assembly step
builds the requested class around them: config overrides that keep weight shapes
(``output_stride``, ``global_pool``, ``tf_padding``, ``output_hidden_states``, ``image_size``)
build a variant on the same weights, a different ``num_labels`` starts a fresh head, a backbone
drops a classification head, and any shape conflict is an error naming the tensor.
"""

from __future__ import annotations

import dataclasses
import os
import warnings

import numpy as np

from .architecture import LOGITS_NAME
from .config import MobileNetV1Config
from .errors import first_line
from .models import MobileNetV1ForImageClassification, MobileNetV1Model
from .slim_checkpoint import keras_weight_shapes

_CONFIG_FIELDS = frozenset(f.name for f in dataclasses.fields(MobileNetV1Config))
_MODEL_KWARGS = frozenset({"input_shape", "feature_layers", "fuse_batchnorm", "name"})
_SHAPE_FIELDS = ("depth_multiplier", "min_depth", "num_channels", "num_labels")
_HEAD = (f"{LOGITS_NAME}/kernel", f"{LOGITS_NAME}/bias")
FORMS = ("a registry name (e.g. mobilenet_v1_1.0_224), a slim checkpoint prefix or directory, "
         "a release .tgz, a frozen .pb, a .keras or .weights.h5 file, or a Hugging Face "
         "directory, .safetensors or .bin")


class PretrainedWarning(UserWarning):
    """A pretrained load that deliberately leaves out (or re-initializes) the classifier head."""


@dataclasses.dataclass
class _Source:
    config: MobileNetV1Config
    weights: dict[str, np.ndarray]  # keras weight path -> array
    description: str
    names: dict[str, str] = dataclasses.field(default_factory=dict)  # path -> source name
    fused: bool = False
    quant_ranges: dict = dataclasses.field(default_factory=dict)

    @property
    def has_head(self) -> bool:
        return _HEAD[0] in self.weights


# ----- sources -----
def _slim_source(path: str, use_ema: bool) -> _Source:
    from .slim_checkpoint import read_slim, slim_name_map

    sw = read_slim(path, use_ema=use_ema)
    inverse = {v: k for k, v in slim_name_map(head=sw.has_head).items()}
    weights = sw.keras_weights()
    return _Source(sw.infer_config(), weights, sw.source,
                   names={p: inverse[p] for p in weights}, quant_ranges=dict(sw.quant_ranges))


def _model_source(model, description: str) -> _Source:
    if not isinstance(model, (MobileNetV1Model, MobileNetV1ForImageClassification)):
        raise ValueError(f"{description} holds a {type(model).__name__}, not a MobileNet V1 "
                         "model; pass a MobileNet V1 .keras file")
    weights = {v.path: np.asarray(v.numpy()) for v in model.weights}
    return _Source(model.config, weights, description, fused=model.fuse_batchnorm,
                   quant_ranges=dict(getattr(model, "quant_ranges", {}) or {}))


def _load_keras_file(path: str):
    import zipfile

    import keras

    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path} is not a .keras archive (not a zip file: truncated, corrupt or "
                         "another format); pass a .keras file saved by this package")
    _check_keras_archive(path)
    try:
        # safe_mode (the default, spelled out): a Lambda layer's pickled bytecode is refused.
        model = keras.saving.load_model(path, safe_mode=True)
    except (ValueError, OSError, TypeError, KeyError, RuntimeError, EOFError,
            zipfile.BadZipFile) as e:
        first = first_line(e)
        raise ValueError(f"cannot load Keras file {path} ({first}); pass a .keras file saved "
                         "by this package") from None
    if not isinstance(model, (MobileNetV1Model, MobileNetV1ForImageClassification)):
        raise ValueError(f"{path} holds a {type(model).__name__}, not a MobileNet V1 model; "
                         "pass a MobileNet V1 .keras file")
    return model


_KERAS_CLASSES = {cls.__name__: cls
                  for cls in (MobileNetV1Model, MobileNetV1ForImageClassification)}


def _check_keras_archive(path: str) -> None:
    """Refuse, before Keras builds (allocates) anything, a ``.keras`` archive that does not hold
    one of our models or whose config needs more weights than the archive stores."""
    import json
    import zipfile

    from .architecture import layer_specs

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
    specs = layer_specs(config.depth_multiplier, config.min_depth, config.output_stride,
                        config.num_channels)
    # Kernels alone (float32) are a lower bound on what the weights file must store.
    kernels = sum(s.kernel * s.kernel * s.in_channels * (1 if s.kind == "depthwise"
                                                         else s.out_channels) for s in specs)
    if name == MobileNetV1ForImageClassification.__name__:
        kernels += specs[-1].out_channels * config.num_labels
    if 4 * kernels > stored:
        bad(f"declares a {config.variant} model ({config.num_labels} labels) whose weights "
            f"need at least {4 * kernels:,} bytes, but it stores {stored:,}; it is corrupt or "
            "crafted")


def _h5_layout(path: str) -> dict[str, tuple[int, ...]]:
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


def _weights_h5_source(path: str, overrides: dict) -> _Source:
    """Build the model the file was saved from (config inferred from shapes), then load it."""
    from .architecture import layer_specs
    from .slim_checkpoint import _infer_depth_multiplier

    shapes = _h5_layout(path)
    # Keras names nested layers of a functional model by class: conv_block, conv_block_1, ...
    stem = shapes.get("layers/conv_block/conv/vars/0")
    last = shapes.get(f"layers/conv_block_{len(layer_specs()) - 1}/conv/vars/0")
    head = shapes.get("layers/conv2d/vars/0")
    if stem is None or last is None or len(stem) != 4 or len(last) != 4:
        raise ValueError(f"{path} does not hold MobileNet V1 weights saved by this package; "
                         "pass a .weights.h5 written by model.save_weights")
    from .slim_checkpoint import variant_from_path

    fields = {"num_channels": stem[2],
              "depth_multiplier": _infer_depth_multiplier(last[3], overrides.get("min_depth", 8))}
    hint = variant_from_path(path)
    if hint:
        fields["image_size"] = hint[1]
    elif "image_size" not in overrides:
        warnings.warn(f"{path} stores weights only: image size, labels and padding are unknown "
                      "and default to 224, ImageNet and tf_padding=True; pass image_size=... "
                      "(or save a .keras file, which keeps the config)", stacklevel=3)
    if head is not None:
        fields["num_labels"] = head[3]
    for key in ("min_depth", "output_stride", "hidden_act", "layer_norm_eps"):
        if key in overrides:
            fields[key] = overrides[key]
    config = MobileNetV1Config(**fields)
    fused = "layers/conv_block/conv/vars/1" in shapes
    cls = MobileNetV1ForImageClassification if head is not None else MobileNetV1Model
    model = cls(config, fuse_batchnorm=fused)
    try:
        model.load_weights(path)
    except (ValueError, OSError, KeyError, RuntimeError, TypeError) as e:
        first = first_line(e)
        raise ValueError(f"cannot load {path} into a {config.variant} model ({first}); pass "
                         "the config fields it was saved with") from None
    return _model_source(model, path)


def _is_hf(path: str) -> bool:
    from converters.hf import is_hf_source

    return is_hf_source(path)


def _load_hf(path: str, cls, config_overrides: dict, model_kwargs: dict):
    from converters.hf import load_hf

    model = load_hf(path, cls, **config_overrides)
    if model_kwargs:
        model = _assemble(cls, _model_source(model, path), {}, model_kwargs)
    return model


def _resolve(name_or_path) -> tuple[str, str | None]:
    """``(local path, registry name or None)``; registry names are downloaded."""
    from . import registry

    path = os.fspath(name_or_path)
    if os.path.exists(path) or os.path.exists(path + ".index"):
        return path, None
    key = registry.canonical_name(path)
    if key is not None:
        return registry.download(key), key
    if os.sep not in path and path.lower().startswith("mobilenet_v1"):
        registry.get(path)  # raises with the closest registry names
    raise FileNotFoundError(f"{path} does not exist; pass {FORMS}")


def _check_ema(path: str, use_ema: bool) -> None:
    if use_ema and path.endswith((".keras", ".weights.h5")):
        raise ValueError("use_ema applies to TF-slim checkpoints only; Keras files hold one set "
                         "of weights")


def _read(path: str, registry_name: str | None, use_ema: bool, overrides: dict) -> _Source:
    """Read a local source; a registry download that fails to load names its cached file."""
    try:
        if path.endswith(".keras") and os.path.isfile(path):
            return _model_source(_load_keras_file(path), path)
        if path.endswith(".weights.h5") and os.path.isfile(path):
            return _weights_h5_source(path, overrides)
        return _slim_source(path, use_ema)
    except ValueError as e:
        if registry_name is None:
            raise
        raise ValueError(f"the cached download {path} of {registry_name} could not be loaded "
                         f"({e}); delete it and try again") from None


# ----- assembly -----
def _check_shapes(src: _Source, config: MobileNetV1Config, head: bool, changed: dict) -> None:
    expected = keras_weight_shapes(config, head=head, fused=src.fused)
    for path, shape in expected.items():
        got = src.weights.get(path)
        if got is not None and tuple(got.shape) != shape:
            name = src.names.get(path, path)
            why = ", ".join(f"{k}={v!r}" for k, v in changed.items() if k in _SHAPE_FIELDS)
            raise ValueError(
                f"{name} has shape {tuple(got.shape)} in {src.description} but the requested "
                f"config{' (' + why + ')' if why else ''} needs {shape}; drop the conflicting "
                "override to use the checkpoint's own config"
            )


def _assemble(cls, src: _Source, config_overrides: dict, model_kwargs: dict):
    """Build ``cls`` around ``src``'s weights, applying overrides; strict about everything else."""
    config = src.config.replace(**config_overrides) if config_overrides else src.config
    want_head = issubclass(cls, MobileNetV1ForImageClassification)
    fresh_head = False
    if want_head and not src.has_head:
        if "num_labels" not in config_overrides:
            raise ValueError(
                f"{src.description} has no classifier head (Logits); load it with "
                "MobileNetV1Model.from_pretrained, or pass num_labels=N to start a new head")
        fresh_head = True
    elif want_head and config.num_labels != src.config.num_labels:
        fresh_head = True
    # A fresh head may differ in shape; everything else must match the source exactly.
    _check_shapes(src, config, want_head and not fresh_head, config_overrides)
    kwargs = dict(model_kwargs)
    fuse = kwargs.pop("fuse_batchnorm", None)
    if src.fused and fuse is False:
        raise ValueError(f"{src.description} holds batch-norm-folded weights, which cannot be "
                         "unfolded; load it with fuse_batchnorm=True or from the unfolded source")
    model = cls(config, fuse_batchnorm=src.fused, **kwargs)
    variables = {v.path: v for v in model.weights}
    needed = [p for p in variables if not (fresh_head and p in _HEAD)]
    missing = [p for p in needed if p not in src.weights]
    if missing:
        raise ValueError(f"{src.description} lacks {len(missing)} weight(s) the model needs, "
                         f"e.g. {missing[0]}")
    for path in needed:
        variables[path].assign(src.weights[path])
    unused = [p for p in src.weights if p not in variables]
    head_unused = [p for p in unused if p in _HEAD]
    if fresh_head and src.has_head:
        warnings.warn(
            f"{src.description} has {src.config.num_labels} classes; the new {config.num_labels}"
            "-class Logits head starts from random weights (backbone loaded)",
            PretrainedWarning, stacklevel=4)
    elif fresh_head:
        warnings.warn(f"{src.description} has no classifier; the new {config.num_labels}-class "
                      "Logits head starts from random weights", PretrainedWarning, stacklevel=4)
    elif head_unused:
        warnings.warn(f"loaded the backbone of {src.description}; its classifier head (Logits) "
                      "is left out on purpose", PretrainedWarning, stacklevel=4)
    other = [p for p in unused if p not in _HEAD]
    if other and not kwargs.get("feature_layers"):
        raise ValueError(f"{src.description} has {len(other)} weight(s) the model does not "
                         f"use, e.g. {other[0]}")
    if src.quant_ranges:
        model.quant_ranges = dict(src.quant_ranges)
    if fuse and not src.fused:
        model = model.fused()
    return model


def _split(overrides: dict) -> tuple[dict, dict]:
    """Config fields vs model arguments; a ``config=`` object contributes all its fields."""
    config, model = {}, {}
    given = overrides.pop("config", None)
    if given is not None:
        if isinstance(given, MobileNetV1Config):
            given = given.to_dict()
        if not isinstance(given, dict):
            raise TypeError(f"config must be a MobileNetV1Config or dict, got "
                            f"{type(given).__name__}")
        config.update({k: v for k, v in given.items() if k in _CONFIG_FIELDS})
    for k, v in overrides.items():
        if k in _CONFIG_FIELDS:
            config[k] = v
        elif k in _MODEL_KWARGS:
            model[k] = v
        else:
            raise TypeError(f"from_pretrained got an unknown argument {k!r}; pass config fields "
                            f"or {', '.join(sorted(_MODEL_KWARGS))}")
    return config, model


def load_pretrained(cls, name_or_path, *, use_ema: bool = False, **config_overrides):
    """Load ``cls`` (backbone or classifier) from a registry name or any supported path.

    ``config_overrides`` are config fields (a variant around the same weights), a whole
    ``config=`` (its fields must agree with the weights' shapes), or the model arguments
    ``input_shape``, ``feature_layers``, ``fuse_batchnorm`` and ``name``.
    """
    if cls is None:
        cls = MobileNetV1ForImageClassification
    config_overrides, model_kwargs = _split(config_overrides)
    path, registry_name = _resolve(name_or_path)
    if _is_hf(path):
        if use_ema:
            raise ValueError("use_ema applies to TF-slim checkpoints only; Hugging Face weights "
                             "have no moving averages")
        return _load_hf(path, cls, config_overrides, model_kwargs)
    _check_ema(path, use_ema)
    if path.endswith(".keras") and not config_overrides and not model_kwargs:
        model = _load_keras_file(path)
        if type(model) is cls:
            return model
        src = _model_source(model, path)
    else:
        src = _read(path, registry_name, use_ema, config_overrides)
    return _assemble(cls, src, config_overrides, model_kwargs)


def load_any(src, use_ema: bool = False):
    """Load any supported source as a classifier when it has a head, else as a backbone."""
    path, registry_name = _resolve(src)
    if _is_hf(path):
        from converters.hf import has_classifier

        cls = MobileNetV1ForImageClassification if has_classifier(path) else MobileNetV1Model
        return load_pretrained(cls, path, use_ema=use_ema)
    _check_ema(path, use_ema)
    if path.endswith(".keras") and os.path.isfile(path):
        return _load_keras_file(path)
    source = _read(path, registry_name, use_ema, {})
    cls = MobileNetV1ForImageClassification if source.has_head else MobileNetV1Model
    return _assemble(cls, source, {}, {})
