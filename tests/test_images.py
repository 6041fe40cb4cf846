"""Image reading: formats, EXIF orientation, mode conversions, hostile files, directory walks."""

from __future__ import annotations

import struct
import warnings
import zlib

import numpy as np
import pytest
from conftest import fixture_path
from PIL import Image

from tf_mobilenet_v1.images import (
    array_to_rgb,
    find_images,
    is_image_file,
    open_image,
    pil_to_rgb,
    read_image,
    to_rgb_array,
)


def _rgb(h=20, w=30, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + \
        struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png_header(width: int, height: int) -> bytes:
    """A well-formed PNG signature + IHDR claiming the given size, then a tiny IDAT."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
            + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + _png_chunk(b"IEND", b""))


def _bmp_header(width: int, height: int) -> bytes:
    """A BITMAPINFOHEADER BMP claiming the given size (24-bit) with almost no pixel data."""
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + 40 + 16, 0, 0, 54) + info + b"\x00" * 16


# ----------------------------------------------------------------- formats
@pytest.mark.parametrize("ext", ["png", "bmp", "tiff", "ppm", "webp"])
def test_lossless_formats_round_trip(tmp_path, ext):
    a = _rgb()
    path = tmp_path / f"img.{ext}"
    Image.fromarray(a).save(path, **({"lossless": True} if ext == "webp" else {}))
    out = read_image(path)
    assert out.dtype == np.uint8 and out.shape == (20, 30, 3)
    np.testing.assert_array_equal(out, a)


def test_jpeg_matches_pillow_decode(tmp_path):
    path = tmp_path / "img.jpg"
    Image.fromarray(_rgb()).save(path, quality=90)
    expected = np.asarray(Image.open(path).convert("RGB"))
    np.testing.assert_array_equal(read_image(path), expected)


def test_gif_first_frame(tmp_path):
    red = Image.new("RGB", (8, 6), (255, 0, 0))
    blue = Image.new("RGB", (8, 6), (0, 0, 255))
    path = tmp_path / "anim.gif"
    red.save(path, save_all=True, append_images=[blue], duration=50, loop=0)
    with Image.open(path) as im:
        assert im.n_frames == 2
    out = read_image(path)
    assert out.shape == (6, 8, 3)
    np.testing.assert_array_equal(out[0, 0], [255, 0, 0])


@pytest.mark.parametrize("orientation, k", [(3, 2), (6, -1), (8, 1)])
def test_exif_orientation_applied(tmp_path, orientation, k):
    a = _rgb(10, 16)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "oriented.png"
    Image.fromarray(a).save(path, exif=exif)
    out = read_image(path)
    np.testing.assert_array_equal(out, np.rot90(a, k))


def test_fixture_photos_read(fixtures):
    bird = read_image(fixture_path("images", "bird.bmp"))
    burger = read_image(fixture_path("images", "burger.jpg"))
    assert bird.shape == (343, 512, 3) and burger.shape == (325, 480, 3)
    assert bird.dtype == burger.dtype == np.uint8
    assert 40 < bird.mean() < 220  # real pixels, not a blank


# ----------------------------------------------------------------- modes
def test_grayscale_and_bilevel():
    g = np.arange(256, dtype=np.uint8).reshape(16, 16)
    out = pil_to_rgb(Image.fromarray(g, "L"))
    np.testing.assert_array_equal(out, np.repeat(g[..., None], 3, -1))
    bits = pil_to_rgb(Image.fromarray(g > 127).convert("1"))
    assert set(np.unique(bits)) == {0, 255}


def test_rgba_composited_on_white():
    a = np.zeros((1, 3, 4), np.uint8)
    a[0, 0] = (10, 20, 30, 255)   # opaque: unchanged
    a[0, 1] = (10, 20, 30, 0)     # transparent: white
    a[0, 2] = (0, 0, 0, 128)      # half: 255 * (1 - 128/255) = 127
    out = pil_to_rgb(Image.fromarray(a, "RGBA"))
    np.testing.assert_array_equal(out[0, 0], [10, 20, 30])
    np.testing.assert_array_equal(out[0, 1], [255, 255, 255])
    np.testing.assert_array_equal(out[0, 2], [127, 127, 127])
    la = pil_to_rgb(Image.fromarray(a[..., [0, 3]], "LA"))
    np.testing.assert_array_equal(la[0, :2], [[10, 10, 10], [255, 255, 255]])


def test_palette_with_transparency(tmp_path):
    im = Image.new("P", (4, 2), 0)
    im.putpalette([200, 10, 10] + [0, 0, 0] * 255)
    im.putpixel((1, 0), 1)
    path = tmp_path / "t.gif"
    im.save(path, transparency=1)
    out = read_image(path)
    np.testing.assert_array_equal(out[0, 0], [200, 10, 10])
    np.testing.assert_array_equal(out[0, 1], [255, 255, 255])  # transparent index -> white


def test_cmyk():
    c = np.zeros((1, 2, 4), np.uint8)
    c[0, 1, 3] = 255  # full black ink
    out = pil_to_rgb(Image.frombytes("CMYK", (2, 1), c.tobytes()))
    np.testing.assert_array_equal(out, [[[255, 255, 255], [0, 0, 0]]])


def test_16bit_grayscale_is_scaled_not_clipped(tmp_path):
    v = np.array([[0, 257 * 100, 32768, 65535]], np.uint16)
    path = tmp_path / "g16.png"
    Image.fromarray(v).save(path)
    with Image.open(path) as im:
        assert im.mode.startswith("I")
    out = read_image(path)
    # Pillow's own convert("RGB") clips: every non-zero value becomes 255.
    np.testing.assert_array_equal(out[0, :, 0], [0, 100, 128, 255])
    assert (out[..., 0] == out[..., 2]).all()


def test_float_mode_image():
    f = Image.fromarray(np.array([[0.0, 0.5, 1.0]], np.float32), "F")
    np.testing.assert_array_equal(pil_to_rgb(f)[0, :, 1], [0, 128, 255])


# ----------------------------------------------------------------- arrays
def test_array_layouts_and_dtypes():
    a = _rgb(5, 7)
    np.testing.assert_array_equal(array_to_rgb(a), a)
    np.testing.assert_array_equal(array_to_rgb(a.transpose(2, 0, 1)), a)  # channels first
    g = a[..., 0]
    np.testing.assert_array_equal(array_to_rgb(g), np.repeat(g[..., None], 3, -1))
    np.testing.assert_array_equal(array_to_rgb(g[..., None])[..., 2], g)
    np.testing.assert_array_equal(array_to_rgb(a.astype(np.uint16) * 257), a)
    np.testing.assert_array_equal(array_to_rgb(a.astype(np.float64)), a)  # whole numbers
    unit = array_to_rgb(np.full((2, 2, 3), 0.5))
    assert (unit == 127).all()  # HF: 0.5 * 255 = 127.5, truncated
    assert (array_to_rgb(np.ones((2, 2), bool)) == 255).all()
    rgba = np.zeros((1, 2, 4), np.uint8)
    rgba[0, 0] = (0, 0, 0, 128)
    np.testing.assert_array_equal(array_to_rgb(rgba)[0], [[127, 127, 127], [255, 255, 255]])


@pytest.mark.parametrize("bad", [
    np.zeros((5, 5, 2), np.uint8), np.zeros((0, 4, 3), np.uint8), np.zeros((2, 2, 2, 3)),
    np.full((2, 2, 3), 300), np.full((2, 2, 3), -0.5), np.full((2, 2, 3), np.nan),
    np.zeros((2, 2, 3), complex),
])
def test_bad_arrays_rejected(bad):
    with pytest.raises(ValueError):
        array_to_rgb(bad)


def test_to_rgb_array_dispatch(tmp_path):
    a = _rgb(4, 5)
    path = tmp_path / "x.png"
    Image.fromarray(a).save(path)
    for item in (str(path), path, Image.fromarray(a), a):
        np.testing.assert_array_equal(to_rgb_array(item), a)
    with pytest.raises(TypeError):
        to_rgb_array(42)


# ----------------------------------------------------------------- hostile files
def test_corrupt_file_names_the_file(tmp_path):
    path = tmp_path / "noise.png"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 500, np.uint8).tobytes())
    with pytest.raises(ValueError, match="noise.png"):
        read_image(path)


def test_text_file_named_jpg(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a picture\n")
    with pytest.raises(ValueError, match=r"cannot read image .*notes\.jpg"):
        read_image(path)


@pytest.mark.parametrize("ext", ["jpg", "png"])
def test_truncated_file(tmp_path, ext):
    full = tmp_path / f"full.{ext}"
    Image.fromarray(_rgb(64, 64)).save(full)
    data = full.read_bytes()
    cut = tmp_path / f"cut.{ext}"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=f"cut.{ext}"):
        read_image(cut)


def test_empty_and_missing_files(tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty.png"):
        read_image(empty)
    with pytest.raises(ValueError, match="no such file"):
        read_image(tmp_path / "absent.png")
    with pytest.raises(ValueError, match="directory"):
        open_image(tmp_path)


@pytest.mark.parametrize("header", [_png_header(100_000, 100_000), _bmp_header(100_000, 100_000),
                                    _png_header(10_000, 10_000)],
                         ids=["png-1e10-pixels", "bmp-1e10-pixels", "png-1e8-pixels"])
def test_huge_dimension_header_refused(tmp_path, header):
    # 1e10 pixels is past Pillow's hard limit; 1e8 only triggers its warning, refused as well.
    path = tmp_path / "bomb.img"
    path.write_bytes(header)
    limit = Image.MAX_IMAGE_PIXELS
    filters = list(warnings.filters)
    with pytest.raises(ValueError, match=r"bomb\.img.*decompression-bomb"):
        read_image(path)
    assert Image.MAX_IMAGE_PIXELS == limit and limit is not None  # the limit stays on
    assert warnings.filters == filters  # no process-wide filter left behind


def test_one_pixel_image(tmp_path):
    path = tmp_path / "dot.png"
    Image.new("RGB", (1, 1), (1, 2, 3)).save(path)
    np.testing.assert_array_equal(read_image(path), [[[1, 2, 3]]])


# ----------------------------------------------------------------- directory walks
def test_find_images(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "deep").mkdir(parents=True)
    (tmp_path / "empty").mkdir()
    for rel in ["z.png", "a/deep/y.JPG", "a/x.webp", "b/w.gif", "b/readme.txt", "a/.keep"]:
        (tmp_path / rel).write_bytes(b"x")
    explicit = tmp_path / "b" / "readme.txt"
    images, missing, empty = find_images(
        [tmp_path, explicit, tmp_path / "nope.png", tmp_path / "empty"])
    rel = [str(p)[len(str(tmp_path)) + 1:] for p in images]
    # sorted walk, directories in sorted order, extension filter; explicit files always kept
    assert rel == ["z.png", "a/x.webp", "a/deep/y.JPG", "b/w.gif", "b/readme.txt"]
    assert missing == [str(tmp_path / "nope.png")]
    assert empty == [str(tmp_path / "empty")]
    kept, _, _ = find_images([tmp_path / "nope.png", explicit], keep_missing=True)
    assert kept == [str(tmp_path / "nope.png"), str(explicit)]
    assert is_image_file("x.JPEG") and not is_image_file("x.txt")


def test_a_progressive_jpeg_of_thousands_of_scans_is_refused_before_decoding(tmp_path):
    """Each scan is a pass over the whole image (20,000 of them decoded for 15 minutes):
    more than ``MAX_JPEG_SCANS`` is refused from the markers, nothing decoded."""
    import io

    from tf_mobilenet_v1.images import MAX_JPEG_SCANS, open_image

    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(buf, "JPEG", progressive=True)
    jpeg = buf.getvalue()
    last_scan = jpeg.rindex(b"\xff\xda")
    scan = jpeg[last_scan:-2]  # the last scan segment, up to the EOI marker
    crafted = jpeg[:-2] + scan * (MAX_JPEG_SCANS + 50) + jpeg[-2:]
    path = tmp_path / "scans.jpg"
    path.write_bytes(crafted)
    with pytest.raises(ValueError, match=r"a progressive JPEG of \d+ scans"):
        open_image(path)
    with pytest.raises(ValueError, match="progressive JPEG"):
        open_image(path, data=crafted)
    ordinary = tmp_path / "ordinary.jpg"  # its own dozen scans decode as ever
    ordinary.write_bytes(jpeg)
    assert open_image(ordinary).size == (64, 64)


@pytest.mark.slow
def test_huge_16_bit_pngs_cost_no_more_than_8_bit_ones(tmp_path):
    """Two 9000 x 9900 images in one run: 16-bit grayscale PNGs peaked at 4.3 GB (widened to
    float64, decoded side by side) against 1.55 GB for 8-bit RGB. Now converted in row blocks,
    and decoded one after the other by the pixel budget: within 1.3x the 8-bit run's peak,
    measured in the same test."""
    import subprocess
    import sys

    from hostile import child_env

    rows, cols = 9900, 9000
    gradient = np.broadcast_to(np.linspace(0, 65535, cols, dtype=np.uint16), (rows, cols))
    for bits in ("16", "8"):
        folder = tmp_path / bits
        folder.mkdir()
        image = Image.fromarray(np.ascontiguousarray(gradient)) if bits == "16" else \
            Image.fromarray(np.repeat((gradient >> 8).astype(np.uint8)[..., None], 3, -1))
        for i in range(2):
            image.save(folder / f"{i}.png", compress_level=1)
    code = ("import resource, sys\nfrom tf_mobilenet_v1.cli import main\n"
            "rc = main(['predict', '--jsonl', '--no-fast', sys.argv[1]])\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024, rc)")
    peaks = {}
    for bits in ("16", "8"):
        proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / bits)],
                              capture_output=True, text=True, timeout=600, env=child_env())
        peak, rc = proc.stdout.splitlines()[-1].split()
        assert rc == "0", proc.stderr[-2000:]
        peaks[bits] = int(peak)
    print(f"peak MiB: 16-bit {peaks['16']}, 8-bit {peaks['8']}")
    assert peaks["16"] <= 1.3 * peaks["8"], peaks


# ----------------------------------------------------------------- reduced JPEG decodes (draft)
def _smooth_jpeg(path, w, h, **save):
    """A smooth gradient (so a reduced decode is close to a downscaled full one)."""
    y, x = np.mgrid[0:h, 0:w]
    a = np.stack([x * 255 // w, y * 255 // h, (x + y) * 255 // (w + h)], -1).astype(np.uint8)
    Image.fromarray(a).save(path, **{"format": "JPEG", "quality": 90, **save})
    return path


@pytest.mark.parametrize("size, edge, decoded", [
    ((2048, 1536), 512, (1024, 768)),  # 1536 // 512 = 3: halved, not quartered
    ((2048, 1536), 256, (512, 384)),  # 6: quartered (the largest of 8, 4, 2 not above it)
    ((4000, 3000), 375, (500, 375)),  # 8: an eighth, landing exactly on the edge
    ((1100, 1000), 512, (1100, 1000)),  # 1000 // 512 = 1: would not reduce, so untouched
])
def test_draft_keeps_the_shortest_edge_at_least_the_asked_one(tmp_path, size, edge, decoded):
    path = _smooth_jpeg(tmp_path / "a.jpg", *size)
    im = open_image(path, draft=edge)
    assert im.size == decoded and min(im.size) >= edge
    with open(path, "rb") as f:
        assert open_image(path, data=f.read(), draft=edge).size == decoded


def test_draft_leaves_small_jpegs_and_other_formats_exact(tmp_path):
    small = fixture_path("images", "burger.jpg")  # 480 x 325: 325 // 200 = 1
    np.testing.assert_array_equal(np.asarray(open_image(small, draft=200)),
                                  np.asarray(open_image(small)))
    png = tmp_path / "big.png"
    Image.fromarray(_rgb(1200, 1600)).save(png)
    im = open_image(png, draft=256)
    assert im.size == (1600, 1200)
    np.testing.assert_array_equal(np.asarray(im), np.asarray(open_image(png)))


@pytest.mark.parametrize("orientation", [6, 8])
def test_draft_of_an_exif_rotated_jpeg_comes_out_rotated(tmp_path, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = _smooth_jpeg(tmp_path / "rotated.jpg", 1600, 1200, exif=exif)
    reduced = open_image(path, draft=512)
    assert reduced.size == (600, 800)  # decoded at 800 x 600, then turned upright
    exact = np.asarray(open_image(path).resize(reduced.size, Image.Resampling.BOX), np.int16)
    # Turned the wrong way, the gradients would run across each other: errors near 128.
    assert np.abs(np.asarray(reduced, np.int16) - exact).mean() < 3


def test_draft_reduces_mpo_files_as_phones_write_them(tmp_path):
    thumbnail = Image.new("RGB", (160, 120))  # a second frame, as phones store a preview
    path = _smooth_jpeg(tmp_path / "photo.jpg", 1600, 1200, format="MPO", save_all=True,
                        append_images=[thumbnail])
    with Image.open(path) as im:
        assert im.format == "MPO"
    assert open_image(path, draft=300).size == (400, 300)
