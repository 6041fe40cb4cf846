"""``from_pretrained`` / ``load_any``: one entry point for every weights source.

An official registry name is downloaded once (or found bundled); a local path's form is
recognised by ``formats``, whose record names its reader. Every source becomes a config plus
``{keras weight path: array}`` (a ``WeightSource``), and one assembly step
builds the requested class around them: config overrides that keep weight shapes
(``output_stride``, ``global_pool``, ``tf_padding``, ``output_hidden_states``, ``image_size``)
build a variant on the same weights, a different ``num_labels`` starts a fresh head, a backbone
drops a classification head, and any shape conflict is an error naming the tensor.
"""

from __future__ import annotations

import dataclasses
import warnings

from .. import formats, registry
from ..architecture import model_weight_shapes
from ..config import MobileNetV1Config
from ..errors import PretrainedWarning, did_you_mean
from ..models import MobileNetV1ForImageClassification, MobileNetV1Model
from .source import HEAD, WeightSource, locate, model_source

__all__ = ["PretrainedWarning", "load_any", "load_pretrained"]

_CONFIG_FIELDS = frozenset(f.name for f in dataclasses.fields(MobileNetV1Config))
_MODEL_KWARGS = frozenset({"input_shape", "feature_layers", "fold_batchnorm", "name", "dtype",
                           "trainable"})
_SHAPE_FIELDS = ("depth_multiplier", "min_depth", "num_channels", "num_labels")


# ----- sources -----
def _resolve(name_or_path) -> tuple[str, str | None]:
    """``(local path, registry name or None)``; registry names are downloaded."""
    path, key = locate(name_or_path)
    return (registry.download(key), key) if key is not None else (path, None)


def _read(form, path: str, registry_name: str | None, use_ema: bool,
          overrides: dict) -> WeightSource:
    """Read a local source through its form's reader; a registry download that fails to load
    names its cached file, and one that loads carries its record's processor."""
    try:
        src = form.read(path, use_ema, overrides)
    except ValueError as e:
        if registry_name is None:
            raise
        raise ValueError(f"the cached download {path} of {registry_name} could not be loaded "
                         f"({e}); delete it and try again") from None
    if registry_name is not None and src.image_processor is None:
        src.image_processor = registry.get(registry_name).processor
    return src


def _as_saved(form, path: str, cls, use_ema: bool):
    """A ``.keras`` file loaded as it was saved (its own config, state and any layers of the
    user's around ours), when that is ``cls`` (``None``: whatever it is); one of another class
    comes back as its ``WeightSource``, and other forms as ``None``."""
    from .keras_applications import is_applications_archive

    if form.name != "keras" or is_applications_archive(path):
        return None
    from .keras_files import load_keras_file

    form.check_ema(path, use_ema)
    model = load_keras_file(path)
    return model if cls is None or type(model) is cls else model_source(model, path)


def _is_model(obj) -> bool:
    return hasattr(obj, "layers") and hasattr(obj, "weights") and not isinstance(obj, str)


def _object_source(model) -> WeightSource:
    """A live Keras model: one of ours, or keras.applications' MobileNet."""
    from .keras_applications import applications_source, is_applications_mobilenet

    name = f"the {type(model).__name__} {getattr(model, 'name', '')}".rstrip()
    if is_applications_mobilenet(model) or not isinstance(
            model, (MobileNetV1Model, MobileNetV1ForImageClassification)):
        return applications_source(model, name)  # says what a foreign model lacks
    return model_source(model, name)


# ----- assembly -----
def _check_shapes(src: WeightSource, config: MobileNetV1Config, head: bool, changed: dict) -> None:
    expected = model_weight_shapes(config, head=head, folded=src.folded)
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


def assemble(cls, src: WeightSource, config_overrides: dict, model_kwargs: dict):
    """Build ``cls`` around ``src``'s weights, applying overrides; strict about everything else."""
    config = src.config.replace(**config_overrides) if config_overrides else src.config
    want_head = issubclass(cls, MobileNetV1ForImageClassification)
    fresh_head = False
    if want_head and not src.has_head:
        if "num_labels" not in config_overrides:
            raise ValueError(
                f"{src.description} has no classifier head (Logits); load it with "
                "MobileNetV1Model.from_pretrained, or pass num_labels=N to start a new head")
        fresh_head = bool(config.num_labels)
    elif want_head and config.num_labels not in (0, src.config.num_labels):
        fresh_head = True  # num_labels=0 has no head at all: nothing to start afresh
    # A fresh head may differ in shape; everything else must match the source exactly.
    _check_shapes(src, config, want_head and not fresh_head, config_overrides)
    kwargs = dict(model_kwargs)
    fuse = kwargs.pop("fold_batchnorm", None)
    if src.folded and fuse is False:
        raise ValueError(f"{src.description} holds batch-norm-folded weights, which cannot be "
                         "unfolded; load it with fold_batchnorm=True or from the unfolded source")
    processor = src.image_processor if config.image_size == src.config.image_size else None
    model = cls(config, fold_batchnorm=src.folded, image_processor=processor, **kwargs)
    variables = {v.path: v for v in model.weights}
    needed = [p for p in variables if not (fresh_head and p in HEAD)]
    missing = [p for p in needed if p not in src.weights]
    if missing:
        raise ValueError(f"{src.description} lacks {len(missing)} weight(s) the model needs, "
                         f"e.g. {missing[0]}")
    for path in needed:
        variables[path].assign(src.weights[path])
    unused = [p for p in src.weights if p not in variables]
    head_unused = [p for p in unused if p in HEAD]
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
    other = [p for p in unused if p not in HEAD]
    if other and not kwargs.get("feature_layers"):
        raise ValueError(f"{src.description} has {len(other)} weight(s) the model does not "
                         f"use, e.g. {other[0]}")
    if src.quant_ranges:
        model.quant_ranges = dict(src.quant_ranges)
    if fuse and not src.folded:
        model = model.folded()
    return model


def split_overrides(overrides: dict) -> tuple[dict, dict]:
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
            hint = did_you_mean(k, _CONFIG_FIELDS | _MODEL_KWARGS) or \
                f"; pass config fields or {', '.join(sorted(_MODEL_KWARGS))}"
            raise TypeError(f"from_pretrained got an unknown argument {k!r}{hint}")
    return config, model


def load_pretrained(cls, name_or_path, *, use_ema: bool = False, **config_overrides):
    """Load ``cls`` (backbone or classifier) from a registry name or any supported path.

    ``config_overrides`` are config fields (a variant around the same weights), a whole
    ``config=`` (its fields must agree with the weights' shapes), or the model arguments
    ``input_shape``, ``feature_layers``, ``fold_batchnorm`` and ``name``.
    """
    if cls is None:
        cls = MobileNetV1ForImageClassification
    config_overrides, model_kwargs = split_overrides(config_overrides)
    if _is_model(name_or_path):
        return assemble(cls, _object_source(name_or_path), config_overrides, model_kwargs)
    path, registry_name = _resolve(name_or_path)
    form = formats.recognise(path)
    src = None
    if not config_overrides and not model_kwargs:
        saved = _as_saved(form, path, cls, use_ema)
        if saved is not None and not isinstance(saved, WeightSource):
            return saved
        src = saved
    if src is None:
        src = _read(form, path, registry_name, use_ema, config_overrides)
    return assemble(cls, src, config_overrides, model_kwargs)


def load_any(src, use_ema: bool = False):
    """Load any supported source as a classifier when it has a head, else as a backbone."""
    if _is_model(src):
        source = _object_source(src)
        cls = MobileNetV1ForImageClassification if source.has_head else MobileNetV1Model
        return assemble(cls, source, {}, {})
    path, registry_name = _resolve(src)
    form = formats.recognise(path)
    saved = _as_saved(form, path, None, use_ema)
    if saved is not None:
        return saved
    source = _read(form, path, registry_name, use_ema, {})
    cls = MobileNetV1ForImageClassification if source.has_head else MobileNetV1Model
    return assemble(cls, source, {}, {})
