"""``WeightSource``: what every loader produces (a config plus weights by Keras path)."""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from .. import registry
from ..architecture import LOGITS_NAME
from ..config import MobileNetV1Config
from ..fileio import check_regular_file

HEAD = (f"{LOGITS_NAME}/kernel", f"{LOGITS_NAME}/bias")


def locate(name_or_path) -> tuple[str, str | None]:
    """``(path, None)`` for a local source, ``(name, registry key)`` for a registry name;
    anything else raises. Cheap (no TensorFlow, no download), so the command line can refuse
    a typo before it loads anything."""
    path = os.fspath(name_or_path)
    if os.path.exists(path) and not os.path.isdir(path):
        check_regular_file(path, "weights")  # a pipe or /dev/zero would be read without end
    if os.path.exists(path) or os.path.exists(path + ".index"):
        return path, None
    if os.path.islink(path):
        check_regular_file(path, "weights")  # says the link dangles
    key = registry.canonical_name(path)
    if key is not None:
        return path, key
    if os.sep not in path and path.lower().startswith("mobilenet_v1"):
        registry.get(path)  # raises with the closest registry names
    from ..formats import describe_forms

    raise FileNotFoundError(f"{path} does not exist; pass {describe_forms()}")


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


def tensor_problem(value) -> str | None:
    """Why an array cannot be a MobileNet V1 weight, or ``None``: every reader asks this one
    question, so a NaN or an integer tensor gets the same words from every format."""
    value = np.asarray(value)
    if not (np.issubdtype(value.dtype, np.floating) or value.dtype.name == "bfloat16"):
        return f"has dtype {value.dtype}, not a floating-point tensor"
    if not np.isfinite(value.astype(np.float32)).all():  # also catches float32 overflow
        return ("holds NaN or infinite values (the file is corrupt or from a diverged "
                "training run)")
    return None


def model_source(model, description: str) -> WeightSource:
    if not isinstance(model, _model_classes()):
        raise ValueError(f"{description} holds a {type(model).__name__}, not a MobileNet V1 "
                         "model; pass a MobileNet V1 .keras file")
    weights = {v.path: np.asarray(v.numpy()) for v in model.weights}
    return WeightSource(model.config, weights, description, folded=model.fold_batchnorm,
                        quant_ranges=dict(getattr(model, "quant_ranges", {}) or {}),
                        image_processor=getattr(model, "_processor_config", None))


def _model_classes():
    from ..models import MobileNetV1ForImageClassification, MobileNetV1Model

    return MobileNetV1Model, MobileNetV1ForImageClassification
