"""``MobileNetV1ImageProcessor``: Hugging Face's image processor in numpy and Pillow (no Keras).

Pixel-exact with transformers' PIL backend (``MobileNetV1ImageProcessorPil``; the
``MobileNetV1ImageProcessor`` it falls back to without torchvision): resize the shortest edge with
Pillow on uint8, center crop with zero padding, rescale in float64 then cast to float32,
normalize in float32.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from fractions import Fraction

import numpy as np
import PIL
from PIL import Image

from ..fileio import SavesPretrained
from ..images import rgb_pixels

IMAGENET_STANDARD_MEAN = (0.5, 0.5, 0.5)
IMAGENET_STANDARD_STD = (0.5, 0.5, 0.5)
PREPROCESSOR_NAME = "preprocessor_config.json"
CROP_PADDING = 32  # HF's converted configs: shortest_edge = image_size + 32
_PILLOW_VERSION = tuple(int(v) for v in PIL.__version__.split(".")[:2])

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


def _number(v, name: str, low: float, high: float) -> float:
    """A finite real number in [low, high]; anything else (a list, null, NaN, 1e-300 where a
    divisor belongs) is a ValueError naming the field, never NaN scores later."""
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number, got {v!r}")
    x = float(v)
    if not (math.isfinite(x) and low <= x <= high):
        raise ValueError(f"{name} must be a finite number in [{low:g}, {high:g}], got {v!r}")
    return x


def _flag(v, name: str) -> bool:
    if isinstance(v, (bool, np.bool_)) or (isinstance(v, (int, np.integer)) and v in (0, 1)):
        return bool(v)
    raise ValueError(f"{name} must be true or false, got {v!r}")


# Normalization bounds: a mean is a shift, a std a divisor (1e-300 would make every score NaN).
_BOUNDS = {"image_mean": (-1e3, 1e3), "image_std": (1e-4, 1e4)}


def _triple(v, name) -> tuple[float, ...]:
    low, high = _BOUNDS.get(name, (-1e3, 1e3))
    t = tuple(v) if isinstance(v, (tuple, list, np.ndarray)) else (v,) * 3
    if len(t) != 3:
        raise ValueError(f"{name} needs 3 values (R, G, B), got {v!r}")
    return tuple(_number(x, name, low, high) for x in t)


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


def _exact_box(in_size: int, out_size: int, start: int, length: int
               ) -> tuple[float, float] | None:
    """The source interval of output pixels ``start .. start + length`` of a Pillow resize of
    ``in_size`` to ``out_size`` pixels, when resizing just that interval gives the same pixels.

    Pillow computes each output pixel from ``center = box0 + (i + 0.5) * scale`` with the box in
    float32 and the rest in float64. When ``in_size / out_size`` is a short binary fraction
    (the shortest edge is 256 or 128, say), every such value is exact, so the interval's
    coefficients are the full resize's, bit for bit; otherwise ``None``.
    """
    scale = Fraction(in_size, out_size)
    if scale.denominator & (scale.denominator - 1) or scale.denominator > 1 << 16:
        return None
    box = (start * scale, (start + length) * scale)
    if any(Fraction(float(np.float32(b))) != b for b in (*box, box[1] - box[0])):
        return None
    return float(box[0]), float(box[1])


def _pillow_horizontal_first(in_w: int, in_h: int, out_w: int, out_h: int) -> bool | None:
    """Whether the installed Pillow runs the horizontal pass first for this resize (each pass
    rounds to uint8, so the order changes pixels), or ``None`` for a Pillow whose rule is not
    known here. Pillow < 12.2: always; 12.2-12.x: not for images over 100x taller than wide
    (Python's ``Image.resize``); 13.x: not when the height shrinks by more than twice the width
    (``ImagingResampleInner``)."""
    major, minor = _PILLOW_VERSION
    if (major, minor) < (12, 2):
        return True
    if major == 12:
        return not (in_h > in_w * 100 and out_h < in_h)
    if major == 13:
        return not (in_h - out_h > 0 and in_h - out_h > (in_w - out_w) * 2)
    return None


def _height_width(rgb: Image.Image | np.ndarray) -> tuple[int, int]:
    return (rgb.height, rgb.width) if isinstance(rgb, Image.Image) else rgb.shape[:2]


def _as_pil(rgb: Image.Image | np.ndarray) -> Image.Image:
    return rgb if isinstance(rgb, Image.Image) else Image.fromarray(rgb)


def resized_center_crop(rgb: Image.Image | np.ndarray, new: tuple[int, int],
                        crop: tuple[int, int], resample: int) -> np.ndarray:
    """``center_crop(resize(rgb, new), *crop)``, resizing only what the crop keeps where that
    is exact (see :func:`_exact_box`): the same uint8 pixels, in about 20% less time.

    The passes run in the order the full resize would run them; where Pillow would pick
    another order for the smaller call, they are made one axis at a time."""
    (h, w), (nh, nw), (ch, cw) = _height_width(rgb), new, crop
    top, left = (nh - ch) // 2, (nw - cw) // 2
    im = _as_pil(rgb)
    h_first = _pillow_horizontal_first(w, h, nw, nh)
    if resample == Image.Resampling.NEAREST or h_first is None:
        return center_crop(np.asarray(im.resize((nw, nh), resample)), ch, cw)
    ex = _exact_box(w, nw, left, cw) if left >= 0 else None
    ey = _exact_box(h, nh, top, ch) if top >= 0 else None
    (x0, x1), out_w = (ex, cw) if ex is not None else ((0.0, float(w)), nw)
    (y0, y1), out_h = (ey, ch) if ey is not None else ((0.0, float(h)), nh)
    if _pillow_horizontal_first(w, h, out_w, out_h) == h_first:
        im = im.resize((out_w, out_h), resample, box=(x0, y0, x1, y1))
    elif h_first:
        im = im.resize((out_w, h), resample, box=(x0, 0.0, x1, float(h)))
        im = im.resize((out_w, out_h), resample, box=(0.0, y0, float(out_w), y1))
    else:
        im = im.resize((w, out_h), resample, box=(0.0, y0, float(w), y1))
        im = im.resize((out_w, out_h), resample, box=(x0, 0.0, x1, float(out_h)))
    return center_crop(np.asarray(im), ch, cw)


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


class MobileNetV1ImageProcessor(SavesPretrained):
    """Hugging Face's MobileNet V1 image processor, in numpy and Pillow.

    Defaults (HF's): resize the shortest edge to 256 (bilinear, keeping the aspect ratio;
    the long side is ``int(256 * long / short)``), center crop 224x224 (zero padding when
    smaller), rescale by 1/255, normalize with mean = std = 0.5, giving values in [-1, 1].
    Every option can be overridden per call. Output: ``{"pixel_values": array}``, NHWC float32
    by default, NCHW with ``data_format="channels_first"``; a list when sizes differ.
    """

    model_input_names = ("pixel_values",)

    FILE_NAME = PREPROCESSOR_NAME

    def __init__(self, do_resize: bool = True, size=None, resample=Image.Resampling.BILINEAR,
                 do_center_crop: bool = True, crop_size=None, do_rescale: bool = True,
                 rescale_factor: float = 1 / 255, do_normalize: bool = True,
                 image_mean: Sequence[float] = IMAGENET_STANDARD_MEAN,
                 image_std: Sequence[float] = IMAGENET_STANDARD_STD,
                 data_format: str = "channels_last"):
        # Every field is checked here, where a preprocessor_config.json is read: a NaN, a
        # near-zero std or a list where a number belongs would otherwise give NaN scores or
        # one constant class for every image.
        self.do_resize = _flag(do_resize, "do_resize")
        self.size = _size_dict(256 if size is None else size, "size", True)
        self.resample = _resample(resample)
        self.do_center_crop = _flag(do_center_crop, "do_center_crop")
        self.crop_size = _size_dict(224 if crop_size is None else crop_size, "crop_size", False)
        self.do_rescale = _flag(do_rescale, "do_rescale")
        self.rescale_factor = _number(rescale_factor, "rescale_factor", 1e-6, 1.0)
        self.do_normalize = _flag(do_normalize, "do_normalize")
        self.image_mean = list(_triple(image_mean, "image_mean"))
        self.image_std = list(_triple(image_std, "image_std"))
        if data_format not in ("channels_last", "channels_first"):
            raise ValueError(f"data_format must be 'channels_last' or 'channels_first', got "
                             f"{data_format!r}")
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
    def for_model(cls, model, **kwargs) -> MobileNetV1ImageProcessor:
        """The processor that belongs to ``model``'s weights: the one its source carried (an
        HF directory's ``preprocessor_config.json``, a ``.keras`` model saved with one), else
        Hugging Face's crop for the model's ``image_size`` (never another size's crops)."""
        own = getattr(model, "_processor_config", getattr(model, "image_processor", None))
        if isinstance(own, cls):
            return cls.from_dict(own.to_dict(), **kwargs) if kwargs else own
        if isinstance(own, dict):
            return cls.from_dict(own, **kwargs)
        return cls.for_variant(model.config.image_size, **kwargs)

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
        """Read ``preprocessor_config.json`` from a directory (or that file itself); a registry
        name (``mobilenet_v1_0.5_160``) gives that checkpoint's crop, with no download."""
        from .. import registry
        from ..fileio import read_json_object

        path = os.fspath(path)
        if os.path.isdir(path):
            path = os.path.join(path, PREPROCESSOR_NAME)
        elif not os.path.exists(path) and registry.canonical_name(path):
            return cls.from_dict(registry.get(path).processor, **kwargs)
        try:
            return cls.from_dict(read_json_object(path, "preprocessor config"), **kwargs)
        except ValueError as e:
            if path in str(e):
                raise
            raise ValueError(f"{path}: {e}") from None

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"


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

    def resize_edge(self) -> int | None:
        """The edge the image's shortest side is resized to (before any crop), or None when
        the processor does not resize."""
        o = self._options({})
        if not o["do_resize"]:
            return None
        return o["size"].get("shortest_edge") or max(o["size"]["height"], o["size"]["width"])

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

    def crop_pixels(self, image, **overrides) -> np.ndarray:
        """One image -> its resized and center-cropped (H, W, 3) uint8 RGB pixels (the
        processor's steps before rescale and normalize)."""
        o = self._options(overrides)
        return self._crop_pixels(rgb_pixels(image), o)

    def _crop_pixels(self, rgb: Image.Image | np.ndarray, o: dict) -> np.ndarray:
        new = None
        if o["do_resize"]:
            h, w = _height_width(rgb)
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
            if new == (h, w):
                new = None
        if new is not None and o["do_center_crop"]:
            crop = (o["crop_size"]["height"], o["crop_size"]["width"])
            return resized_center_crop(rgb, new, crop, o["resample"])
        if new is not None:
            rgb = _as_pil(rgb).resize((new[1], new[0]), resample=o["resample"])
        rgb = np.asarray(rgb)
        if o["do_center_crop"]:
            rgb = center_crop(rgb, o["crop_size"]["height"], o["crop_size"]["width"])
        return rgb

    def preprocess_one(self, image, **overrides) -> np.ndarray:
        """One image (path, PIL image or array) -> (H, W, 3) float32, channels last."""
        o = self._options(overrides)
        rgb = self._crop_pixels(rgb_pixels(image), o)
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


class LookupProcessor:
    """A :class:`MobileNetV1ImageProcessor` whose rescale and normalize steps are one table
    lookup per uint8 value: the same float32 values bit for bit (``normalize_table`` does the
    processor's float64 rescale and float32 normalize) at a fraction of the cost."""

    def __init__(self, processor):
        self.processor = processor
        self.table = normalize_table(processor.rescale_factor if processor.do_rescale else None,
                                     processor.image_mean if processor.do_normalize else None,
                                     processor.image_std)
        # Mean and std alike for R, G and B (the usual case): one lookup over the whole image.
        self.table0 = np.ascontiguousarray(self.table[:, 0]) \
            if np.all(self.table == self.table[:, :1]) else None

    def output_size(self):
        return self.processor.output_size()

    def resize_edge(self):
        return self.processor.resize_edge()

    def preprocess_one(self, image) -> np.ndarray:
        pixels = self.processor.crop_pixels(image)
        if self.table0 is not None:
            return np.take(self.table0, pixels)
        out = np.empty(pixels.shape, np.float32)
        for c in range(pixels.shape[-1]):
            np.take(self.table[:, c], pixels[..., c], out=out[..., c])
        return out
