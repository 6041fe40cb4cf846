"""TF-slim's evaluation preprocessing (central crop 87.5%, TF1 bilinear resize, [-1, 1])."""

from __future__ import annotations

import numpy as np

from ..images import to_rgb_array
from .processor import _as_list, _finish

SLIM_CENTRAL_FRACTION = 0.875


def slim_eval_preprocess(image, image_size: int = 224,
                         central_fraction: float | None = SLIM_CENTRAL_FRACTION) -> np.ndarray:
    """TF-slim's ``inception_preprocessing.preprocess_for_eval`` for one image.

    uint8 -> float in [0, 1]; ``tf.image.central_crop`` keeping ``central_fraction`` of each
    side; bilinear resize to ``image_size`` as TF1's ``tf.image.resize_bilinear`` that slim
    calls (``align_corners=False``, no half-pixel centers, no antialiasing; TF2's
    ``tf.image.resize`` would use half-pixel centers and differ);
    then ``(x - 0.5) * 2``. Returns (image_size, image_size, 3) float32.
    """
    import tensorflow as tf

    x = tf.image.convert_image_dtype(tf.constant(to_rgb_array(image)), tf.float32)
    if central_fraction:
        x = tf.image.central_crop(x, central_fraction=central_fraction)
    # TF1's resize_bilinear (what slim calls), without the deprecation warning of its wrapper.
    x = tf.raw_ops.ResizeBilinear(images=x[None], size=[image_size, image_size],
                                  align_corners=False, half_pixel_centers=False)[0]
    return ((x - 0.5) * 2.0).numpy().astype(np.float32)


class SlimEvalPreprocessor:
    """:func:`slim_eval_preprocess` with the processor's calling convention."""

    model_input_names = ("pixel_values",)

    def __init__(self, image_size: int = 224,
                 central_fraction: float | None = SLIM_CENTRAL_FRACTION,
                 data_format: str = "channels_last"):
        self.image_size = int(image_size)
        self.central_fraction = central_fraction
        self.data_format = data_format

    @classmethod
    def for_variant(cls, image_size: int = 224, **kwargs) -> SlimEvalPreprocessor:
        return cls(image_size, **kwargs)

    def output_size(self) -> tuple[int, int]:
        return self.image_size, self.image_size

    def resize_edge(self) -> float:
        """The source edge that becomes ``image_size`` (the central crop is resized to it)."""
        return self.image_size / (self.central_fraction or 1.0)

    def preprocess_one(self, image) -> np.ndarray:
        return slim_eval_preprocess(image, self.image_size, self.central_fraction)

    def preprocess(self, images, return_tensors: str | None = None,
                   data_format: str | None = None) -> dict:
        batch = [self.preprocess_one(im) for im in _as_list(images)]
        return _finish(batch, return_tensors, data_format or self.data_format)

    __call__ = preprocess
