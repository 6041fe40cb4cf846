"""How often ``predict --fast-decode`` gives the exact path's answer, over every real photo here.

Usage::

    python benchmarks/fast_decode.py [--json OUT]

The real photos are the fixtures' four (``folder.fixture_photos``). Each is classified as it
is (as a JPEG: ``--fast-decode`` must leave these pixels alone) and as large JPEGs made the
way ``folder.py --photo 12mp`` makes them (``folder.phone_photo``): 4 sizes from 12 MP to
1080p, with and without sensor-like noise, stored landscape and as a portrait (landscape
pixels with EXIF orientation 6, as phones save them). Both paths run through
``predict.classify`` on the bundled 1.0_224 weights (the cached TFLite model), all 1001
probabilities kept. Reported per size: top-1 kept, top-5 set kept, the largest change of any
class's probability, and each top-1 flip with both top-1 probabilities.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: the project's packages sit one level up
    sys.path.insert(0, str(ROOT))

from benchmarks.folder import fixture_photos, phone_photo  # noqa: E402

SIZES = {"12 MP": (4000, 3000), "8 MP": (3264, 2448), "5 MP": (2592, 1944),
         "1080p": (1920, 1080)}


def _aspect_crop(im, size):
    """The centre of ``im`` with ``size``'s aspect ratio (so 1080p is not stretched)."""
    (w, h), (tw, th) = im.size, size
    cw, ch = (round(h * tw / th), h) if w * th > h * tw else (w, round(w * th / tw))
    left, top = (w - cw) // 2, (h - ch) // 2
    return im.crop((left, top, left + cw, top + ch))


def make_inputs(folder: Path) -> list[tuple[str, str]]:
    """``(size class, path)`` for every input: the small originals, then the large ones."""
    from PIL import Image

    inputs = []
    for i, source in enumerate(fixture_photos()):
        im = Image.open(source).convert("RGB")
        small = folder / f"{source.stem}.jpg"
        im.save(small, quality=90)
        inputs.append(("small (as is)", str(small)))
        for label, size in SIZES.items():
            for noise in (12, 0):
                big = phone_photo(_aspect_crop(im, size), size, seed=i, noise=noise)
                for portrait in (False, True):
                    exif = Image.Exif()
                    if portrait:
                        exif[0x0112] = 6  # stored landscape, shown turned 90 degrees
                    name = f"{source.stem}_{size[0]}x{size[1]}_n{noise}{'_p' * portrait}.jpg"
                    big.save(folder / name, quality=92, exif=exif)
                    inputs.append((label, str(folder / name)))
    return inputs


def probabilities(paths: list[str], fast_decode: bool) -> dict[str, dict[int, float]]:
    """Every class's probability per image, from ``predict.classify``."""
    from tf_mobilenet_v1.predict import classify, open_classifier

    engine = open_classifier("mobilenet_v1_1.0_224")
    out = {}
    for r in classify(paths, engine, top_k=1001, fast_decode=fast_decode):
        if "error" in r:
            raise RuntimeError(r["error"])
        out[r["image"]] = {p["index"]: p["score"] for p in r["predictions"]}
    return out


def agreement(inputs, exact, fast) -> dict[str, dict]:
    """Per size class and overall: top-1 / top-5 set kept, max probability change, flips."""
    groups: dict[str, dict] = {}
    for label, path in inputs:
        a, b = exact[path], fast[path]
        top_a, top_b = (sorted(p, key=p.get, reverse=True)[:5] for p in (a, b))
        change = max(abs(a[k] - b[k]) for k in a)
        for key in (label, "all"):
            g = groups.setdefault(key, {"inputs": 0, "top1_same": 0, "top5_set_same": 0,
                                        "identical": 0, "max_prob_change": 0.0, "flips": []})
            g["inputs"] += 1
            g["top1_same"] += top_a[0] == top_b[0]
            g["top5_set_same"] += set(top_a) == set(top_b)
            g["identical"] += a == b
            g["max_prob_change"] = max(g["max_prob_change"], change)
            if top_a[0] != top_b[0]:
                g["flips"].append({"image": Path(path).name, "exact": [top_a[0], a[top_a[0]]],
                                   "fast": [top_b[0], b[top_b[0]]]})
    groups["all"] = groups.pop("all")  # the total last
    return groups


def format_report(groups: dict[str, dict]) -> str:
    from tf_mobilenet_v1 import imagenet_labels

    labels = imagenet_labels()
    lines = ["| inputs | count | top-1 kept | top-5 set kept | scores identical | "
             "max probability change |", "|---|---|---|---|---|---|"]
    for label, g in groups.items():
        n = g["inputs"]
        lines.append(f"| {label} | {n} | {g['top1_same']}/{n} | {g['top5_set_same']}/{n} | "
                     f"{g['identical']}/{n} | {g['max_prob_change']:.3f} |")
    for f in groups.get("all", {}).get("flips", []):
        (a, pa), (b, pb) = f["exact"], f["fast"]
        lines.append(f"\ntop-1 flip: {f['image']}: exact {labels[a]} ({pa:.3f}), fast "
                     f"{labels[b]} ({pb:.3f})")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", default=None, metavar="OUT", help="also write results as JSON")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="mobilenet_fast_decode_") as tmp:
        inputs = make_inputs(Path(tmp))
        paths = [path for _, path in inputs]
        groups = agreement(inputs, probabilities(paths, False), probabilities(paths, True))
    print(format_report(groups))
    if args.json:
        Path(args.json).write_text(json.dumps(groups, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
