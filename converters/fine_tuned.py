"""A user's Keras classifier built around our backbone, seen the way the exporters need it.

keras.applications-style fine-tunes (``MobileNetV1(include_top=False)`` + the user's head) have
no ``config``; the exporters need one (input size, classes, labels) and ``folded()``.
"""

from __future__ import annotations

import warnings

import keras

from tf_mobilenet_v1.models import MobileNetV1ForImageClassification, MobileNetV1Model


def _inner_mobilenet(model):
    found = [layer for layer in model._flatten_layers(include_self=False)
             if isinstance(layer, (MobileNetV1Model, MobileNetV1ForImageClassification))]
    # A classifier of ours holds its backbone: that pair is one model of ours, not two.
    inner = {id(layer.backbone) for layer in found
             if isinstance(layer, MobileNetV1ForImageClassification)}
    found = [layer for layer in found if id(layer) not in inner]
    return found[0] if len(found) == 1 else None


class FineTuned(keras.Model):
    """The user's model unchanged (same layers, same weights), with ``config`` and
    ``folded()``; labels default to ``LABEL_i`` unless the model has an ``id2label``."""

    def __init__(self, user_model, inner, config):
        super().__init__(inputs=user_model.inputs[0], outputs=user_model.outputs[0],
                         name=user_model.name)
        self.user_model, self.inner, self.config = user_model, inner, config
        self.image_processor = inner.image_processor

    def folded(self):
        """Batch norm folded into our backbone's convolutions; the user's own layers shared."""
        clone = keras.models.clone_model(
            self.user_model,
            clone_function=lambda layer: layer.folded() if layer is self.inner else layer)
        return FineTuned(clone, _inner_mobilenet(clone), self.config)


def fine_tuned(model) -> FineTuned | None:
    """``model`` as a :class:`FineTuned`, or None when it holds none of our models.

    It must map one (B, H, W, C) image input to one (B, classes) output.
    """
    if isinstance(model, FineTuned):
        return model
    if not isinstance(model, keras.Model):
        return None
    inner = _inner_mobilenet(model)
    if inner is None:
        return None
    channels = inner.config.num_channels
    shapes = [tuple(t.shape) for t in model.inputs], [tuple(t.shape) for t in model.outputs]
    if len(shapes[0]) != 1 or len(shapes[1]) != 1:
        raise ValueError(f"export needs a model with one input and one output; this one has "
                         f"{len(shapes[0])} and {len(shapes[1])}")
    (inp,), (out,) = shapes
    if len(inp) != 4 or inp[-1] != channels or len(out) != 2 or out[1] is None:
        raise ValueError(f"export needs one (batch, height, width, {channels}) input and one "
                         f"(batch, classes) output; this model maps {inp} to {out}")
    last = model.layers[-1]
    if getattr(last, "activation", None) is keras.activations.softmax:
        warnings.warn(f"{last.name} ends in a softmax: the export's 'logits' output will hold "
                      "probabilities and its 'probabilities' (a TFLite export's default "
                      "output) a softmax of them; give the head no activation (train with "
                      "from_logits=True) for exact outputs", stacklevel=3)
    labels = getattr(model, "id2label", None)
    size = inp[1] if inp[1] is not None and inp[1] == inp[2] else inner.config.image_size
    config = inner.config.replace(num_labels=int(out[1]), image_size=int(size),
                                  id2label=dict(labels) if labels else None)
    return FineTuned(model, inner, config)
