"""Keras models: ``MobileNetV1Model`` (backbone) and ``MobileNetV1ForImageClassification``.

The backbone is a functional model built from ``architecture.layer_specs``, its layers named
after the slim scopes (``Conv2d_0`` ... ``Conv2d_13_pointwise``); the classifier contains it
(``model.backbone``, as Hugging Face and keras-hub compose them) and adds slim's head
(``AvgPool_1a``, ``Dropout_1b``, ``Logits``). Weight paths are the slim names either way.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence

import keras
import numpy as np
from keras import ops

from .architecture import LOGITS_NAME, hidden_state_names, layer_specs
from .config import MIN_INPUT_SIZE, MobileNetV1Config
from .errors import InputRangeWarning, did_you_mean
from .labels import default_id2label
from .layers import ConvBlock, SlimAvgPool
from .outputs import decode_predictions

_PACKAGE = "tf_mobilenet_v1"
_CONFIG_FIELDS = frozenset(f.name for f in dataclasses.fields(MobileNetV1Config))
POOL_KERNEL = 7  # slim's AvgPool_1a kernel when global_pool=False


def _resolve_config(config, kwargs) -> MobileNetV1Config:
    """Accept a config object, a dict, or config fields passed as keyword arguments."""
    fields = {k: kwargs.pop(k) for k in list(kwargs) if k in _CONFIG_FIELDS}
    if config is None:
        return MobileNetV1Config(**fields)
    if isinstance(config, dict):
        return MobileNetV1Config.from_dict(config, **fields)
    if not isinstance(config, MobileNetV1Config):
        raise TypeError(f"config must be a MobileNetV1Config or dict, got {type(config).__name__}")
    return config.replace(**fields) if fields else config


def _input_shape(config: MobileNetV1Config, input_shape) -> tuple:
    if input_shape is None:
        # slim's fixed pool needs a static size; global pooling accepts any size.
        size = None if config.global_pool else config.image_size
        input_shape = (size, size, config.num_channels)
    input_shape = tuple(input_shape)
    if len(input_shape) != 3 or input_shape[-1] != config.num_channels:
        raise ValueError(
            f"input_shape must be (height, width, {config.num_channels}) in NHWC order, "
            f"got {input_shape}"
        )
    for s in input_shape[:2]:
        if s is not None and s < MIN_INPUT_SIZE:
            raise ValueError(
                f"input size {input_shape[:2]} is below MobileNet V1's minimum of "
                f"{MIN_INPUT_SIZE}x{MIN_INPUT_SIZE}; resize the images first"
            )
    return input_shape


def _backbone(inputs, config: MobileNetV1Config, fold_batchnorm: bool, dtype=None) -> dict:
    """Apply the 27 layers; return every layer's output by slim name."""
    outputs, x = {}, inputs
    for spec in layer_specs(config):
        x = ConvBlock(
            spec.kind,
            spec.out_channels,
            kernel_size=spec.kernel,
            strides=spec.stride,
            dilation_rate=spec.dilation,
            tf_padding=config.tf_padding,
            activation=config.hidden_act,
            epsilon=config.layer_norm_eps,
            initializer_range=config.initializer_range,
            fold_batchnorm=fold_batchnorm,
            name=spec.name,
            dtype=dtype,
        )(x)
        outputs[spec.name] = x
    return outputs


def _pool(x, config: MobileNetV1Config, dtype=None):
    """slim's ``AvgPool_1a``: global mean, or a 7x7 VALID stride-2 pool shrunk for small maps
    (at any input size, known when the model is built or only at run time)."""
    if config.global_pool:
        return keras.layers.GlobalAveragePooling2D(keepdims=True, name="AvgPool_1a",
                                                   dtype=dtype)(x)
    return SlimAvgPool(POOL_KERNEL, strides=2, name="AvgPool_1a", dtype=dtype)(x)


def _squeeze(x, name, dtype=None):
    """Drop 1x1 spatial dims (slim's ``spatial_squeeze``); larger maps stay 4-D."""
    if x.shape[1] == 1 and x.shape[2] == 1:
        return keras.layers.Reshape((x.shape[-1],), name=name, dtype=dtype)(x)
    return x


# keras.applications' arguments: accepted by the ``MobileNetV1`` factory, not the classes.
_APPLICATIONS_ARGS = frozenset({"include_top", "weights", "pooling", "classes",
                                "classifier_activation", "input_tensor", "alpha"})
_MODEL_KWARGS = frozenset({"trainable", "frozen_layers", "dtype"})


def _check_kwargs(cls_name: str, kwargs: dict, allowed: frozenset) -> None:
    """Unknown keyword arguments are a TypeError naming them (a typo is never ignored)."""
    unknown = sorted(set(kwargs) - allowed - _CONFIG_FIELDS)
    if not unknown:
        return
    name = unknown[0]
    if name in _APPLICATIONS_ARGS:
        hint = ("it is a keras.applications argument: use tf_mobilenet_v1.MobileNetV1(..., "
                f"{name}=...), the keras.applications-style factory")
    else:
        hint = did_you_mean(name, _CONFIG_FIELDS | allowed).removeprefix("; ") or \
            f"config fields are {', '.join(sorted(_CONFIG_FIELDS))}"
    raise TypeError(f"{cls_name}() got an unexpected keyword argument {name!r}; {hint}")


def _slim_layers(model):
    """The model's layers with a classifier's backbone opened up: every layer by slim name."""
    for layer in model.layers:
        yield layer
        if isinstance(layer, MobileNetV1Model):
            yield from layer.layers


def _frozen_paths(model) -> list[str]:
    """Layers (and ConvBlock parts) set to ``trainable=False`` inside a trainable model."""
    frozen = []
    for layer in _slim_layers(model):
        if not layer.trainable:
            frozen.append(layer.name)
        elif isinstance(layer, ConvBlock):
            frozen += [f"{layer.name}/{sub.name}" for sub in layer._layers if not sub.trainable]
    return frozen


class _MobileNetV1Base(keras.Model):
    """Shared config handling, serialization and loading for both models."""

    def _init_common(self, config, input_shape, fold_batchnorm, kwargs, extra=frozenset()):
        _check_kwargs(type(self).__name__, kwargs, _MODEL_KWARGS | {"image_processor"} | extra)
        processor = kwargs.pop("image_processor", None)
        self._frozen_arg = list(kwargs.pop("frozen_layers", None) or [])
        # A dtype policy for every layer ("mixed_float16", "bfloat16", ...); None follows
        # keras.config.dtype_policy(), so keras.mixed_precision.set_global_policy works too.
        self._dtype_arg = kwargs.pop("dtype", None)
        if self._dtype_arg is not None:
            self._dtype_arg = keras.dtype_policies.get(self._dtype_arg)
        # The model's own copy: editing it may rename labels, never change what was built.
        self.config = dataclasses.replace(_resolve_config(config, kwargs))
        self.config._bind(type(self).__name__)
        # The preprocessing that belongs to these weights (saved with the model, see the
        # image_processor property); None: Hugging Face's crop at config.image_size.
        self.image_processor = processor
        self._input_shape_arg = None if input_shape is None else tuple(input_shape)
        self.fold_batchnorm = bool(fold_batchnorm)
        return keras.Input(_input_shape(self.config, input_shape), name="pixel_values")

    @property
    def image_processor(self):
        """The :class:`~tf_mobilenet_v1.preprocessing.MobileNetV1ImageProcessor` that belongs
        to these weights (``model.image_processor(image)`` prepares pixels): the one their
        source carried (an HF ``preprocessor_config.json``, a registry record, a ``.keras``
        saved with one), else Hugging Face's crop at ``config.image_size``. Assign a
        processor, its dict, or ``None`` (the default) to change it; it is saved with the
        model."""
        from .preprocessing import MobileNetV1ImageProcessor

        if self._processor_config is None:
            return MobileNetV1ImageProcessor.for_variant(self.config.image_size)
        return MobileNetV1ImageProcessor.from_dict(dict(self._processor_config))

    @image_processor.setter
    def image_processor(self, value):
        config = value.to_dict() if hasattr(value, "to_dict") else (dict(value) if value else None)
        if config is not None:
            from .preprocessing import MobileNetV1ImageProcessor

            MobileNetV1ImageProcessor.from_dict(config)  # a bad field fails here, not later
        self._processor_config = config

    def _finish_init(self):
        """Per-layer ``trainable`` flags, restored from a save (Keras rebuilds our layers from
        the config, so it would otherwise lose a frozen stem and the optimizer's slots)."""
        if not self.trainable:  # Functional's constructor sets the flag before it tracks layers
            for layer in self.layers:
                layer.trainable = False
        for path in self._frozen_arg:
            name, _, sub = path.partition("/")
            layer = self.get_layer(name)
            if sub:
                layer = next(s for s in layer._layers if s.name == sub)
            layer.trainable = False

    def call(self, inputs, training=None, mask=None, **kwargs):
        if kwargs:  # e.g. output_hidden_states=True: a config field, not a call argument
            raise TypeError(f"{type(self).__name__} got an unexpected call argument "
                            f"{sorted(kwargs)[0]!r}; set config fields when building the model")
        return super().call(inputs, training=training, mask=mask)

    def get_config(self):
        fields = self.config.to_dict()
        if self.config.id2label == default_id2label(self.config.num_labels):
            # ImageNet's (or LABEL_i) names are rebuilt from num_labels: a saved config stays
            # a few hundred bytes instead of 60 KB (which Keras prints whole in its errors).
            fields["id2label"] = fields["label2id"] = None
        return {
            "name": self.name,
            "trainable": self.trainable,
            "frozen_layers": _frozen_paths(self) if self.trainable else [],
            **fields,
            "input_shape": self._input_shape_arg,
            "fold_batchnorm": self.fold_batchnorm,
            "image_processor": None if self._processor_config is None
            else dict(self._processor_config),
            "dtype": None if self._dtype_arg is None
            else keras.dtype_policies.serialize(self._dtype_arg),
            **self._extra_config(),
        }

    def _extra_config(self) -> dict:
        return {}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        fields = {k: config.pop(k) for k in list(config) if k in _CONFIG_FIELDS}
        return cls(MobileNetV1Config.from_dict(fields), **config)

    def predict(self, x, batch_size=None, verbose="auto", steps=None, callbacks=None, **kwargs):
        """``keras.Model.predict``; in-memory arrays skip Keras's per-call tf.data pipeline.

        Measured on 1.0_224 (benchmarks/RESULTS.md): 97 ms -> 20 ms at batch 1, same outputs.
        """
        if isinstance(x, np.ndarray):
            self._check_input(x)
            self._check_pixel_range(x)
            if x.ndim == 4 and not len(x):
                # Keras's own loop fails on zero samples (UnboundLocalError): give an empty
                # result of the right shape and dtype instead.
                one = self.predict_on_batch(np.zeros((1, *x.shape[1:]), np.float32))
                return keras.tree.map_structure(lambda a: np.asarray(a)[:0], one)
        if (steps is None and not callbacks and not kwargs and isinstance(x, np.ndarray)
                and x.ndim == 4 and len(x)):
            size = batch_size or 32
            outs = [self.predict_on_batch(x[i:i + size]) for i in range(0, len(x), size)]
            return keras.tree.map_structure(lambda *a: np.concatenate(a), *outs)
        return super().predict(x, batch_size=batch_size, verbose=verbose, steps=steps,
                               callbacks=callbacks, **kwargs)

    def _check_input(self, x: np.ndarray) -> None:
        """Shape and values checked before TensorFlow sees them: its own errors start with
        "Graph execution error:" and NaN pixels would give NaN scores without a word."""
        channels = self.config.num_channels
        if x.ndim != 4 or x.shape[-1] != channels:
            hint = ""
            if x.ndim == 4 and x.shape[1] == channels:
                hint = "; it looks channels-first (NCHW): pass x.transpose(0, 2, 3, 1)"
            elif x.ndim == 4 and x.shape[-1] == 4 and channels == 3:
                hint = "; drop the alpha channel: x[..., :3]"
            elif x.ndim == 3 and x.shape[-1] == channels:
                hint = "; add the batch axis: x[None]"
            raise ValueError(f"{self.name}.predict expects (batch, height, width, {channels}) "
                             f"images (NHWC), got shape {x.shape}{hint}")
        if x.dtype.kind == "f" and x.size and not np.isfinite(x).all():
            raise ValueError(f"{self.name}.predict got NaN or infinite pixel values; check the "
                             "preprocessing (images must be RGB scaled to [-1, 1])")

    def _check_pixel_range(self, x: np.ndarray) -> None:
        """Warn once per model when ``predict`` gets raw pixels instead of ``[-1, 1]`` values:
        the scores would be confidently wrong (a cheeseburger becomes a jellyfish)."""
        if getattr(self, "_warned_pixel_range", False) or not x.size:
            return
        if x.dtype.kind in "ub" or x.dtype.kind == "i":
            why = f"{x.dtype} pixels"
        elif x.dtype.kind == "f" and (float(x.min()) < -1.01 or float(x.max()) > 1.01):
            why = f"values in [{float(x.min()):.4g}, {float(x.max()):.4g}]"
        else:
            return
        self._warned_pixel_range = True
        warnings.warn(f"{self.name}.predict got {why}, but MobileNet V1 expects RGB scaled to "
                      "[-1, 1] (x / 127.5 - 1); preprocess with MobileNetV1ImageProcessor or "
                      "model.image_processor, or the scores are meaningless",
                      InputRangeWarning, stacklevel=3)

    @classmethod
    def from_pretrained(cls, name_or_path, **config_overrides):
        """Load official weights by registry name, or any checkpoint / HF path (see README)."""
        from .loaders.dispatch import load_pretrained

        return load_pretrained(cls, name_or_path, **config_overrides)

    def folded(self):
        """An inference copy with batch norm folded into the convolutions (bias, no BN).

        Not needed for speed (inference already folds batch norm on the fly, from the live
        weights); it gives a graph without BN variables, e.g. for export, and goes stale if
        the original is trained afterwards.
        """
        if self.fold_batchnorm:
            return self
        return self._rebuilt(True, lambda src, new: new.conv.set_weights(src.folded_weights()))

    def unfolded(self):
        """A copy with batch norm again, for formats that hold it (Hugging Face, slim) when the
        weights came folded (a ``.tflite``): each block's bias becomes the batch norm's beta,
        with gamma 1, mean 0 and variance ``1 - epsilon``, so the batch norm is the identity
        plus that bias and the outputs are unchanged. Its statistics are not real ones: fine
        for inference and conversion, not for training with batch norm in training mode."""
        if not self.fold_batchnorm:
            return self

        def identity_batchnorm(src, new):
            kernel, bias = src.conv.get_weights()
            eps = np.float32(new.bn.epsilon)
            ones = np.ones_like(bias)
            # float32(1 - eps) + eps is exactly 1 for the usual epsilons (1e-3, 1e-4, 1e-5).
            new.conv.set_weights([kernel])
            new.bn.set_weights([ones, bias, np.zeros_like(bias), ones * (np.float32(1) - eps)])

        return self._rebuilt(False, identity_batchnorm)

    def _rebuilt(self, fold: bool, blocks):
        """A copy built with ``fold_batchnorm=fold``: ``blocks(source, copy)`` fills each
        ConvBlock, other layers' weights and the quantization ranges are copied."""
        cfg = self.get_config()
        cfg["fold_batchnorm"] = fold
        copy = type(self).from_config(cfg)
        for layer in _slim_layers(copy):
            src = self.get_layer(layer.name)
            if isinstance(layer, ConvBlock):
                blocks(src, layer)
            elif layer.weights and not isinstance(layer, MobileNetV1Model):
                layer.set_weights(src.get_weights())
        if getattr(self, "quant_ranges", None):
            copy.quant_ranges = dict(self.quant_ranges)
        return copy


@keras.saving.register_keras_serializable(package=_PACKAGE)
class MobileNetV1Model(_MobileNetV1Base):
    """MobileNet V1 backbone (NHWC input, any size >= 32).

    Outputs a dict: ``last_hidden_state`` (B, h, w, C), ``pooler_output`` (B, C) and, with
    ``output_hidden_states``, ``hidden_states``: the 26 depthwise/pointwise outputs in
    Hugging Face's order. With ``feature_layers`` (slim names, e.g. ``Conv2d_11_pointwise``) the
    outputs are exactly those layers by name, for use as a detection or segmentation backbone.
    """

    def __init__(self, config=None, *, input_shape=None, feature_layers: Sequence[str] = None,
                 fold_batchnorm=False, name="mobilenet_v1", **kwargs):
        inputs = self._init_common(config, input_shape, fold_batchnorm, kwargs)
        feats = _backbone(inputs, self.config, self.fold_batchnorm, self._dtype_arg)
        if feature_layers:
            unknown = [n for n in feature_layers if n not in feats]
            if unknown:
                raise ValueError(f"unknown feature layers {unknown}; choose from {list(feats)}")
            outputs = {n: feats[n] for n in feature_layers}
        else:
            last = feats[hidden_state_names()[-1]]
            pooled = _pool(last, self.config, self._dtype_arg)
            if self.config.global_pool:
                pooled = keras.layers.Flatten(name="pooler", dtype=self._dtype_arg)(pooled)
            else:
                pooled = _squeeze(pooled, "pooler", self._dtype_arg)
            outputs = {"last_hidden_state": last, "pooler_output": pooled}
            if self.config.output_hidden_states:
                outputs["hidden_states"] = [feats[n] for n in hidden_state_names()]
        super().__init__(inputs=inputs, outputs=outputs, name=name, **kwargs)
        self.feature_layers = list(feature_layers) if feature_layers else None
        self._finish_init()

    def _extra_config(self):
        return {"feature_layers": self.feature_layers}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class MobileNetV1ForImageClassification(_MobileNetV1Base):
    """``backbone`` (a :class:`MobileNetV1Model`) + ``AvgPool_1a`` + dropout + 1x1 ``Logits``
    convolution.

    The output is always the logits: ``model.predict(x)`` gives (B, num_labels), index 0 =
    background for the official 1001-class weights; ``predict_proba`` gives softmax
    probabilities. With ``global_pool=False`` and inputs larger than the config's size the
    logits are spatial (B, h, w, num_labels); ``spatial_squeeze=False`` keeps
    (B, 1, 1, num_labels). With ``num_labels=0`` the output is the pooled pre-logits features
    (B, C), like slim's ``num_classes=0`` and HF's identity classifier. Features and hidden
    states come from ``model.backbone`` (``output_hidden_states=True`` adds them there), and
    ``get_layer`` finds the backbone's layers by slim name too.
    """

    def __init__(self, config=None, *, input_shape=None, fold_batchnorm=False,
                 name="mobilenet_v1_classifier", **kwargs):
        inputs = self._init_common(config, input_shape, fold_batchnorm, kwargs)
        cfg = self.config
        backbone = MobileNetV1Model(cfg, input_shape=input_shape, fold_batchnorm=fold_batchnorm,
                                    image_processor=self._processor_config,
                                    dtype=self._dtype_arg, name="mobilenet_v1")
        x = _pool(backbone(inputs)["last_hidden_state"], cfg, self._dtype_arg)
        if cfg.num_labels:  # 0: slim's num_classes=0, the pre-logits features are the output
            x = keras.layers.Dropout(cfg.classifier_dropout_prob, name="Dropout_1b",
                                     dtype=self._dtype_arg)(x)
            x = keras.layers.Conv2D(
                cfg.num_labels, 1, name=LOGITS_NAME, dtype=self._dtype_arg,
                kernel_initializer=keras.initializers.RandomNormal(stddev=cfg.initializer_range),
            )(x)
        logits = _squeeze(x, "SpatialSqueeze", self._dtype_arg) if cfg.spatial_squeeze else x
        super().__init__(inputs=inputs, outputs=logits, name=name, **kwargs)
        self._finish_init()

    @property
    def backbone(self) -> MobileNetV1Model:
        """The :class:`MobileNetV1Model` inside (shares its weights with this model)."""
        return next(layer for layer in self.layers if isinstance(layer, MobileNetV1Model))

    def get_layer(self, name=None, index=None):
        """A layer of this model or, by slim name (``Conv2d_0`` ...), of its backbone."""
        try:
            return super().get_layer(name, index)
        except ValueError:
            if name is None:
                raise
            return self.backbone.get_layer(name)

    def _require_labels(self):
        if not self.config.num_labels:
            raise ValueError("this model has num_labels=0: its outputs are pre-logits "
                             "features, not class scores")

    def predict_proba(self, x, **predict_kwargs) -> np.ndarray:
        """Softmax probabilities over ``num_labels`` (same arguments as ``predict``)."""
        self._require_labels()
        return np.asarray(ops.softmax(self.predict(x, **predict_kwargs), axis=-1))

    def decode(self, logits, top_k: int = 5) -> list[list[tuple[int, str, float]]]:
        """Top-k ``(index, label, probability)`` for each row of ``logits``."""
        self._require_labels()
        return decode_predictions(logits, top_k, self.config.id2label)
