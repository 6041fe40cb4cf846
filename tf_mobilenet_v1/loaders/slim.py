"""TF-slim MobileNet V1 weights: the name table and strict reading from any slim source.

Every name is derived from ``architecture.layer_specs`` and ``weight_shapes``:
``MobilenetV1/<layer>/weights`` (full and 1x1 convolutions), ``MobilenetV1/<layer>/
depthwise_weights``, ``MobilenetV1/<layer>/BatchNorm/{gamma,beta,moving_mean,moving_variance}``
and ``MobilenetV1/Logits/Conv2d_1c_1x1/{weights,biases}``. slim's tensor layouts equal Keras's,
so the map to Keras weight paths is a renaming. ``converters.slim`` writes the same names.

Sources (see :func:`read_slim`): a checkpoint prefix, a directory holding a ``checkpoint`` file,
a release tarball (``.tgz``, read without unpacking it anywhere but a temporary directory) or a
frozen GraphDef ``.pb`` whose ``Const`` nodes carry the variable names. The slim graph is never
built. Reading is strict: each model weight must be present and each tensor must be used, except
an explicit allow-list (``global_step``, ``ExponentialMovingAverage`` shadows, RMSProp/Momentum
slots, quantization ``min``/``max`` ranges).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import warnings

import numpy as np

from ..architecture import (
    LOGITS_NAME,
    infer_depth_multiplier,
    kernel_path,
    layer_specs,
    weight_shapes,
)
from ..config import MobileNetV1Config
from ..fileio import MAX_WEIGHTS_BYTES, check_regular_file
from ..variants import variant_in_path
from .source import tensor_problem
from .tf_checkpoint import DATA_SUFFIX, SOURCE_FORMS, checkpoint_prefix_in_dir, read_checkpoint

log = logging.getLogger(__name__)

SCOPE = "MobilenetV1"
LOGITS_SCOPE = f"{SCOPE}/Logits/Conv2d_1c_1x1"
_SLIM_KERNEL = {"conv": "weights", "pointwise": "weights", "depthwise": "depthwise_weights"}
EMA_SUFFIX = "/ExponentialMovingAverage"
SLOT_SUFFIXES = ("/RMSProp", "/RMSProp_1", "/Momentum")
# contrib.quantize keeps ranges in ``<scope>/weights_quant/min``, ``<scope>/act_quant/max`` etc.
_QUANT_RANGE = re.compile(r"(?:^|/)([^/]*quant[^/]*)/(min|max)$", re.IGNORECASE)


# ----- the name table -----
def slim_name_map(specs=None, head: bool = True) -> dict[str, str]:
    """Slim variable name -> Keras weight path (``Conv2d_0/conv/kernel``), from ``layer_specs``.

    The Keras paths are ``weight_shapes``' keys under the layer's slim scope; only the kernel's
    last name part differs (slim's ``weights`` / ``depthwise_weights``).
    """
    specs = specs or layer_specs()
    names = {}
    for s in specs:
        for path in weight_shapes(s):
            slim = _SLIM_KERNEL[s.kind] if path == kernel_path(s) else path
            names[f"{SCOPE}/{s.name}/{slim}"] = f"{s.name}/{path}"
    if head:
        names[f"{LOGITS_SCOPE}/weights"] = f"{LOGITS_NAME}/kernel"
        names[f"{LOGITS_SCOPE}/biases"] = f"{LOGITS_NAME}/bias"
    return names


def allowed_reason(name: str) -> str | None:
    """Why an unused tensor may be skipped (``None``: it may not)."""
    if name == "global_step":
        return "global step"
    if name.endswith(EMA_SUFFIX):
        return "moving-average shadow"
    if name.endswith(SLOT_SUFFIXES):
        return "optimizer slot"
    if _QUANT_RANGE.search(name):
        return "quantization range"
    return None


# ----- reading -----
@dataclasses.dataclass
class SlimTensors:
    """The MobileNet V1 weights found in a slim source, after the strict name check."""

    tensors: dict[str, np.ndarray]  # slim name -> float32 array (EMA shadow when chosen)
    source: str
    resolution: int | None = None  # from the file name or the graph's input placeholder
    alpha_hint: float | None = None  # depth multiplier named by the file name
    quant_ranges: dict[str, tuple[float, float]] = dataclasses.field(default_factory=dict)
    ignored: dict[str, str] = dataclasses.field(default_factory=dict)  # name -> reason
    ema_used: list[str] = dataclasses.field(default_factory=list)

    @property
    def has_head(self) -> bool:
        return f"{LOGITS_SCOPE}/weights" in self.tensors

    def infer_config(self, **overrides) -> MobileNetV1Config:
        """Config from tensor shapes (depth multiplier, classes, channels) and the file name."""
        return infer_config(self, **overrides)

    def keras_weights(self) -> dict[str, np.ndarray]:
        """The tensors keyed by Keras weight path."""
        table = slim_name_map(head=self.has_head)
        return {table[n]: a for n, a in self.tensors.items()}


def read_raw(src: str) -> tuple[dict[str, np.ndarray], int | None, str]:
    """All tensors of a slim source, a resolution hint (or ``None``) and a description."""
    path = os.fspath(src)
    if os.path.isdir(path):
        prefix = checkpoint_prefix_in_dir(path)
        return read_checkpoint(prefix), None, prefix
    if path.endswith((".index", DATA_SUFFIX)) and os.path.isfile(path):
        path = path[: path.rindex(".index" if path.endswith(".index") else ".data-")]
    if os.path.isfile(path + ".index"):
        return read_checkpoint(path), None, path
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} does not exist; pass {SOURCE_FORMS}")
    if path.endswith((".tgz", ".tar.gz", ".tar")):
        from .tarball import read_tarball

        return read_tarball(path)
    if path.endswith(".pb"):
        from .frozen_graph import read_frozen_graph

        check_regular_file(path, "frozen graph", MAX_WEIGHTS_BYTES)
        with open(path, "rb") as f:
            tensors, resolution = read_frozen_graph(f.read(), path)
        return tensors, resolution, path
    raise ValueError(f"cannot tell what {path} is; pass {SOURCE_FORMS}")


def select_weights(raw: dict[str, np.ndarray], source: str, use_ema: bool = False,
                   resolution: int | None = None) -> SlimTensors:
    """Apply the strict name check to ``raw`` tensors and pick MobileNet V1's weights."""
    table = slim_name_map(head=True)
    stem = f"{SCOPE}/Conv2d_0/weights"
    if stem not in raw:
        sample = ", ".join(sorted(raw)[:3]) or "nothing"
        hint = " (batch-norm-folded or 8-bit graphs such as quantized_graph.pb cannot be " \
               "read; use frozen_graph.pb or the checkpoint)" if source.endswith(".pb") else ""
        raise ValueError(
            f"{source} is not a TF-slim MobileNet V1 model: it has no {stem} "
            f"(it holds {sample}){hint}"
        )
    ignored = {n: r for n in raw if n not in table for r in [allowed_reason(n)] if r}
    unexpected = sorted(n for n in raw if n not in table and n not in ignored)
    if unexpected:
        raise ValueError(
            f"{source} has {len(unexpected)} tensor(s) that MobileNet V1 does not use, e.g. "
            f"{', '.join(unexpected[:3])}; it is another architecture or a modified model"
        )
    head = [n for n in table if n.startswith(LOGITS_SCOPE)]
    wanted = [n for n in table if n not in head]
    if any(n in raw for n in head):
        wanted += head  # a head must be complete; no head at all is a backbone checkpoint
    missing = [n for n in wanted if n not in raw]
    if missing:
        raise ValueError(
            f"{source} lacks {len(missing)} MobileNet V1 tensor(s), e.g. "
            f"{', '.join(missing[:3])}; it is incomplete or another architecture"
        )
    tensors, ema_used = {}, []
    for name in wanted:
        value = raw.get(name + EMA_SUFFIX) if use_ema else None
        if value is not None:
            ema_used.append(name)
        else:
            value = raw[name]
        problem = tensor_problem(value)
        if problem:
            raise ValueError(f"{name} in {source} {problem}")
        tensors[name] = value.astype(np.float32, copy=False)
    if use_ema and not ema_used:
        warnings.warn(f"use_ema=True but {source} has no ExponentialMovingAverage shadows; "
                      "loaded the raw weights", stacklevel=3)
    hint = variant_in_path(source)
    result = SlimTensors(
        tensors, source,
        resolution=hint.resolution if hint else resolution,
        alpha_hint=hint.depth_multiplier if hint else None,
        quant_ranges=_quant_ranges(raw, ignored),
        ignored=ignored,
        ema_used=ema_used,
    )
    if result.quant_ranges:
        log.info("%s is quantization-aware: loaded its float weights; %d quantization ranges "
                 "are kept in .quant_ranges", source, len(result.quant_ranges))
    return result


def _quant_ranges(raw, ignored) -> dict[str, tuple[float, float]]:
    """``{scope: (min, max)}`` for each ``<scope>/{min,max}`` quantization pair."""
    pairs: dict[str, dict[str, float]] = {}
    for name, reason in ignored.items():
        if reason == "quantization range" and not name.endswith(EMA_SUFFIX):
            scope, bound = name.rsplit("/", 1)
            pairs.setdefault(scope, {})[bound] = float(np.asarray(raw[name]).reshape(-1)[0])
    return {s: (b["min"], b["max"]) for s, b in sorted(pairs.items()) if len(b) == 2}


def read_slim(src: str, use_ema: bool = False) -> SlimTensors:
    """Read MobileNet V1 weights strictly from ``src`` (any slim source form)."""
    raw, resolution, source = read_raw(src)
    return select_weights(raw, source, use_ema=use_ema, resolution=resolution)



def infer_config(weights: SlimTensors, **overrides) -> MobileNetV1Config:
    """Config from shapes: depth multiplier, classes, input channels; resolution from names."""
    specs = layer_specs()  # only the names are used; widths come from the tensors
    stem = weights.tensors[f"{SCOPE}/{specs[0].name}/weights"]
    widths = [weights.tensors[f"{SCOPE}/{s.name}/weights"].shape[-1]
              for s in specs if s.kind != "depthwise"]
    multiplier, min_depth = infer_depth_multiplier(widths, overrides.get("min_depth"))
    fields = {"depth_multiplier": multiplier, "min_depth": min_depth,
              "num_channels": int(stem.shape[2])}
    if weights.has_head:
        fields["num_labels"] = int(weights.tensors[f"{LOGITS_SCOPE}/biases"].shape[0])
    if weights.resolution:
        fields["image_size"] = int(weights.resolution)
    if weights.alpha_hint is not None and weights.alpha_hint != fields["depth_multiplier"]:
        warnings.warn(
            f"{weights.source} is named for depth multiplier {weights.alpha_hint:g} but its "
            f"tensors hold {fields['depth_multiplier']:g}; using the tensors", stacklevel=3)
    return MobileNetV1Config(**{**fields, **overrides})


def slim_source(path: str, use_ema: bool, overrides: dict):
    """The TF-slim forms' reader (``formats``: checkpoint, release tarball, frozen graph)."""
    from .source import WeightSource

    sw = read_slim(path, use_ema=use_ema)
    inverse = {v: k for k, v in slim_name_map(head=sw.has_head).items()}
    weights = sw.keras_weights()
    return WeightSource(sw.infer_config(), weights, sw.source,
                        names={p: inverse[p] for p in weights},
                        quant_ranges=dict(sw.quant_ranges))
