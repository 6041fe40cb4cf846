"""The one parser of variant names: ``mobilenet_v1_<alpha>_<resolution>[_quant]``.

Registry keys, file names of official downloads (``mobilenet_v1_0.5_160.tgz``,
``mobilenet_v1_0.25_128_frozen.tgz``) and ``MobileNetV1Config.from_variant`` all go through it.
"""

from __future__ import annotations

import os
import re
from typing import NamedTuple

_NAME = re.compile(r"mobilenet_v1_(\d*\.?\d+)_(\d+)(_quant)?", re.IGNORECASE)
FORMAT = "mobilenet_v1_<alpha>_<resolution>[_quant], e.g. mobilenet_v1_0.75_192"


class Variant(NamedTuple):
    depth_multiplier: float
    resolution: int
    quantized: bool = False

    @property
    def name(self) -> str:
        """Canonical name: ``mobilenet_v1_0.5_160`` (``0.50`` and ``MobileNet_`` normalized)."""
        return variant_name(self.depth_multiplier, self.resolution, self.quantized)


def variant_name(depth_multiplier: float, resolution: int, quantized: bool = False) -> str:
    """``mobilenet_v1_<alpha>_<res>[_quant]`` with slim's spelling of alpha (``1.0``, ``0.5``)."""
    return f"mobilenet_v1_{float(depth_multiplier)!r}_{int(resolution)}" + \
        ("_quant" if quantized else "")


def parse_variant(name: str) -> Variant | None:
    """The variant a whole name spells (surrounding spaces allowed), else ``None``."""
    m = _NAME.fullmatch(str(name).strip())
    return None if m is None else _variant(m)


def release_stem(path) -> str:
    """A release file's model name: ``.../mobilenet_v1_0.25_128_frozen.tgz`` ->
    ``mobilenet_v1_0.25_128`` (directory, archive extension and ``_frozen`` dropped)."""
    base = os.path.basename(os.fspath(path))
    for ext in (".tar.gz", ".tgz", ".tar"):
        base = base.removesuffix(ext)
    return base.removesuffix("_frozen")


def variant_in_path(path) -> Variant | None:
    """The variant named by the last path part that names one (``.../mobilenet_v1_0.5_160.tgz``,
    ``mobilenet_v1_0.25_128_frozen/frozen_graph.pb``), else ``None``."""
    for part in reversed(re.split(r"[\\/]", os.fspath(path))):
        m = _NAME.search(part)
        if m:
            return _variant(m)
    return None


def _variant(m: re.Match) -> Variant:
    return Variant(float(m.group(1)), int(m.group(2)), bool(m.group(3)))
