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


# What ``layer_specs`` reads from a config, and the defaults when there is no config.
SPEC_FIELDS = {"depth_multiplier": 1.0, "min_depth": 8, "output_stride": None, "num_channels": 3}


def layer_specs(config=None, **fields) -> list[LayerSpec]:
    """Expand ``CONV_DEFS`` into the 27 backbone layers (stem + 13 x depthwise/pointwise).

    ``config`` is a ``MobileNetV1Config`` (or anything with its ``depth_multiplier``,
    ``min_depth``, ``output_stride`` and ``num_channels``); keyword ``fields`` override it.
    With ``output_stride`` set, strides stop once the running stride reaches it and later
    depthwise layers are dilated instead, exactly as slim's ``mobilenet_v1_base``.
    """
    unknown = set(fields) - set(SPEC_FIELDS)
    if unknown:
        raise TypeError(f"layer_specs got unknown fields {sorted(unknown)}; "
                        f"use {', '.join(SPEC_FIELDS)}")
    values = {k: fields.get(k, getattr(config, k, default)) for k, default in SPEC_FIELDS.items()}
    multiplier, min_depth = values["depth_multiplier"], values["min_depth"]
    output_stride = values["output_stride"]
    specs: list[LayerSpec] = []
    current_stride, rate = 1, 1
    prev = values["num_channels"]
    for i, row in enumerate(CONV_DEFS):
        if output_stride is not None and current_stride == output_stride:
            stride, dilation = 1, rate
            rate *= row.stride
        else:
            stride, dilation = row.stride, 1
            current_stride *= row.stride
        out = channels(row.depth, multiplier, min_depth)
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


BN_PARAMS = ("gamma", "beta", "moving_mean", "moving_variance")
TRAINABLE_BN_PARAMS = ("gamma", "beta")


def kernel_path(spec: LayerSpec) -> str:
    """The layer's kernel, relative to the layer: ``depthwise/kernel`` or ``conv/kernel``."""
    return "depthwise/kernel" if spec.kind == "depthwise" else "conv/kernel"


def weight_shapes(spec: LayerSpec, folded: bool = False) -> dict[str, tuple[int, ...]]:
    """Shapes of one layer's weights by path relative to the layer (Keras layouts).

    Unfolded: the kernel plus ``BatchNorm/{gamma,beta,moving_mean,moving_variance}``. With
    ``folded`` (batch norm folded into the convolution) the kernel plus a bias.
    """
    k, out = spec.kernel, spec.out_channels
    kernel = (k, k, spec.in_channels, 1) if spec.kind == "depthwise" \
        else (k, k, spec.in_channels, out)
    shapes = {kernel_path(spec): kernel}
    if folded:
        shapes[kernel_path(spec).replace("kernel", "bias")] = (out,)
    else:
        shapes.update({f"BatchNorm/{p}": (out,) for p in BN_PARAMS})
    return shapes


def head_shapes(in_channels: int, num_labels: int) -> dict[str, tuple[int, ...]]:
    """The 1x1 ``Logits`` convolution's weights by Keras path (none for ``num_labels=0``)."""
    if not num_labels:
        return {}
    return {f"{LOGITS_NAME}/kernel": (1, 1, in_channels, num_labels),
            f"{LOGITS_NAME}/bias": (num_labels,)}


def model_weight_shapes(config, head: bool = True,
                        folded: bool = False) -> dict[str, tuple[int, ...]]:
    """Keras weight path -> shape of a whole model of ``config`` (BN-folded when ``folded``)."""
    specs = layer_specs(config)
    shapes = {f"{s.name}/{path}": shape
              for s in specs for path, shape in weight_shapes(s, folded).items()}
    if head:
        shapes.update(head_shapes(specs[-1].out_channels, config.num_labels))
    return shapes


# Depth multipliers tried first when inferring one from layer widths: any value giving the same
# widths is the same network, so the published ones are preferred.
COMMON_MULTIPLIERS = (0.25, 0.5, 0.75, 1.0, 0.35, 1.25, 1.3, 1.4, 1.5, 2.0)


def infer_depth_multiplier(widths, min_depth: int | None = None) -> tuple[float, int]:
    """``(depth_multiplier, min_depth)`` giving the output ``widths`` of the 14 ``CONV_DEFS``
    rows (the stem and each pointwise layer); a given ``min_depth`` is kept fixed.

    Candidates in order: the published multipliers, the last width's ratio rounded to a few
    digits (``0.3`` rather than ``0.2998046875``), then each width's exact ratio.
    """
    widths = [int(w) for w in widths]
    depths = [row.depth for row in CONV_DEFS]
    if len(widths) != len(depths):
        raise ValueError(f"expected {len(depths)} layer widths, got {len(widths)}")
    last = widths[-1] / depths[-1]
    candidates = [*COMMON_MULTIPLIERS, *(round(last, d) for d in (2, 3, 4, 6)),
                  *sorted({w / d for w, d in zip(widths, depths, strict=True)})]
    min_depths = [min_depth] if min_depth is not None else [8, *sorted(set(widths))]
    for m in candidates:
        if m <= 0:
            continue
        for md in min_depths:
            if [channels(d, m, md) for d in depths] == widths:
                return m, md
    raise ValueError(f"no depth_multiplier/min_depth gives the layer widths {widths}; "
                     "it is not a standard MobileNet V1")


def hidden_state_names(specs: list[LayerSpec] | None = None) -> list[str]:
    """Names of the 26 layers whose outputs are Hugging Face's ``hidden_states`` (no stem)."""
    specs = specs or layer_specs()
    return [s.name for s in specs if s.kind != "conv"]


def layer_params(spec: LayerSpec) -> int:
    """Trainable parameters of one layer: kernel + batch-norm gamma and beta."""
    shapes = weight_shapes(spec)
    trainable = [kernel_path(spec), *(f"BatchNorm/{p}" for p in TRAINABLE_BN_PARAMS)]
    return sum(math.prod(shapes[p]) for p in trainable)


def count_params(specs: list[LayerSpec], num_labels: int | None = 1001) -> int:
    """Trainable parameters of the backbone, plus the classifier when ``num_labels`` is set."""
    total = sum(layer_params(s) for s in specs)
    if num_labels:
        total += sum(math.prod(v) for v in head_shapes(specs[-1].out_channels,
                                                        num_labels).values())
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
        # One multiply-accumulate per kernel element and output pixel (depthwise: k*k*C).
        total += h * w * math.prod(weight_shapes(s)[kernel_path(s)])
    if num_labels:
        total += specs[-1].out_channels * num_labels
    return total
