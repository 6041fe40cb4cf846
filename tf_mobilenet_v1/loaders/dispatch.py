"""``from_pretrained`` / ``load_any``: one entry point for every weights source.

Dispatch: an official registry name (downloaded once, then read as a tarball); ``.keras``;
``.weights.h5``; a Hugging Face directory, ``.safetensors`` or ``.bin`` (``loaders.hf``);
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

from .. import registry
from ..architecture import model_weight_shapes
from ..config import MobileNetV1Config
from ..errors import PretrainedWarning
from ..models import MobileNetV1ForImageClassification, MobileNetV1Model
from .keras_files import load_keras_file, weights_h5_source
from .source import FORMS, HEAD, WeightSource, locate, model_source

__all__ = ["FORMS", "PretrainedWarning", "load_any", "load_pretrained"]

_CONFIG_FIELDS = frozenset(f.name for f in dataclasses.fields(MobileNetV1Config))
_MODEL_KWARGS = frozenset({"input_shape", "feature_layers", "fold_batchnorm", "name", "dtype",
                           "trainable"})
_SHAPE_FIELDS = ("depth_multiplier", "min_depth", "num_channels", "num_labels")


# ----- sources -----
def _slim_source(path: str, use_ema: bool) -> WeightSource:
    from .slim import read_slim, slim_name_map

    sw = read_slim(path, use_ema=use_ema)
    inverse = {v: k for k, v in slim_name_map(head=sw.has_head).items()}
    weights = sw.keras_weights()
    return WeightSource(sw.infer_config(), weights, sw.source,
                        names={p: inverse[p] for p in weights},
                        quant_ranges=dict(sw.quant_ranges))


def _is_hf(path: str) -> bool:
    from .hf import is_hf_source

    return is_hf_source(path)


# Overrides that only help read a config-less state dict (its shapes fix the rest).
_HF_INFERENCE_HINTS = ("depth_multiplier", "min_depth", "num_channels")


def _load_hf(path: str, cls, config_overrides: dict, model_kwargs: dict):
    """An HF source as it is (its own config, head or not), then, when asked for anything
    else, the one assembly step: its head policy and override checks, as for every form."""
    from .hf import has_classifier, load_hf

    if not config_overrides and not model_kwargs:
        return load_hf(path, cls)
    own = MobileNetV1ForImageClassification if has_classifier(path) else MobileNetV1Model
    hints = {k: v for k, v in config_overrides.items() if k in _HF_INFERENCE_HINTS}
    return _assemble(cls, model_source(load_hf(path, own, **hints), path), config_overrides,
                     model_kwargs)


def _resolve(name_or_path) -> tuple[str, str | None]:
    """``(local path, registry name or None)``; registry names are downloaded."""
    path, key = locate(name_or_path)
    return (registry.download(key), key) if key is not None else (path, None)


def _check_ema(path: str, use_ema: bool) -> None:
    if use_ema and path.endswith((".keras", ".weights.h5")):
        raise ValueError("use_ema applies to TF-slim checkpoints only; Keras files hold one set "
                         "of weights")


def _read(path: str, registry_name: str | None, use_ema: bool, overrides: dict) -> WeightSource:
    """Read a local source; a registry download that fails to load names its cached file."""
    try:
        if path.endswith(".keras") and os.path.isfile(path):
            return model_source(load_keras_file(path), path)
        if path.endswith(".weights.h5") and os.path.isfile(path):
            return weights_h5_source(path, overrides)
        return _slim_source(path, use_ema)
    except ValueError as e:
        if registry_name is None:
            raise
        raise ValueError(f"the cached download {path} of {registry_name} could not be loaded "
                         f"({e}); delete it and try again") from None


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


def _assemble(cls, src: WeightSource, config_overrides: dict, model_kwargs: dict):
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
    ``input_shape``, ``feature_layers``, ``fold_batchnorm`` and ``name``.
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
        model = load_keras_file(path)
        if type(model) is cls:
            return model
        src = model_source(model, path)
    else:
        src = _read(path, registry_name, use_ema, config_overrides)
    return _assemble(cls, src, config_overrides, model_kwargs)


def load_any(src, use_ema: bool = False):
    """Load any supported source as a classifier when it has a head, else as a backbone."""
    path, registry_name = _resolve(src)
    if _is_hf(path):
        from .hf import has_classifier

        cls = MobileNetV1ForImageClassification if has_classifier(path) else MobileNetV1Model
        return load_pretrained(cls, path, use_ema=use_ema)
    _check_ema(path, use_ema)
    if path.endswith(".keras") and os.path.isfile(path):
        return load_keras_file(path)
    source = _read(path, registry_name, use_ema, {})
    cls = MobileNetV1ForImageClassification if source.has_head else MobileNetV1Model
    return _assemble(cls, source, {}, {})
