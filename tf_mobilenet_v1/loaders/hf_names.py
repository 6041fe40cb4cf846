"""Hugging Face ``MobileNetV1`` file names, state-dict names and layouts, from ``layer_specs``.

One row per tensor: the PyTorch key, the Keras variable path, the PyTorch shape and the name of
a layout transform. The same rows drive export (Keras -> PyTorch) and import (PyTorch -> Keras);
each named transform has an exact inverse, so a round trip is bit-exact.

HF numbering: the stem is ``conv_stem``; ``layer.{j}`` is the j-th layer after it, so block i
(``Conv2d_i_depthwise`` / ``Conv2d_i_pointwise``) is ``layer.{2i-2}`` / ``layer.{2i-1}``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from ..architecture import LayerSpec, head_shapes, kernel_path, layer_specs, weight_shapes
from ..config import CONFIG_NAME, MODEL_TYPE  # noqa: F401 (HF names, kept with the others)

PREPROCESSOR_NAME = "preprocessor_config.json"
SAFETENSORS_NAME = "model.safetensors"
PYTORCH_NAME = "pytorch_model.bin"
# Weight files of an HF directory, in the order transformers prefers them.
WEIGHT_FILES = (SAFETENSORS_NAME, SAFETENSORS_NAME + ".index.json",
                PYTORCH_NAME, PYTORCH_NAME + ".index.json")
PREFIX = "mobilenet_v1."  # HF's base_model_prefix inside MobileNetV1ForImageClassification
CLASSIFIER = "classifier"
NUM_BATCHES_TRACKED = "num_batches_tracked"

# HF BatchNorm2d parameter -> Keras BatchNormalization variable.
BN_NAMES = (
    ("weight", "gamma"),
    ("bias", "beta"),
    ("running_mean", "moving_mean"),
    ("running_var", "moving_variance"),
)


# ----- layout transforms (each one's inverse is listed in TRANSFORMS) -----
def conv_hwio_to_oihw(k: np.ndarray) -> np.ndarray:
    """Keras Conv2D kernel (kh, kw, in, out) -> PyTorch Conv2d weight (out, in, kh, kw)."""
    return np.transpose(k, (3, 2, 0, 1))


def conv_oihw_to_hwio(w: np.ndarray) -> np.ndarray:
    """PyTorch Conv2d weight (out, in, kh, kw) -> Keras Conv2D kernel (kh, kw, in, out)."""
    return np.transpose(w, (2, 3, 1, 0))


def depthwise_hwc1_to_c1hw(k: np.ndarray) -> np.ndarray:
    """Keras DepthwiseConv2D kernel (kh, kw, C, 1) -> PyTorch grouped weight (C, 1, kh, kw)."""
    return np.transpose(k, (2, 3, 0, 1))


def depthwise_c1hw_to_hwc1(w: np.ndarray) -> np.ndarray:
    """PyTorch grouped weight (C, 1, kh, kw) -> Keras DepthwiseConv2D kernel (kh, kw, C, 1)."""
    return np.transpose(w, (2, 3, 0, 1))


def logits_conv_to_linear(k: np.ndarray) -> np.ndarray:
    """Keras 1x1 ``Logits`` kernel (1, 1, C, N) -> PyTorch Linear weight (N, C)."""
    return np.transpose(k[0, 0])


def linear_to_logits_conv(w: np.ndarray) -> np.ndarray:
    """PyTorch Linear weight (N, C) -> Keras 1x1 ``Logits`` kernel (1, 1, C, N)."""
    return np.transpose(w)[None, None]


def identity(x: np.ndarray) -> np.ndarray:
    """Vectors (batch-norm parameters, biases) have the same layout in both frameworks."""
    return x


class Transform(NamedTuple):
    to_hf: Callable[[np.ndarray], np.ndarray]
    to_keras: Callable[[np.ndarray], np.ndarray]


TRANSFORMS: dict[str, Transform] = {
    "conv": Transform(conv_hwio_to_oihw, conv_oihw_to_hwio),
    "depthwise": Transform(depthwise_hwc1_to_c1hw, depthwise_c1hw_to_hwc1),
    "linear": Transform(logits_conv_to_linear, linear_to_logits_conv),
    "identity": Transform(identity, identity),
}


class HFTensor(NamedTuple):
    """One state-dict entry. ``keras_path`` is None for ``num_batches_tracked`` (no Keras twin)."""

    hf_key: str
    keras_path: str | None
    transform: str  # key of TRANSFORMS
    hf_shape: tuple[int, ...]


def hf_module_name(index: int, spec: LayerSpec) -> str:
    """HF module of the ``index``-th entry of ``layer_specs``: ``conv_stem`` or ``layer.{i-1}``."""
    if spec.kind == "conv":
        if index != 0:
            raise ValueError(f"a full convolution is only expected as the stem, got {spec.name}")
        return "conv_stem"
    return f"layer.{index - 1}"


def _hf_shape(transform: str, keras_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The PyTorch shape a Keras shape takes under ``transform`` (on a zero-byte view)."""
    view = np.broadcast_to(np.zeros((), np.float32), keras_shape)
    return tuple(TRANSFORMS[transform].to_hf(view).shape)


_BN_KERAS_TO_HF = {keras_name: hf_name for hf_name, keras_name in BN_NAMES}


def _layer_rows(module: str, spec: LayerSpec) -> list[HFTensor]:
    rows = []
    for path, shape in weight_shapes(spec).items():
        if path == kernel_path(spec):
            transform = "depthwise" if spec.kind == "depthwise" else "conv"
            hf_key = f"{module}.convolution.weight"
        else:
            transform = "identity"
            hf_key = f"{module}.normalization.{_BN_KERAS_TO_HF[path.split('/')[-1]]}"
        rows.append(HFTensor(hf_key, f"{spec.name}/{path}", transform,
                             _hf_shape(transform, shape)))
    rows.append(HFTensor(f"{module}.normalization.{NUM_BATCHES_TRACKED}", None, "identity", ()))
    return rows


def hf_table(config, with_head: bool = True) -> list[HFTensor]:
    """All state-dict rows of HF's ``MobileNetV1ForImageClassification`` (``with_head``) or of
    the bare ``MobileNetV1Model`` (no ``mobilenet_v1.`` prefix, no classifier)."""
    prefix = PREFIX if with_head else ""
    specs = layer_specs(config)  # output_stride changes no weight shape
    rows = []
    for index, spec in enumerate(specs):
        for row in _layer_rows(hf_module_name(index, spec), spec):
            rows.append(row._replace(hf_key=prefix + row.hf_key))
    if with_head and config.num_labels:  # num_labels=0: HF's classifier is an Identity
        kernel, bias = head_shapes(specs[-1].out_channels, config.num_labels).items()
        rows.append(HFTensor(f"{CLASSIFIER}.weight", kernel[0], "linear",
                             _hf_shape("linear", kernel[1])))
        rows.append(HFTensor(f"{CLASSIFIER}.bias", bias[0], "identity", bias[1]))
    return rows
