"""The exact path's shortcut (resize only the crop's rows and columns) against Pillow's full
resize + center crop, under whichever Pillow runs this: ``python pillow_crop.py`` prints
``{"pillow": version, "checked": n}`` or exits 1 naming the first image that differs.

tests/test_preprocessing.py runs :func:`check` under the Pillow of the test venv (13.x) and
this file in ``.venv-pillow12`` (12.x): the shortcut's rules are per Pillow version."""

from __future__ import annotations

import json
import sys

import numpy as np
import PIL
from PIL import Image

from tf_mobilenet_v1.preprocessing.processor import (
    center_crop,
    resized_center_crop,
    shortest_edge_size,
)

RESAMPLES = (Image.Resampling.BILINEAR, Image.Resampling.BICUBIC, Image.Resampling.LANCZOS,
             Image.Resampling.BOX, Image.Resampling.NEAREST)
# (2100, 20) and (20, 2100): Pillow 12.2+'s rule for 100:1 images; (700, 200): 13.x's
SIZES = [(343, 512), (325, 480), (600, 512), (300, 300), (257, 1000), (1000, 257), (200, 150),
         (96, 64), (256, 400), (400, 256), (41, 37), (700, 200), (200, 700), (2100, 20),
         (20, 2100)]
CROPS = ((256, (224, 224)), (160, (128, 128)), (64, (56, 48)), (256, (300, 240)))


def check(resample) -> int:
    """How many (image, crop) pairs gave identical pixels; AssertionError on the first that
    does not."""
    rng = np.random.default_rng(int(resample))
    sizes = SIZES + [tuple(int(v) for v in rng.integers(17, 700, 2)) for _ in range(12)]
    checked = 0
    for short, crop in CROPS:
        for h, w in sizes:
            rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            new = shortest_edge_size(h, w, short)
            want = center_crop(np.asarray(Image.fromarray(rgb).resize((new[1], new[0]),
                                                                      resample)), *crop)
            got = resized_center_crop(rgb, new, crop, resample)
            assert got.shape == want.shape and np.array_equal(got, want), \
                (PIL.__version__, resample.name, h, w, short, crop)
            checked += 1
    return checked


if __name__ == "__main__":
    try:
        total = sum(check(r) for r in RESAMPLES)
    except AssertionError as e:
        sys.exit(f"differs under Pillow {e}")
    print(json.dumps({"pillow": PIL.__version__, "checked": total}))
