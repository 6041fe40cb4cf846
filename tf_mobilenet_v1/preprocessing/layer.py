"""``MobileNetV1Preprocessing``: the processor as an in-graph Keras layer.

uint8 NHWC of any size in, normalized float out, from ops that SavedModel and TFLite builtins
support. It reproduces Pillow's bilinear resize exactly (same 22-bit integer weights, integer
sums, a uint8 rounding after each pass, Pillow's choice of pass order), and HF's rescale and
normalize by a 256-entry table, so its output equals the processor's bit for bit (tested on the
fixture photos and on random sizes from 1x1 up, as a SavedModel and as TFLite).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import keras
import numpy as np
from PIL import Image

from .processor import (
    CROP_PADDING,
    IMAGENET_STANDARD_MEAN,
    IMAGENET_STANDARD_STD,
    _triple,
    normalize_table,
)

_PACKAGE = "tf_mobilenet_v1"


# Pillow resizes 8-bit images with 22-bit fixed-point weights and rounds after each pass;
# exact ties are common (rational weights times integer pixels), so matching it bit for bit
# needs the same integer weights and integer sums. Everything below is int32 arithmetic.
_PRECISION_BITS = 22


def _pil_bilinear_kernel(tf, in_size, out_size, start, count: int):
    """Pillow's integer bilinear weights for resizing ``in_size -> out_size``, for output
    indices ``start .. start + count - 1`` (indices outside the output, i.e. HF's zero padding
    around a crop, get zero weights). Returns ``(taps, kk)``: (count, K) int32 input indices
    and weights of a K-tap window per output index.

    Pillow's weight of input x for output j is ``tri((x + 0.5 - center) / fs)`` with
    ``center = (j + 0.5) * in/out`` and ``fs = max(in/out, 1)``; multiplied out this is
    ``n = max(0, D - |(2x+1)*out - (2j+1)*in|)`` over ``D = 2*max(in, out)``, normalized by
    the row sum S, then ``kk = round(n * 2**22 / S)``; the rounding is done by exact long
    division. Valid while ``2*in*out`` and ``16*S`` stay below 2**31 (inputs up to about
    20000 pixels a side for a 256-pixel output).
    """
    j = tf.range(count, dtype=tf.int32) + start
    x = tf.range(in_size, dtype=tf.int32)
    big = 2 * tf.maximum(in_size, out_size)
    num = (2 * x[None, :] + 1) * out_size - (2 * j[:, None] + 1) * in_size
    n = tf.maximum(0, big - tf.abs(num))
    valid = tf.logical_and(j >= 0, j < out_size)
    n = n * tf.cast(valid, tf.int32)[:, None]
    total = tf.maximum(tf.reduce_sum(n, axis=1, keepdims=True), 1)
    # q = floor(n * 2**23 / total), four bits at a time so nothing overflows int32.
    q, r = tf.math.floordiv(n, total), tf.math.floormod(n, total)
    for bits in (4, 4, 4, 4, 4, 3):
        r = r * (1 << bits)
        q = q * (1 << bits) + tf.math.floordiv(r, total)
        r = tf.math.floormod(r, total)
    kk = tf.math.floordiv(q + 1, 2)  # round half up: floor(n * 2**22 / total + 0.5)
    # The non-zero weights of a row are contiguous: gather a K-tap window from its first one.
    nonzero = tf.cast(kk > 0, tf.int32)
    k = tf.minimum(tf.maximum(tf.reduce_max(tf.reduce_sum(nonzero, axis=1)), 1), in_size)
    first = tf.cast(tf.argmax(nonzero, axis=1, output_type=tf.int32), tf.int32)
    first = tf.minimum(first, in_size - k)
    taps = first[:, None] + tf.range(k, dtype=tf.int32)[None, :]
    rows = tf.range(count, dtype=tf.int32)[:, None] * in_size
    kk = tf.gather(tf.reshape(kk, [-1]), rows + taps)
    return taps, kk


@functools.lru_cache(maxsize=1)
def _pillow_may_resize_vertically_first() -> bool:
    """Whether the installed Pillow runs the vertical pass first when the width shrinks by
    less than half as many pixels as the height (``2 * (w - new_w) < h - new_h``).

    Pillow's published C code always resizes horizontally first; the Pillow 13.0.0 wheel
    picks the order (measured on about 700 random size pairs: exactly the rule above, never
    vertical first when the height grows). Probe once, with Pillow itself: its resize of a
    tall, narrow image equals one of the two orders done as two single-axis resizes.
    """
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (300, 7, 3), dtype=np.uint8))
    both = np.asarray(img.resize((48, 48), Image.Resampling.BILINEAR))
    v = img.resize((7, 48), Image.Resampling.BILINEAR).resize((48, 48), Image.Resampling.BILINEAR)
    h = img.resize((48, 300), Image.Resampling.BILINEAR).resize((48, 48), Image.Resampling.BILINEAR)
    return bool(np.array_equal(both, np.asarray(v)) and not np.array_equal(both, np.asarray(h)))


def _pil_resample_axis(tf, x, taps, kk, axis: int):
    """Apply a (count, K) window along ``axis`` of int32 ``x`` and round like Pillow."""
    g = tf.gather(x, taps, axis=axis)  # the axis becomes (count, K)
    shape = [1] * (len(x.shape) + 1)
    shape[axis], shape[axis + 1] = -1, tf.shape(kk)[1]
    acc = tf.reduce_sum(g * tf.reshape(kk, shape), axis=axis + 1)
    acc = tf.math.floordiv(acc + (1 << (_PRECISION_BITS - 1)), 1 << _PRECISION_BITS)
    return tf.clip_by_value(acc, 0, 255)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class MobileNetV1Preprocessing(keras.layers.Layer):
    """In-graph preprocessing: uint8 RGB (B, H, W, 3) of any size -> (B, S, S, 3) float32.

    ``mode="crop"`` (default) is Hugging Face's pipeline: resize the shortest edge to
    ``shortest_edge`` (default ``image_size + 32``), center crop ``image_size`` (zero padding
    when smaller), rescale 1/255, normalize with ``image_mean``/``image_std``.
    ``mode="resize"`` resizes straight to ``image_size`` x ``image_size`` (no aspect ratio kept).
    The resize reproduces Pillow's bilinear filter bit for bit (its integer weights, widened
    when shrinking, a uint8 rounding after each pass, its pass order) with int32 arithmetic,
    Gather, ReduceSum and one ``cond``, so it runs in a SavedModel and as TFLite builtins;
    the output equals :class:`MobileNetV1ImageProcessor`'s exactly. Rank-3 input gives
    rank-3 output; float input is rounded and clipped to 0..255 first. Memory: the first pass
    gathers (B, H, S, taps, 3) int32, about 200 MB for a 4000x3000 photo at S = 224.
    """

    def __init__(self, image_size: int = 224, shortest_edge: int | None = None,
                 mode: str = "crop", image_mean: Sequence[float] = IMAGENET_STANDARD_MEAN,
                 image_std: Sequence[float] = IMAGENET_STANDARD_STD, **kwargs):
        super().__init__(**kwargs)
        if mode not in ("crop", "resize"):
            raise ValueError(f"mode must be 'crop' or 'resize', got {mode!r}")
        if int(image_size) < 1 or (shortest_edge is not None and int(shortest_edge) < 1):
            raise ValueError("image_size and shortest_edge must be positive")
        self.image_size = int(image_size)
        self.shortest_edge = None if shortest_edge is None else int(shortest_edge)
        self.mode = mode
        self.image_mean = list(_triple(image_mean, "image_mean"))
        self.image_std = list(_triple(image_std, "image_std"))
        self._table = normalize_table(1 / 255, self.image_mean, self.image_std).reshape(-1)

    @property
    def resize_to(self) -> int:
        return self.shortest_edge if self.shortest_edge is not None \
            else self.image_size + CROP_PADDING

    def call(self, images):
        import tensorflow as tf

        x = tf.convert_to_tensor(images)
        squeeze = x.shape.rank == 3
        if squeeze:
            x = x[None]
        if x.dtype.is_floating:
            x = tf.clip_by_value(tf.round(x), 0.0, 255.0)
        x = tf.cast(x, tf.int32)
        shape = tf.shape(x)
        h, w = shape[1], shape[2]
        s = self.image_size
        if self.mode == "resize":
            new_h = new_w = tf.constant(s, tf.int32)
            top = left = tf.constant(0, tf.int32)
        else:
            se = tf.constant(self.resize_to, tf.int32)
            short, long = tf.minimum(h, w), tf.maximum(h, w)
            new_long = tf.math.floordiv(se * long, short)
            portrait = w <= h
            new_h = tf.where(portrait, new_long, se)
            new_w = tf.where(portrait, se, new_long)
            top = tf.math.floordiv(new_h - s, 2)
            left = tf.math.floordiv(new_w - s, 2)
        taps_w, kk_w = _pil_bilinear_kernel(tf, w, new_w, left, s)
        taps_h, kk_h = _pil_bilinear_kernel(tf, h, new_h, top, s)

        # Two passes, each rounded to uint8 like Pillow; the order matters for the rounding.
        def horizontal_first():
            y = _pil_resample_axis(tf, x, taps_w, kk_w, axis=2)  # (B, H, S, C)
            return _pil_resample_axis(tf, y, taps_h, kk_h, axis=1)

        def vertical_first():
            y = _pil_resample_axis(tf, x, taps_h, kk_h, axis=1)  # (B, S, W, C)
            return _pil_resample_axis(tf, y, taps_w, kk_w, axis=2)

        if _pillow_may_resize_vertically_first():
            v_first = tf.logical_and(new_h < h, 2 * (w - new_w) < h - new_h)
            x = tf.cond(v_first, vertical_first, horizontal_first)
        else:
            x = horizontal_first()
        # Exact HF rescale + normalize by table lookup: index = value * 3 + channel.
        idx = x * 3 + tf.range(3, dtype=tf.int32)
        x = tf.gather(tf.constant(self._table), idx)
        return x[0] if squeeze else x

    def compute_output_shape(self, input_shape):
        if len(input_shape) == 3:
            return (self.image_size, self.image_size, 3)
        return (input_shape[0], self.image_size, self.image_size, 3)

    def get_config(self):
        return {**super().get_config(), "image_size": self.image_size,
                "shortest_edge": self.shortest_edge, "mode": self.mode,
                "image_mean": list(self.image_mean), "image_std": list(self.image_std)}
