"""``MobileNetV1(...)``: the ``keras.applications.MobileNet`` calling convention on our models.

The same arguments as keras.applications (``include_top``, ``weights``, ``pooling``,
``classes``, ``classifier_activation``, ``input_shape``, ``input_tensor``, ``alpha``), with
our exact layers underneath: the official weights have 1001 classes (index 0 = background).
"""

from __future__ import annotations

import warnings

import keras

from .errors import PretrainedWarning
from .models import MobileNetV1ForImageClassification, MobileNetV1Model
from .variants import variant_name

POOLINGS = (None, "avg", "max")
OFFICIAL_SIZES = (128, 160, 192, 224)
OFFICIAL_CLASSES = 1001


def _image_size(input_shape) -> int:
    """The official weights' size closest to ``input_shape`` (any size >= 32 runs)."""
    if input_shape is None or input_shape[0] is None:
        return 224
    size = int(input_shape[0])
    return size if size in OFFICIAL_SIZES else 224


def _weights_name(weights, alpha: float, input_shape) -> str | None:
    if weights is None:
        return None
    if weights == "imagenet":
        return variant_name(float(alpha), _image_size(input_shape))
    return str(weights)


def MobileNetV1(input_shape=None, alpha: float = 1.0, include_top: bool = True,  # noqa: N802
                weights: str | None = "imagenet", input_tensor=None, pooling: str | None = None,
                classes: int = OFFICIAL_CLASSES, classifier_activation="softmax",
                name: str | None = None, **config) -> keras.Model:
    """A MobileNet V1 built like ``keras.applications.MobileNet``.

    ``weights``: ``"imagenet"`` (the official checkpoint of ``alpha`` at the input size, 224
    unless the input is 128, 160 or 192 px), a registry name, any weights path, or ``None``
    (random). ``include_top=False`` gives the backbone: ``pooling`` ``None`` (the 4-D last
    feature map), ``"avg"`` or ``"max"`` (B, C). ``classifier_activation`` is applied in the
    graph (``None`` returns logits). Other keyword arguments are config fields (e.g.
    ``output_stride``, ``global_pool``). Inputs are NHWC in [-1, 1]
    (``MobileNetV1Preprocessing`` or ``MobileNetV1ImageProcessor`` make them).
    """
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    source = _weights_name(weights, alpha, input_shape)
    if include_top and source is not None and classes != OFFICIAL_CLASSES:
        raise ValueError(f"pretrained weights have {OFFICIAL_CLASSES} classes (index 0 = "
                         f"background); for classes={classes} use include_top=False and add "
                         "your own head, or weights=None")
    if input_tensor is not None and input_shape is None:
        input_shape = tuple(input_tensor.shape[1:])
    cls = MobileNetV1ForImageClassification if include_top else MobileNetV1Model
    if include_top:
        config.setdefault("num_labels", classes)
    if source is None:
        inner = cls(depth_multiplier=float(alpha), input_shape=input_shape,
                    image_size=_image_size(input_shape), **config)
    else:
        with warnings.catch_warnings():
            if not include_top:  # asked for no top: leaving the checkpoint's head out is the point
                warnings.simplefilter("ignore", PretrainedWarning)
            inner = cls.from_pretrained(source, **config)
        if input_shape is not None and tuple(input_shape) != tuple(inner.input_shape[1:]):
            rebuilt = type(inner)(inner.config, input_shape=input_shape,
                                  image_processor=inner.image_processor)
            rebuilt.set_weights(inner.get_weights())
            inner = rebuilt
        if float(alpha) != inner.config.depth_multiplier and weights == "imagenet":
            raise ValueError(f"alpha={alpha} does not match the weights' depth multiplier "
                             f"{inner.config.depth_multiplier}")
    if input_tensor is None and pooling is None and (not include_top
                                                      or classifier_activation is None):
        return inner  # nothing to add: our model as it is
    if input_tensor is None:
        inputs = keras.Input(inner.input_shape[1:], name="pixel_values")
    elif keras.backend.is_keras_tensor(input_tensor):
        inputs = input_tensor
    else:
        inputs = keras.Input(tensor=input_tensor, shape=input_shape, name="pixel_values")
    out = inner(inputs)
    if include_top:
        x = out["logits"] if isinstance(out, dict) else out
        if classifier_activation is not None:
            x = keras.layers.Activation(classifier_activation, name="predictions")(x)
    else:
        x = out["last_hidden_state"]
        if pooling == "avg":
            x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
        elif pooling == "max":
            x = keras.layers.GlobalMaxPooling2D(name="max_pool")(x)
    sources = keras.utils.get_source_inputs(inputs) if input_tensor is not None else inputs
    return keras.Model(sources, x, name=name or f"{inner.name}_app")
