"""The 32 official MobileNet V1 checkpoints (2018_08_02 release) and their download.

Figures (million MACs, million parameters, ImageNet top-1/top-5 %) are those of TF-slim's
``research/slim/nets/mobilenet_v1.md``; the ``_quant`` figures are its post-2018-08-02 ones.
They are kept as published, including 34 million MACs for 0.25_192, where the architecture gives
30.2 million (``architecture.count_macs``).
Checksums are the ones Intel's Open Model Zoo publishes for four float tarballs
(``models/public/mobilenet-v1-*/model.yml``); no published checksum was found for the others,
so those downloads are validated structurally instead (the tarball must open and hold a
model, and loading then checks every tensor strictly).
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import os

from .errors import first_line
from .variants import parse_variant, variant_name

BASE_URL = "http://download.tensorflow.org/models/mobilenet_v1_2018_08_02"
CACHE_SUBDIR = "tf_mobilenet_v1"
RESOLUTIONS = (224, 192, 160, 128)

# alpha: (million params, {resolution: (million MACs, float top-1, top-5, quant top-1, top-5)})
_FIGURES = {
    "1.0": (4.24, {224: (569, 70.9, 89.9, 70.1, 88.9), 192: (418, 70.0, 89.2, 69.2, 88.3),
                   160: (291, 68.0, 87.7, 67.2, 86.7), 128: (186, 65.2, 85.8, 63.4, 84.2)}),
    "0.75": (2.59, {224: (317, 68.4, 88.2, 66.8, 87.0), 192: (233, 67.2, 87.3, 66.1, 86.4),
                    160: (162, 65.3, 86.0, 62.3, 83.8), 128: (104, 62.1, 83.9, 55.8, 78.8)}),
    "0.5": (1.34, {224: (150, 63.3, 84.9, 60.7, 83.2), 192: (110, 61.7, 83.6, 60.0, 82.2),
                   160: (77, 59.1, 81.9, 57.7, 80.4), 128: (49, 56.3, 79.4, 54.5, 77.7)}),
    "0.25": (0.47, {224: (41, 49.8, 74.2, 48.0, 72.8), 192: (34, 47.7, 72.3, 46.0, 71.2),
                    160: (21, 45.5, 70.3, 43.4, 68.5), 128: (14, 41.5, 66.3, 39.5, 64.4)}),
}

# name: (algorithm, hex digest, size in bytes), from Open Model Zoo's model.yml files.
_CHECKSUMS = {
    "mobilenet_v1_0.25_128": (
        "sha256", "879ddc3e0857f3611b5cf248e36de2288c7a11ea8c2ed8a8bdded635e6010dfe", 10800019),
    "mobilenet_v1_0.5_160": (
        "sha384", "7023a17e0f7dd48ffb3607ef1d7712702b1eb110d1a2c14f80bdf41b08148a07f9521a22250b5"
                  "ef214b59a0bf62ef88b", 29958343),
    "mobilenet_v1_0.5_224": (
        "sha256", "98cf7a39552f73920cb99617cfa9b88d5732a87abf9ec14f7cc7f3ade1db0aaa", 29969407),
    "mobilenet_v1_1.0_224": (
        "sha256", "2fadeabb9968ec6833bee903900dda6e61b3947200535874ce2fe42a8493abc0", 94321559),
}


@dataclasses.dataclass(frozen=True)
class OfficialCheckpoint:
    """One published checkpoint: what it is, where it lives, how good it is."""

    name: str
    depth_multiplier: float
    resolution: int
    quantized: bool
    url: str
    million_macs: int
    million_params: float
    top1: float
    top5: float
    checksum: tuple[str, str, int] | None = None  # (algorithm, hex digest, size)

    num_labels: int = 1001  # ImageNet's 1000 classes and "background" at index 0

    @property
    def processor(self) -> dict:
        """The preprocessing that belongs to these weights, as a ``preprocessor_config.json``:
        Hugging Face's resize of the shortest edge to resolution + 32, center crop, [-1, 1]."""
        return {"image_processor_type": "MobileNetV1ImageProcessor", "do_resize": True,
                "size": {"shortest_edge": self.resolution + 32}, "resample": 2,
                "do_center_crop": True,
                "crop_size": {"height": self.resolution, "width": self.resolution},
                "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
                "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}

    @property
    def macs(self) -> int:
        return self.million_macs * 1_000_000

    @property
    def params(self) -> int:
        return round(self.million_params * 1_000_000)


def _build() -> dict[str, OfficialCheckpoint]:
    table = {}
    for quantized in (False, True):
        for alpha, (mparams, rows) in _FIGURES.items():
            for res in RESOLUTIONS:
                macs, f1, f5, q1, q5 = rows[res]
                name = variant_name(float(alpha), res, quantized)
                table[name] = OfficialCheckpoint(
                    name, float(alpha), res, quantized, f"{BASE_URL}/{name}.tgz", macs, mparams,
                    q1 if quantized else f1, q5 if quantized else f5, _CHECKSUMS.get(name))
    return table


CHECKPOINTS: dict[str, OfficialCheckpoint] = _build()


def canonical_name(name: str) -> str | None:
    """The registry key for ``name`` (``MobileNet_v1_0.50_160`` -> ``mobilenet_v1_0.5_160``)."""
    v = parse_variant(name)
    return v.name if v is not None and v.name in CHECKPOINTS else None


def names(quantized: bool | None = None) -> list[str]:
    """Registry names, optionally only the float or only the ``_quant`` ones."""
    return [n for n, c in CHECKPOINTS.items() if quantized is None or c.quantized == quantized]


def get(name: str) -> OfficialCheckpoint:
    """The registry entry for ``name``; a ``ValueError`` suggests the closest names."""
    key = canonical_name(name)
    if key is None:
        close = difflib.get_close_matches(str(name).lower(), list(CHECKPOINTS), n=3)
        hint = f"did you mean {', '.join(close)}?" if close else \
            "names look like mobilenet_v1_<0.25|0.5|0.75|1.0>_<128|160|192|224>[_quant]"
        raise ValueError(f"unknown official checkpoint {name!r}; {hint}")
    return CHECKPOINTS[key]


def file_digest(path: str, algorithm: str) -> str:
    """Hex digest of a file, read in chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify_download(entry: OfficialCheckpoint, path: str) -> None:
    """Check a downloaded tarball: its published size and checksum, else that it holds a model."""
    delete = f"delete {path} and try again"
    if entry.checksum is not None:
        algorithm, digest, size = entry.checksum
        actual = os.path.getsize(path)
        if actual != size:
            raise ValueError(f"the cached download {path} has {actual} bytes, expected {size} "
                             f"(incomplete or corrupt); {delete}")
        if file_digest(path, algorithm) != digest:
            raise ValueError(f"the cached download {path} fails its {algorithm} check "
                             f"(corrupt); {delete}")
        return
    import tarfile

    from .loaders.tarball import _TAR_ERRORS, find_model_members

    try:
        with tarfile.open(path, "r:*") as tar:
            members = sorted(m.name for m in tar.getmembers() if m.isfile())
        find_model_members(members, path)
    except (*_TAR_ERRORS, ValueError) as e:
        first = first_line(e)
        raise ValueError(f"the cached download {path} is not a usable release tarball "
                         f"({first}); {delete}") from None


# Shipped inside the package (converted by ``python -m tf_mobilenet_v1.converters.bundle``):
# no download needed.
BUNDLED = {"mobilenet_v1_1.0_224": os.path.join("weights", "mobilenet_v1_1.0_224")}


def bundled_path(name: str, must_exist: bool = True) -> str | None:
    """The packaged Hugging Face directory of ``name``, or ``None`` when it is not bundled."""
    key = canonical_name(name)
    if key not in BUNDLED:
        return None
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), BUNDLED[key])
    if must_exist and not os.path.isfile(os.path.join(path, "model.safetensors")):
        return None
    return path


def cached_path(name: str, cache_dir: str | None = None) -> str | None:
    """Where ``name`` is on this machine without a download (bundled or cached), else ``None``."""
    entry = get(name)
    bundled = bundled_path(entry.name)
    if bundled is not None:
        return bundled
    root = cache_dir or os.environ.get("KERAS_HOME") or os.path.join(
        os.path.expanduser("~"), ".keras")
    path = os.path.join(root, CACHE_SUBDIR, f"{entry.name}.tgz")
    return path if os.path.isfile(path) else None


def download(name: str, cache_dir: str | None = None) -> str:
    """The local copy of an official model: the bundled directory, or its tarball downloaded
    once into the Keras cache (``~/.keras/tf_mobilenet_v1``); return its path."""
    import keras

    entry = get(name)
    bundled = bundled_path(entry.name)
    if bundled is not None:
        return bundled
    try:
        path = keras.utils.get_file(fname=f"{entry.name}.tgz", origin=entry.url,
                                    cache_subdir=CACHE_SUBDIR, cache_dir=cache_dir)
    except Exception as e:  # keras wraps every network failure in a bare Exception
        first = first_line(e)
        raise OSError(
            f"could not download {entry.name} from {entry.url} ({first}; no network?); pass a "
            "local checkpoint, .tgz or Hugging Face directory path instead (CLI: --weights PATH)"
        ) from None
    verify_download(entry, path)
    return path
