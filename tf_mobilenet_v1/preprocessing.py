"""Image preprocessing for MobileNet V1.

* :class:`MobileNetV1ImageProcessor`: Hugging Face semantics, pixel-exact with transformers'
  PIL backend (``MobileNetV1ImageProcessorPil``; the ``MobileNetV1ImageProcessor`` it falls back
  to without torchvision): resize the shortest edge with Pillow on uint8, center crop with zero
  padding, rescale in float64 then cast to float32, normalize in float32.
* :func:`slim_eval_preprocess` / :class:`SlimEvalPreprocessor`: TF-slim's evaluation
  preprocessing (central crop 87.5%, bilinear resize, scale to [-1, 1]).
* :class:`MobileNetV1Preprocessing`: the same pipeline as an in-graph Keras layer (uint8 NHWC
  of any size in, normalized float out) from ops that SavedModel and TFLite builtins support.
  It reproduces Pillow's bilinear resize exactly (same 22-bit integer weights, integer sums,
  a uint8 rounding after each pass, Pillow's choice of pass order), and HF's rescale and
  normalize by a 256-entry table, so its output equals the processor's bit for bit (tested on
  the fixture photos and on random sizes from 1x1 up, as a SavedModel and as TFLite).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence

import keras
import numpy as np
from PIL import Image

from .images import to_rgb_array

_PACKAGE = "tf_mobilenet_v1"
IMAGENET_STANDARD_MEAN = (0.5, 0.5, 0.5)
IMAGENET_STANDARD_STD = (0.5, 0.5, 0.5)
CROP_PADDING = 32  # HF's converted configs: shortest_edge = image_size + 32
SLIM_CENTRAL_FRACTION = 0.875

_RESAMPLE_NAMES = {
    "nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC, "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX, "hamming": Image.Resampling.HAMMING,
}
_OPTIONS = ("do_resize", "size", "resample", "do_center_crop", "crop_size", "do_rescale",
            "rescale_factor", "do_normalize", "image_mean", "image_std")


def _size_dict(size, name: str, allow_shortest: bool) -> dict[str, int]:
    """HF's size forms: an int (shortest edge for ``size``, square for ``crop_size``), a
    ``(height, width)`` pair, or a dict with ``shortest_edge`` or ``height`` and ``width``."""
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        d = {"shortest_edge": int(size)} if allow_shortest else \
            {"height": int(size), "width": int(size)}
    elif isinstance(size, (tuple, list)) and len(size) == 2:
        d = {"height": size[0], "width": size[1]}  # checked to be integers below
    elif isinstance(size, dict):
        d = {k: v for k, v in size.items() if v is not None}
    else:
        raise ValueError(f"{name} must be an int, a (height, width) pair or a dict, got {size!r}")
    keys = set(d)
    ok = keys == {"height", "width"} or (allow_shortest and keys == {"shortest_edge"})
    if not ok:
        want = "{'shortest_edge': n} or {'height': h, 'width': w}" if allow_shortest \
            else "{'height': h, 'width': w}"
        raise ValueError(f"{name} must be {want}, got {size!r}")
    if any(not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1
           for v in d.values()):
        raise ValueError(f"{name} values must be positive integers, got {size!r}")
    d = {k: int(v) for k, v in d.items()}
    # Outputs are at least this big; refuse what Pillow would refuse as a decompression bomb
    # (a preprocessor_config.json is as untrusted as the weights beside it).
    area = d["shortest_edge"] ** 2 if "shortest_edge" in d else d["height"] * d["width"]
    if area > Image.MAX_IMAGE_PIXELS:
        raise ValueError(f"{name} {size!r} asks for images of more than "
                         f"PIL.Image.MAX_IMAGE_PIXELS={Image.MAX_IMAGE_PIXELS} pixels")
    return d


def _resample(value) -> int:
    if isinstance(value, str):
        try:
            return int(_RESAMPLE_NAMES[value.lower()])
        except KeyError:
            raise ValueError(f"unknown resample {value!r}; use one of "
                             f"{', '.join(_RESAMPLE_NAMES)}") from None
    try:
        return int(Image.Resampling(int(value)))
    except (ValueError, TypeError):
        raise ValueError(f"unknown resample {value!r}; use a PIL.Image.Resampling value") from None


def _triple(v, name) -> tuple[float, ...]:
    t = tuple(float(x) for x in v) if isinstance(v, (tuple, list, np.ndarray)) \
        else (float(v),) * 3
    if len(t) != 3:
        raise ValueError(f"{name} needs 3 values (R, G, B), got {v!r}")
    return t


def shortest_edge_size(height: int, width: int, shortest_edge: int) -> tuple[int, int]:
    """Output (height, width) of HF's shortest-edge resize: the long side is truncated."""
    short, long = (width, height) if width <= height else (height, width)
    # Integer floor equals HF's int(size * long / short) for all realistic sizes (< 2**52).
    new_long = shortest_edge * long // short
    return (new_long, shortest_edge) if width <= height else (shortest_edge, new_long)


def center_crop(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """HF's center crop of an (H, W, C) array: floor offsets, zero padding when too small."""
    h, w = image.shape[:2]
    top, left = (h - height) // 2, (w - width) // 2
    if top >= 0 and left >= 0:
        return image[top:top + height, left:left + width]
    out = np.zeros((max(h, height), max(w, width)) + image.shape[2:], image.dtype)
    # HF pads by ceil((new - old) / 2) on top/left; floor((old - new) / 2) is its negation.
    pt, pl = max(0, -top), max(0, -left)
    out[pt:pt + h, pl:pl + w] = image
    top, left = max(0, top), max(0, left)
    return out[top:top + height, left:left + width]


def normalize_table(rescale_factor: float | None, image_mean, image_std) -> np.ndarray:
    """(256, 3) float32: HF's rescale (float64, cast to float32) and normalize (float32) for
    every uint8 value; the Keras layer looks pixels up here, so both agree bit for bit."""
    v = np.arange(256, dtype=np.float64)[:, None]
    x = (v * rescale_factor).astype(np.float32) if rescale_factor is not None \
        else v.astype(np.float32)
    x = np.broadcast_to(x, (256, 3))
    if image_mean is not None:
        mean = np.asarray(_triple(image_mean, "image_mean"), np.float32)
        std = np.asarray(_triple(image_std, "image_std"), np.float32)
        x = (x - mean) / std
    return np.ascontiguousarray(x, np.float32)


def _is_single_image(images) -> bool:
    if isinstance(images, (str, os.PathLike, Image.Image)):
        return True
    if hasattr(images, "shape") and len(images.shape) in (2, 3):
        return True
    return False


def _as_list(images) -> list:
    if _is_single_image(images):
        return [images]
    if hasattr(images, "shape") and len(images.shape) == 4:
        return list(np.asarray(images))
    if hasattr(images, "shape"):
        raise ValueError(f"expected one image (H, W[, C]) or a batch (N, H, W, C), got an array "
                         f"of shape {tuple(images.shape)}")
    if isinstance(images, (list, tuple)):
        if not images:
            raise ValueError("no images given")
        return list(images)
    raise TypeError(f"unsupported images type {type(images).__name__}; pass a path, a PIL image, "
                    "a numpy array or a list of these")


def _finish(batch: list[np.ndarray], return_tensors, data_format):
    if data_format not in ("channels_last", "channels_first"):
        raise ValueError(f"data_format must be 'channels_last' or 'channels_first', "
                         f"got {data_format!r}")
    if data_format == "channels_first":
        batch = [np.ascontiguousarray(x.transpose(2, 0, 1)) for x in batch]
    same = len({x.shape for x in batch}) == 1
    if return_tensors in (None, "np"):
        out = np.stack(batch) if same else batch
    elif return_tensors == "tf":
        if not same:
            raise ValueError("images have different sizes after preprocessing; enable "
                             "do_center_crop or resize to a fixed height and width")
        import tensorflow as tf

        out = tf.constant(np.stack(batch))
    else:
        raise ValueError(f"return_tensors must be None, 'np' or 'tf', got {return_tensors!r}")
    return {"pixel_values": out}


class MobileNetV1ImageProcessor:
    """Hugging Face's MobileNet V1 image processor, in numpy and Pillow.

    Defaults (HF's): resize the shortest edge to 256 (bilinear, keeping the aspect ratio;
    the long side is ``int(256 * long / short)``), center crop 224x224 (zero padding when
    smaller), rescale by 1/255, normalize with mean = std = 0.5, giving values in [-1, 1].
    Every option can be overridden per call. Output: ``{"pixel_values": array}``, NHWC float32
    by default, NCHW with ``data_format="channels_first"``; a list when sizes differ.
    """

    model_input_names = ("pixel_values",)

    def __init__(self, do_resize: bool = True, size=None, resample=Image.Resampling.BILINEAR,
                 do_center_crop: bool = True, crop_size=None, do_rescale: bool = True,
                 rescale_factor: float = 1 / 255, do_normalize: bool = True,
                 image_mean: Sequence[float] = IMAGENET_STANDARD_MEAN,
                 image_std: Sequence[float] = IMAGENET_STANDARD_STD,
                 data_format: str = "channels_last"):
        self.do_resize = bool(do_resize)
        self.size = _size_dict(256 if size is None else size, "size", True)
        self.resample = _resample(resample)
        self.do_center_crop = bool(do_center_crop)
        self.crop_size = _size_dict(224 if crop_size is None else crop_size, "crop_size", False)
        self.do_rescale = bool(do_rescale)
        self.rescale_factor = float(rescale_factor)
        self.do_normalize = bool(do_normalize)
        self.image_mean = list(_triple(image_mean, "image_mean"))
        self.image_std = list(_triple(image_std, "image_std"))
        if any(s == 0 for s in self.image_std):
            raise ValueError(f"image_std must not contain zeros, got {self.image_std}")
        self.data_format = data_format

    # ----- construction -----
    @classmethod
    def for_variant(cls, image_size: int = 224, mode: str = "crop",
                    **kwargs) -> MobileNetV1ImageProcessor:
        """For a model of ``image_size``. ``mode="crop"``: as HF's converted configs, crop
        ``image_size`` after resizing the shortest edge to ``image_size + 32``;
        ``mode="resize"``: resize straight to ``image_size`` squared, no crop (what the TFLite
        and Coral examples and the fixtures' reference logits use)."""
        s = int(image_size)
        if mode == "crop":
            return cls(size={"shortest_edge": s + CROP_PADDING},
                       crop_size={"height": s, "width": s}, **kwargs)
        if mode == "resize":
            return cls(size={"height": s, "width": s}, do_center_crop=False,
                       crop_size={"height": s, "width": s}, **kwargs)
        raise ValueError(f"mode must be 'crop' or 'resize', got {mode!r}")

    @classmethod
    def from_config(cls, config, **kwargs) -> MobileNetV1ImageProcessor:
        """For a :class:`MobileNetV1Config` (its ``image_size``)."""
        return cls.for_variant(config.image_size, **kwargs)

    @classmethod
    def from_dict(cls, data: dict, **kwargs) -> MobileNetV1ImageProcessor:
        """From a Hugging Face ``preprocessor_config.json`` dict (unrelated keys ignored)."""
        opts = {k: data[k] for k in _OPTIONS if k in data}
        return cls(**{**opts, **kwargs})

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **kwargs) -> MobileNetV1ImageProcessor:
        """Read ``preprocessor_config.json`` from a directory (or that file itself)."""
        path = os.fspath(path)
        if os.path.isdir(path):
            path = os.path.join(path, "preprocessor_config.json")
        from .fileio import read_json_object

        return cls.from_dict(read_json_object(path, "preprocessor config"), **kwargs)

    def to_dict(self) -> dict:
        """HF ``preprocessor_config.json`` contents (transformers reads it back unchanged)."""
        return {
            "image_processor_type": "MobileNetV1ImageProcessor",
            "do_resize": self.do_resize, "size": dict(self.size), "resample": self.resample,
            "do_center_crop": self.do_center_crop, "crop_size": dict(self.crop_size),
            "do_rescale": self.do_rescale, "rescale_factor": self.rescale_factor,
            "do_normalize": self.do_normalize, "image_mean": list(self.image_mean),
            "image_std": list(self.image_std),
        }

    def __repr__(self):
        return f"{type(self).__name__}({self.to_dict()})"

    def output_size(self, **overrides) -> tuple[int, int] | None:
        """(height, width) of every output, or None when it depends on the input's shape."""
        o = self._options(overrides)
        if o["do_center_crop"]:
            return o["crop_size"]["height"], o["crop_size"]["width"]
        if o["do_resize"] and "height" in o["size"]:
            return o["size"]["height"], o["size"]["width"]
        return None

    # ----- processing -----
    def _options(self, overrides: dict) -> dict:
        unknown = set(overrides) - set(_OPTIONS)
        if unknown:
            raise TypeError(f"unknown preprocessing options {sorted(unknown)}; "
                            f"choose from {', '.join(_OPTIONS)}")
        o = {k: getattr(self, k) for k in _OPTIONS}
        for k, v in overrides.items():
            if v is None:
                continue
            if k == "size":
                v = _size_dict(v, "size", True)
            elif k == "crop_size":
                v = _size_dict(v, "crop_size", False)
            elif k == "resample":
                v = _resample(v)
            elif k in ("image_mean", "image_std"):
                v = list(_triple(v, k))
            o[k] = v
        return o

    def preprocess_one(self, image, **overrides) -> np.ndarray:
        """One image (path, PIL image or array) -> (H, W, 3) float32, channels last."""
        o = self._options(overrides)
        rgb = to_rgb_array(image)
        if o["do_resize"]:
            h, w = rgb.shape[:2]
            size = o["size"]
            new = shortest_edge_size(h, w, size["shortest_edge"]) if "shortest_edge" in size \
                else (size["height"], size["width"])
            if new[0] * new[1] > Image.MAX_IMAGE_PIXELS:
                # A thin strip (say 1 x 100000) would be scaled to hundreds of millions of
                # pixels by the shortest-edge rule: refuse it as Pillow refuses such files.
                raise ValueError(
                    f"resizing a {w}x{h} image to {new[1]}x{new[0]} exceeds Pillow's limit of "
                    f"{Image.MAX_IMAGE_PIXELS} pixels (PIL.Image.MAX_IMAGE_PIXELS); crop it to "
                    "a less extreme aspect ratio first")
            if new != (h, w):
                resized = Image.fromarray(rgb).resize((new[1], new[0]), resample=o["resample"])
                rgb = np.asarray(resized)
        if o["do_center_crop"]:
            rgb = center_crop(rgb, o["crop_size"]["height"], o["crop_size"]["width"])
        if o["do_rescale"]:
            # HF multiplies in float64 and casts to float32 afterwards.
            x = (rgb.astype(np.float64) * o["rescale_factor"]).astype(np.float32)
        else:
            x = rgb.astype(np.float32)
        if o["do_normalize"]:
            x = (x - np.asarray(o["image_mean"], np.float32)) / \
                np.asarray(o["image_std"], np.float32)
        return np.ascontiguousarray(x, np.float32)

    def preprocess(self, images, return_tensors: str | None = None,
                   data_format: str | None = None, **overrides) -> dict:
        """Process one image or a list; returns ``{"pixel_values": (B, H, W, 3) float32}``."""
        self._options(overrides)  # reject unknown options before decoding anything
        batch = [self.preprocess_one(im, **overrides) for im in _as_list(images)]
        return _finish(batch, return_tensors, data_format or self.data_format)

    __call__ = preprocess


# ----------------------------------------------------------------- TF-slim evaluation
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

    def preprocess_one(self, image) -> np.ndarray:
        return slim_eval_preprocess(image, self.image_size, self.central_fraction)

    def preprocess(self, images, return_tensors: str | None = None,
                   data_format: str | None = None) -> dict:
        batch = [self.preprocess_one(im) for im in _as_list(images)]
        return _finish(batch, return_tensors, data_format or self.data_format)

    __call__ = preprocess


PREPROCESSING_NAMES = ("crop", "resize", "slim")


def get_preprocessor(name: str = "crop", image_size: int = 224):
    """A processor by name for a model size: ``"crop"`` (Hugging Face's resize + center
    crop), ``"resize"`` (Pillow bilinear straight to the model size) or ``"slim"`` (TF-slim's
    evaluation preprocessing)."""
    if name in ("crop", "resize"):
        return MobileNetV1ImageProcessor.for_variant(image_size, mode=name)
    if name == "slim":
        return SlimEvalPreprocessor(image_size)
    raise ValueError(f"unknown preprocessing {name!r}; use one of "
                     f"{', '.join(PREPROCESSING_NAMES)}")


# ----------------------------------------------------------------- in-graph Keras layer
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
