"""``WeightSource``: what every loader produces (a config plus weights by Keras path)."""

from __future__ import annotations

import dataclasses

import numpy as np

from ..architecture import LOGITS_NAME
from ..config import MobileNetV1Config

HEAD = (f"{LOGITS_NAME}/kernel", f"{LOGITS_NAME}/bias")


@dataclasses.dataclass
class WeightSource:
    """A loaded checkpoint: its config, ``{keras weight path: array}`` and where it came from."""

    config: MobileNetV1Config
    weights: dict[str, np.ndarray]  # keras weight path -> array
    description: str
    names: dict[str, str] = dataclasses.field(default_factory=dict)  # path -> source name
    folded: bool = False  # batch norm folded into the convolutions
    quant_ranges: dict = dataclasses.field(default_factory=dict)
    image_processor: dict | None = None  # the preprocessing the weights came with

    @property
    def has_head(self) -> bool:
        return HEAD[0] in self.weights


def model_source(model, description: str) -> WeightSource:
    if not isinstance(model, _model_classes()):
        raise ValueError(f"{description} holds a {type(model).__name__}, not a MobileNet V1 "
                         "model; pass a MobileNet V1 .keras file")
    weights = {v.path: np.asarray(v.numpy()) for v in model.weights}
    return WeightSource(model.config, weights, description, folded=model.fold_batchnorm,
                        quant_ranges=dict(getattr(model, "quant_ranges", {}) or {}),
                        image_processor=getattr(model, "image_processor", None))


def _model_classes():
    from ..models import MobileNetV1ForImageClassification, MobileNetV1Model

    return MobileNetV1Model, MobileNetV1ForImageClassification
