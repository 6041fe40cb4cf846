"""Read images robustly into uint8 RGB arrays (files, PIL images, numpy arrays).

Every file goes through Pillow with its decompression-bomb limit left on, EXIF orientation
applied, the first frame of animations, and mode conversions that keep the meaning of the
pixels: transparency is composited onto white (as Hugging Face's ``convert_to_rgb`` does),
16-bit grayscale is scaled to 8 bits (Pillow's own ``convert`` would clip it), palette and CMYK
go through Pillow's conversions. Errors are ``ValueError``s that name the file.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import threading
import warnings
from collections.abc import Iterable, Iterator

import numpy as np
from PIL import Image, ImageOps

from .errors import first_line
from .fileio import check_regular_file

# The largest encoded image worth reading: an uncompressed 16-bit TIFF at Pillow's pixel limit
# is about 540 MB; anything bigger (a 2 GB sparse "photo") is refused before it is read.
MAX_IMAGE_BYTES = 600 << 20
# A crafted progressive JPEG of 20,000 scans decoded for over 15 minutes (6.5 ms a scan).
MAX_JPEG_SCANS = 200

# Extensions picked up when walking a directory (files named explicitly are always tried).
IMAGE_EXTENSIONS = frozenset({
    ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".dib", ".gif", ".webp", ".tif", ".tiff",
    ".ppm", ".pgm", ".pbm", ".pnm",
})

# Pillow logs some damage at ERROR level (e.g. a TIFF's "More samples per pixel than can be
# decoded"), which Python's last-resort handler prints raw to stderr when the application has
# configured no logging. We report such files ourselves; an application that configures
# logging still receives these records through propagation.
logging.getLogger("PIL").addHandler(logging.NullHandler())

# ``warnings.catch_warnings`` swaps a process-wide filter list; serialize it between the
# decoding threads of a tf.data pipeline. Only header parsing runs under the lock.
_OPEN_LOCK = threading.Lock()


def is_image_file(path: str | os.PathLike) -> bool:
    """True when ``path``'s extension is one of :data:`IMAGE_EXTENSIONS`."""
    return os.path.splitext(os.fspath(path))[1].lower() in IMAGE_EXTENSIONS


def find_images(inputs: Iterable[str | os.PathLike], *, keep_missing: bool = False,
                skipped: list[str] | None = None) -> tuple[list[str], list[str], list[str]]:
    """Expand files and directories into image paths.

    Returns ``(images, missing, empty_dirs)``: files given explicitly are kept whatever their
    extension; directories are walked recursively in sorted order, keeping files with an
    image extension; ``missing`` lists inputs that do not exist and ``empty_dirs`` directories
    without any image. With ``keep_missing`` the missing paths also stay in ``images``, in
    input order, so that reading them reports the error in place. ``skipped`` (a list)
    receives the files the walk passed over for their extension.
    """
    images, missing, empty = [], [], []
    for item in inputs:
        path = os.fspath(item)
        if os.path.isdir(path):
            found = list(_walk_images(path, skipped))
            images.extend(found)
            if not found:
                empty.append(path)
        elif os.path.exists(path):
            images.append(path)
        else:
            missing.append(path)
            if keep_missing:
                images.append(path)
    return images, missing, empty


def _walk_images(root: str, skipped: list[str] | None = None) -> Iterator[str]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()  # os.walk follows this list, so the walk order is deterministic
        for name in sorted(filenames):
            if is_image_file(name):
                yield os.path.join(dirpath, name)
            elif skipped is not None:
                skipped.append(os.path.join(dirpath, name))


def _bomb_message(path, err) -> str:
    return (f"cannot read image {path}: {err} (Pillow's decompression-bomb limit, "
            f"PIL.Image.MAX_IMAGE_PIXELS={Image.MAX_IMAGE_PIXELS}; raise it only for trusted "
            "files)")


def open_image(path: str | os.PathLike, data: bytes | None = None,
               draft: int | None = None) -> Image.Image:
    """Open, fully decode and orient an image file; returns a loaded PIL image (any mode).

    ``data``: the file's bytes, already read (e.g. from a bucket); ``path`` then only names
    it in messages. ``draft``: let a JPEG decode at 1/2, 1/4 or 1/8 scale (libjpeg's DCT
    scaling: other pixels, several times faster) while its shortest edge stays at least
    ``draft`` pixels; other formats, and JPEGs too small to halve, decode as they are.
    Raises ``ValueError`` naming the file when it is missing, not an image, truncated,
    corrupt, or larger than Pillow's decompression-bomb limit (an image above
    ``Image.MAX_IMAGE_PIXELS`` is refused, not just warned about).
    """
    path = os.fspath(path)
    if data is None and os.path.exists(path) and not os.path.isdir(path):
        try:
            size = check_regular_file(path, "image")  # a FIFO would block this run forever
        except ValueError:
            raise ValueError(f"cannot read image {path}: not a regular file (a pipe, socket "
                             "or device); skipped") from None
        if size > MAX_IMAGE_BYTES:
            raise ValueError(f"cannot read image {path}: it holds {size:,} bytes, more than any "
                             f"image this reads ({MAX_IMAGE_BYTES:,}); skipped")
    try:
        with _OPEN_LOCK, warnings.catch_warnings():
            # Damaged headers make plugins warn ("Truncated File Read"...); such an image then
            # decodes or fails below with a clear error, so only the bomb warning matters.
            warnings.simplefilter("ignore")
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(path if data is None else io.BytesIO(data))
            try:
                im.seek(0)  # first frame of GIF / WebP / TIFF sequences (TIFF re-reads tags)
            except BaseException:
                im.close()
                raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ValueError(_bomb_message(path, e)) from None
    except FileNotFoundError:
        raise ValueError(f"cannot read image {path}: no such file") from None
    except IsADirectoryError:
        raise ValueError(f"cannot read image {path}: it is a directory") from None
    except Image.UnidentifiedImageError:
        raise ValueError(f"cannot read image {path}: not an image file Pillow can "
                         "identify (corrupt, or an unsupported format)") from None
    except Exception as e:  # noqa: BLE001 - plugins raise many types on malformed headers
        raise ValueError(f"cannot read image {path}: {type(e).__name__}: {e}") from None
    if im.format == "JPEG" and im.info.get("progressive"):
        scans = _jpeg_scans(path, data)
        if scans > MAX_JPEG_SCANS:
            im.close()
            raise ValueError(f"cannot read image {path}: a progressive JPEG of {scans} scans "
                             f"(photos have about 10; at most {MAX_JPEG_SCANS} are decoded, as "
                             "each costs a pass over the whole image)")
    try:
        try:
            if draft is not None and im.format in ("JPEG", "MPO"):
                _reduce_jpeg(im, draft)
            im.load()  # decode now, so truncated or corrupt data fails here
        except BaseException:
            im.close()
            raise
        if (im.fp is None or isinstance(im.fp, io.BytesIO)) and _upright(im) \
                and getattr(im, "n_frames", 1) == 1:
            # Decoded, no file left open (load() closed it) and nothing to rotate: the image
            # itself, not exif_transpose's full-size copy (36 MB for a 12 MP photo).
            return im
        with im:
            try:
                with _OPEN_LOCK, warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # "Corrupt EXIF data" and the like
                    return ImageOps.exif_transpose(im)
            except Exception:  # noqa: BLE001 - a malformed EXIF block must not lose the pixels
                return im.copy()
    except Exception as e:  # noqa: BLE001 - decoders raise OSError, SyntaxError, struct.error...
        detail = str(e) or type(e).__name__
        raise ValueError(f"cannot read image {path}: {detail}") from None


def _reduce_jpeg(im: Image.Image, edge: int) -> None:
    """Ask libjpeg for the largest DCT scale that keeps the shortest edge >= ``edge``; no draft
    at all where none would reduce, so such a file's pixels are the exact decode's."""
    if edge >= 1 and min(im.size) // edge >= 2:
        # draft() picks the largest of 8, 4, 2 not above min(W // edge, H // edge): the decoded
        # edge, ceil(edge_in / scale), is then at least ``edge``. EXIF rotation comes after.
        im.draft(None, (edge, edge))


def _upright(im: Image.Image) -> bool:
    """Whether ``im`` has no EXIF orientation to apply (none, or not one of 2-8)."""
    try:
        with _OPEN_LOCK, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return im.getexif().get(0x0112, 1) not in range(2, 9)  # exif_transpose's rule
    except Exception:  # noqa: BLE001 - exif_transpose decides for a damaged block
        return False


def _jpeg_scans(path: str, data: bytes | None) -> int:
    """How many scans (SOS markers) a JPEG holds; entropy-coded data never contains the
    marker bytes (a 0xFF there is stuffed with 0x00), so counting them is exact enough."""
    if data is None:
        with open(path, "rb") as f:
            data = f.read(MAX_IMAGE_BYTES)
    return data.count(b"\xff\xda")


def pil_to_rgb(im: Image.Image) -> np.ndarray:
    """Convert a PIL image of any mode to a (H, W, 3) uint8 RGB array.

    Transparency (an alpha band or a ``transparency`` entry, e.g. in palette GIFs) is
    composited onto white, like Hugging Face's ``convert_to_rgb``; 16- and 32-bit integer
    grayscale is scaled from 0..65535; float images are taken as 0..1 when their maximum is at
    most 1, else as 0..255.
    """
    mode = im.mode
    if mode.startswith("I;16") or mode == "I":
        a = np.asarray(im)
        # In row blocks: widening a 90-megapixel image to float64 at once took 700 MB more.
        out = np.empty(a.shape, np.uint8)
        step = max(1, (1 << 20) // max(1, a.shape[1]))
        for r in range(0, a.shape[0], step):
            block = a[r:r + step].astype(np.float64)
            out[r:r + step] = np.clip(np.round(block / 257.0), 0, 255)
        return _gray_to_rgb(out)
    if mode == "F":
        with np.errstate(invalid="ignore"):  # a signalling NaN warns when widened
            a = np.asarray(im).astype(np.float64)
        a = np.nan_to_num(a, nan=0.0, posinf=255.0, neginf=0.0)
        if a.size and a.max() <= 1.0:
            a = a * 255.0
        return _gray_to_rgb(np.clip(np.round(a), 0, 255).astype(np.uint8))
    if mode == "La":
        im = im.convert("LA")  # Pillow converts premultiplied La to nothing but LA
    if "A" in im.getbands() or "a" in im.getbands() or im.info.get("transparency") is not None:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
    if mode != "RGB":
        im = im.convert("RGB")
    return np.asarray(im)


def _gray_to_rgb(a: np.ndarray) -> np.ndarray:
    return np.repeat(a[..., None], 3, axis=-1)


def array_to_rgb(a: np.ndarray) -> np.ndarray:
    """Convert a numpy image to (H, W, 3) uint8 RGB, following Hugging Face's conventions.

    Accepts (H, W), (H, W, C) or (C, H, W) with C in 1, 3, 4. uint8 is taken as is; uint16 is
    scaled from 0..65535; bool to 0/255; floats in [0, 1] are multiplied by 255 and truncated
    (as transformers' ``to_pil_image`` does); other integer-valued arrays must lie in 0..255.
    Four channels are RGBA composited onto white with HF's rounding.
    """
    a = np.asarray(a)
    if a.ndim == 3 and a.shape[-1] not in (1, 3, 4) and a.shape[0] in (1, 3, 4):
        a = np.moveaxis(a, 0, -1)  # channels-first input
    if a.ndim == 2:
        a = a[..., None]
    if a.ndim != 3 or a.shape[-1] not in (1, 3, 4):
        raise ValueError(f"expected an image array of shape (H, W), (H, W, C) or (C, H, W) with "
                         f"C in 1, 3, 4; got shape {a.shape}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"image array has no pixels (shape {a.shape})")
    a = _to_uint8(a)
    if a.shape[-1] == 1:
        return np.repeat(a, 3, axis=-1)
    if a.shape[-1] == 4:
        alpha = a[..., 3:4] / 255.0
        return np.round(alpha * a[..., :3] + (1.0 - alpha) * 255.0).astype(np.uint8)
    return np.ascontiguousarray(a)


def _to_uint8(a: np.ndarray) -> np.ndarray:
    if a.dtype == np.uint8:
        return a
    if a.dtype == np.bool_:
        return a.astype(np.uint8) * 255
    if a.dtype == np.uint16:
        return np.round(a / 257.0).astype(np.uint8)
    if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise ValueError(f"unsupported image array dtype {a.dtype}; use uint8")
    if not np.all(np.isfinite(a)):
        raise ValueError("image array holds NaN or infinite values")
    if np.issubdtype(a.dtype, np.floating) and not np.allclose(a, np.round(a)):
        if a.min() < 0 or a.max() > 1:
            raise ValueError(f"float image values must lie in [0, 1] or be whole numbers in "
                             f"[0, 255]; got [{a.min()}, {a.max()}]")
        # transformers scales [0, 1] floats by 255 in float64, casts to float32, truncates.
        return (a.astype(np.float64) * 255).astype(np.float32).astype(np.uint8)
    if a.min() < 0 or a.max() > 255:
        raise ValueError(f"image values must lie in 0..255 for dtype {a.dtype}; "
                         f"got [{a.min()}, {a.max()}]")
    return a.astype(np.uint8)


def to_rgb_array(image) -> np.ndarray:
    """Any supported image (path, PIL image, numpy array, tf tensor) -> (H, W, 3) uint8 RGB."""
    return np.asarray(rgb_pixels(image))


def rgb_pixels(image) -> Image.Image | np.ndarray:
    """``image`` as :func:`to_rgb_array` gives it, except that an RGB Pillow image (what a
    JPEG decodes to) stays one: resizing it directly skips two full-size copies (Pillow's
    RGBX to a packed array and back), with the same pixels."""
    if isinstance(image, (str, os.PathLike)):
        image = open_image(image)
    if isinstance(image, Image.Image):
        if image.mode == "RGB" and image.info.get("transparency") is None:
            return image
        return pil_to_rgb(image)
    if hasattr(image, "numpy") and not isinstance(image, np.ndarray):
        image = image.numpy()  # tf.Tensor / torch.Tensor
    if isinstance(image, np.ndarray):
        return array_to_rgb(image)
    raise TypeError(f"unsupported image type {type(image).__name__}; pass a file path, a PIL "
                    "image or a numpy array")


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as a (H, W, 3) uint8 RGB array (see :func:`open_image`)."""
    return pil_to_rgb(open_image(path))


class _PixelBudget:
    """How many pixels the decoding threads may hold at once: small photos decode side by
    side, while two images at Pillow's 90-megapixel limit wait for each other (each costs
    about 1.5 GB on the way to its crop)."""

    def __init__(self, limit: int):
        self.limit, self.used, self.cond = limit, 0, threading.Condition()

    @contextlib.contextmanager
    def hold(self, pixels: int):
        pixels = min(pixels, self.limit)
        with self.cond:
            self.cond.wait_for(lambda: self.used == 0 or self.used + pixels <= self.limit)
            self.used += pixels
        try:
            yield
        finally:
            with self.cond:
                self.used -= pixels
                self.cond.notify_all()


DECODING = _PixelBudget(Image.MAX_IMAGE_PIXELS or 1 << 27)


def _pixel_count(path: str, data: bytes | None) -> int:
    """Width x height from the header alone (0 when it cannot be read, or is no regular file:
    decoding then fails with its own message)."""
    if data is None and not os.path.isfile(path):
        return 0
    try:
        with _OPEN_LOCK, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path if data is None else io.BytesIO(data)) as im:
                return int(im.size[0]) * int(im.size[1])
    except Exception:  # noqa: BLE001 - the real open reports what is wrong
        return 0


def load_pixels(path: str, processor, shape: tuple[int, ...], data: bytes | None = None,
                draft: int | None = None) -> tuple[np.ndarray | None, str | None]:
    """``(pixels, None)`` for a readable image, ``(None, message)`` for one that is not (the
    message names the file). ``data``: the file's bytes, already read; ``path`` names them.
    ``draft``: see :func:`open_image`. Large images wait for their share of the decoding
    budget (``DECODING``)."""
    try:
        with DECODING.hold(_pixel_count(path, data)):
            x = processor.preprocess_one(path if data is None and draft is None
                                         else open_image(path, data=data, draft=draft))
        if x.shape != tuple(shape):
            raise ValueError(f"preprocessing gave shape {x.shape}, expected {tuple(shape)}")
        return x.astype(np.float32, copy=False), None
    except Exception as e:  # noqa: BLE001 - one bad image must not stop the others
        msg = first_line(e)
        return None, msg if path in msg else f"cannot read image {path}: {msg}"
