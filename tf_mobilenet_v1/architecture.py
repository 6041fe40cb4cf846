"""MobileNet V1 as data: one table of rows, from which every layer, name and count is derived.

The table is TF-slim's ``MOBILENETV1_CONV_DEFS``. A ``conv`` row is one full convolution; a
``separable`` row expands to a depthwise layer followed by a 1x1 pointwise layer.
"""

from __future__ import annotations

import math
from typing import NamedTuple


class ConvDef(NamedTuple):
    kind: str  # "conv" or "separable"
    kernel: int
    stride: int
    depth: int


CONV_DEFS: tuple[ConvDef, ...] = (
    ConvDef("conv", 3, 2, 32),
    ConvDef("separable", 3, 1, 64),
    ConvDef("separable", 3, 2, 128),
    ConvDef("separable", 3, 1, 128),
    ConvDef("separable", 3, 2, 256),
    ConvDef("separable", 3, 1, 256),
    ConvDef("separable", 3, 2, 512),
    ConvDef("separable", 3, 1, 512),
    ConvDef("separable", 3, 1, 512),
    ConvDef("separable", 3, 1, 512),
    ConvDef("separable", 3, 1, 512),
    ConvDef("separable", 3, 1, 512),
    ConvDef("separable", 3, 2, 1024),
    ConvDef("separable", 3, 1, 1024),
)

VALID_OUTPUT_STRIDES = (8, 16, 32)
LOGITS_NAME = "Logits"


class LayerSpec(NamedTuple):
    """One convolution + batch norm + activation layer of the backbone."""

    name: str  # slim scope, e.g. "Conv2d_3_pointwise"
    kind: str  # "conv", "depthwise" or "pointwise"
    kernel: int
    stride: int
    dilation: int
    in_channels: int
    out_channels: int


def channels(depth: int, depth_multiplier: float, min_depth: int) -> int:
    """Slim's depth rule: ``max(int(depth * depth_multiplier), min_depth)``."""
    return max(int(depth * depth_multiplier), min_depth)


def layer_specs(
    depth_multiplier: float = 1.0,
    min_depth: int = 8,
    output_stride: int | None = None,
    in_channels: int = 3,
) -> list[LayerSpec]:
    """Expand ``CONV_DEFS`` into the 27 backbone layers (stem + 13 x depthwise/pointwise).

    With ``output_stride`` set, strides stop once the running stride reaches it and later
    depthwise layers are dilated instead, exactly as slim's ``mobilenet_v1_base``.
    """
    specs: list[LayerSpec] = []
    current_stride, rate = 1, 1
    prev = in_channels
    for i, row in enumerate(CONV_DEFS):
        if output_stride is not None and current_stride == output_stride:
            stride, dilation = 1, rate
            rate *= row.stride
        else:
            stride, dilation = row.stride, 1
            current_stride *= row.stride
        out = channels(row.depth, depth_multiplier, min_depth)
        if row.kind == "conv":
            # slim always applies the stem's own stride (output_stride >= 8 never reaches it).
            specs.append(LayerSpec(f"Conv2d_{i}", "conv", row.kernel, row.stride, 1, prev, out))
        else:
            specs.append(
                LayerSpec(f"Conv2d_{i}_depthwise", "depthwise", row.kernel, stride, dilation,
                          prev, prev)
            )
            specs.append(LayerSpec(f"Conv2d_{i}_pointwise", "pointwise", 1, 1, 1, prev, out))
        prev = out
    return specs


def hidden_state_names(specs: list[LayerSpec] | None = None) -> list[str]:
    """Names of the 26 layers whose outputs are Hugging Face's ``hidden_states`` (no stem)."""
    specs = specs or layer_specs()
    return [s.name for s in specs if s.kind != "conv"]


def layer_params(spec: LayerSpec) -> int:
    """Trainable parameters of one layer: kernel + batch-norm gamma and beta."""
    k = spec.kernel * spec.kernel
    if spec.kind == "depthwise":
        return k * spec.in_channels + 2 * spec.in_channels
    return k * spec.in_channels * spec.out_channels + 2 * spec.out_channels


def count_params(specs: list[LayerSpec], num_labels: int | None = 1001) -> int:
    """Trainable parameters of the backbone, plus the classifier when ``num_labels`` is set."""
    total = sum(layer_params(s) for s in specs)
    if num_labels:
        total += specs[-1].out_channels * num_labels + num_labels
    return total


def output_size(size: int, spec: LayerSpec, tf_padding: bool = True) -> int:
    """Spatial size after one layer: SAME (``ceil``) or symmetric pad ``k // 2`` then VALID."""
    if tf_padding:
        return math.ceil(size / spec.stride)
    pad = (spec.kernel // 2) * spec.dilation
    eff = (spec.kernel - 1) * spec.dilation + 1
    return (size + 2 * pad - eff) // spec.stride + 1


def count_macs(
    specs: list[LayerSpec], image_size: int, num_labels: int | None = None, tf_padding=True
) -> int:
    """Multiply-accumulates of the convolutions (slim's count), plus the classifier if asked."""
    h = w = image_size
    total = 0
    for s in specs:
        h, w = output_size(h, s, tf_padding), output_size(w, s, tf_padding)
        per_pixel = s.kernel * s.kernel * s.in_channels
        if s.kind != "depthwise":
            per_pixel *= s.out_channels
        total += h * w * per_pixel
    if num_labels:
        total += specs[-1].out_channels * num_labels
    return total
