"""Exact TensorFlow / Keras 3 MobileNet V1 (TF-slim and Hugging Face compatible)."""

import os as _os

# TF 2.21 logs CUDA-probe and oneDNN notices at INFO even with level 2.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from .architecture import CONV_DEFS, count_macs, count_params, layer_specs  # noqa: E402
from .config import MobileNetV1Config  # noqa: E402
from .labels import imagenet_labels  # noqa: E402
from .models import (  # noqa: E402
    MobileNetV1ForImageClassification,
    MobileNetV1Model,
    decode_predictions,
)
from .preprocessing import MobileNetV1ImageProcessor, MobileNetV1Preprocessing  # noqa: E402

__all__ = [
    "CONV_DEFS",
    "MobileNetV1Config",
    "MobileNetV1ForImageClassification",
    "MobileNetV1ImageProcessor",
    "MobileNetV1Model",
    "MobileNetV1Preprocessing",
    "count_macs",
    "count_params",
    "decode_predictions",
    "imagenet_labels",
    "layer_specs",
]
__version__ = "0.1.0"
