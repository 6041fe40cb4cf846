"""TF-slim MobileNet V1 weights: the name table, strict reading from any source, and writing.

Every name is derived from ``architecture.layer_specs``: ``MobilenetV1/<layer>/weights`` (full and
1x1 convolutions), ``MobilenetV1/<layer>/depthwise_weights``, ``MobilenetV1/<layer>/BatchNorm/
{gamma,beta,moving_mean,moving_variance}`` and ``MobilenetV1/Logits/Conv2d_1c_1x1/{weights,
biases}``. slim's tensor layouts equal Keras's, so the map to Keras weight paths is a renaming.

Sources (see :func:`read_slim`): a checkpoint prefix, a directory holding a ``checkpoint`` file,
a release tarball (``.tgz``, read without unpacking it anywhere but a temporary directory) or a
frozen GraphDef ``.pb`` whose ``Const`` nodes carry the variable names. The slim graph is never
built. Reading is strict: each model weight must be present and each tensor must be used, except
an explicit allow-list (``global_step``, ``ExponentialMovingAverage`` shadows, RMSProp/Momentum
slots, quantization ``min``/``max`` ranges).
"""

from __future__ import annotations

import dataclasses
import glob
import logging
import os
import re
import warnings

import numpy as np

from .architecture import LOGITS_NAME, channels, layer_specs
from .config import MobileNetV1Config
from .errors import first_line
from .fileio import atomic_output, check_writable

log = logging.getLogger(__name__)

SCOPE = "MobilenetV1"
LOGITS_SCOPE = f"{SCOPE}/Logits/Conv2d_1c_1x1"
BN_PARAMS = ("gamma", "beta", "moving_mean", "moving_variance")
DATA_SUFFIX = ".data-00000-of-00001"
EMA_SUFFIX = "/ExponentialMovingAverage"
SLOT_SUFFIXES = ("/RMSProp", "/RMSProp_1", "/Momentum")
# contrib.quantize keeps ranges in ``<scope>/weights_quant/min``, ``<scope>/act_quant/max`` etc.
_QUANT_RANGE = re.compile(r"(?:^|/)([^/]*quant[^/]*)/(min|max)$", re.IGNORECASE)
_VARIANT = re.compile(r"mobilenet_v1_(\d+(?:\.\d+)?)_(\d+)", re.IGNORECASE)
SOURCE_FORMS = ("a checkpoint prefix, a directory with a 'checkpoint' file, a release .tgz or a "
                "frozen_graph.pb")


# ----- the name table -----
def slim_name_map(specs=None, head: bool = True) -> dict[str, str]:
    """Slim variable name -> Keras weight path (``Conv2d_0/conv/kernel``), from ``layer_specs``."""
    specs = specs or layer_specs()
    names = {}
    for s in specs:
        kernel, sub = ("depthwise_weights", "depthwise") if s.kind == "depthwise" \
            else ("weights", "conv")
        names[f"{SCOPE}/{s.name}/{kernel}"] = f"{s.name}/{sub}/kernel"
        for p in BN_PARAMS:
            names[f"{SCOPE}/{s.name}/BatchNorm/{p}"] = f"{s.name}/BatchNorm/{p}"
    if head:
        names[f"{LOGITS_SCOPE}/weights"] = f"{LOGITS_NAME}/kernel"
        names[f"{LOGITS_SCOPE}/biases"] = f"{LOGITS_NAME}/bias"
    return names


def keras_weight_shapes(config: MobileNetV1Config, head: bool = True,
                        fused: bool = False) -> dict[str, tuple[int, ...]]:
    """Keras weight path -> shape for ``config`` (BN-folded layout when ``fused``)."""
    specs = layer_specs(config.depth_multiplier, config.min_depth, config.output_stride,
                        config.num_channels)
    shapes: dict[str, tuple[int, ...]] = {}
    for s in specs:
        k = s.kernel
        if s.kind == "depthwise":
            shapes[f"{s.name}/depthwise/kernel"] = (k, k, s.in_channels, 1)
            out, sub = s.in_channels, "depthwise"
        else:
            shapes[f"{s.name}/conv/kernel"] = (k, k, s.in_channels, s.out_channels)
            out, sub = s.out_channels, "conv"
        if fused:
            shapes[f"{s.name}/{sub}/bias"] = (out,)
        else:
            for p in BN_PARAMS:
                shapes[f"{s.name}/BatchNorm/{p}"] = (out,)
    if head:
        shapes[f"{LOGITS_NAME}/kernel"] = (1, 1, specs[-1].out_channels, config.num_labels)
        shapes[f"{LOGITS_NAME}/bias"] = (config.num_labels,)
    return shapes


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


def variant_from_path(path: str) -> tuple[float, int] | None:
    """``(alpha, resolution)`` from the last path part named like ``mobilenet_v1_0.5_160``."""
    for part in reversed(re.split(r"[\\/]", os.fspath(path))):
        m = _VARIANT.search(part)
        if m:
            return float(m.group(1)), int(m.group(2))
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


def read_checkpoint(prefix: str) -> dict[str, np.ndarray]:
    """Every tensor of a TF (V1 or V2 format) checkpoint ``prefix``, read into memory."""
    import tensorflow as tf

    try:
        reader = tf.train.load_checkpoint(prefix)
        return {name: np.asarray(reader.get_tensor(name))
                for name in sorted(reader.get_variable_to_shape_map())}
    except tf.errors.NotFoundError:
        raise FileNotFoundError(
            f"no checkpoint at {prefix} (expected {prefix}.index and {prefix}{DATA_SUFFIX}); "
            f"pass {SOURCE_FORMS}"
        ) from None
    except (tf.errors.OpError, IndexError, ValueError, OSError) as e:
        first = first_line(e)
        raise ValueError(
            f"checkpoint {prefix} is unreadable ({first}); its .index or .data file is "
            "truncated or corrupt, so copy or download it again"
        ) from None


def checkpoint_prefix_in_dir(directory: str) -> str:
    """The prefix a directory's ``checkpoint`` file names (or its only ``*.index`` file)."""
    import tensorflow as tf

    if os.path.isfile(os.path.join(directory, "checkpoint")):
        prefix = tf.train.latest_checkpoint(directory)
        if prefix is None:
            raise FileNotFoundError(
                f"{directory}/checkpoint names a checkpoint whose files are missing; pass the "
                "checkpoint prefix (path/model.ckpt) directly"
            )
        return prefix
    indexes = sorted(glob.glob(os.path.join(glob.escape(directory), "*.index")))
    if len(indexes) == 1:
        return indexes[0][: -len(".index")]
    found = "several checkpoints" if indexes else "no checkpoint"
    raise FileNotFoundError(
        f"{directory} holds {found} and no 'checkpoint' file; pass a checkpoint prefix "
        "(path/model.ckpt), a .tgz or a frozen .pb"
    )


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
        if not np.issubdtype(value.dtype, np.floating):
            raise ValueError(f"{name} in {source} has dtype {value.dtype}, expected float")
        value = value.astype(np.float32, copy=False)
        if not np.isfinite(value).all():
            raise ValueError(f"{name} in {source} holds NaN or infinite values; the checkpoint "
                             "is corrupt or from a diverged training run")
        tensors[name] = value
    if use_ema and not ema_used:
        warnings.warn(f"use_ema=True but {source} has no ExponentialMovingAverage shadows; "
                      "loaded the raw weights", stacklevel=3)
    hint = variant_from_path(source)
    result = SlimTensors(
        tensors, source,
        resolution=hint[1] if hint else resolution,
        alpha_hint=hint[0] if hint else None,
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


def _infer_depth_multiplier(out_channels: int, min_depth: int) -> float:
    """The simplest multiplier whose last layer has ``out_channels`` (slim's depth rule)."""
    base = layer_specs()[-1].out_channels  # 1024 at multiplier 1
    for digits in (2, 3, 4, 6):
        dm = round(out_channels / base, digits)
        if dm > 0 and channels(base, dm, min_depth) == out_channels:
            return dm
    return out_channels / base


def infer_config(weights: SlimTensors, **overrides) -> MobileNetV1Config:
    """Config from shapes: depth multiplier, classes, input channels; resolution from names."""
    stem = weights.tensors[f"{SCOPE}/Conv2d_0/weights"]
    last = layer_specs()[-1].name
    out = weights.tensors[f"{SCOPE}/{last}/weights"].shape[-1]
    min_depth = overrides.get("min_depth", MobileNetV1Config.min_depth)
    fields = {"depth_multiplier": _infer_depth_multiplier(int(out), min_depth),
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


# ----- writing -----
def save_slim_checkpoint(model, dst: str, force: bool = False) -> str:
    """Write ``model``'s weights as a TF-slim checkpoint with the original names.

    ``dst`` is the checkpoint prefix (``out.ckpt`` -> ``out.ckpt.index`` and
    ``out.ckpt.data-00000-of-00001``). A ``global_step`` of 0 is added because slim's eval
    scripts restore it. Returns ``dst``.
    """
    import tensorflow as tf

    dst = os.fspath(dst)
    if dst.endswith(".index"):
        dst = dst[: -len(".index")]
    if getattr(model, "fuse_batchnorm", False):
        raise ValueError("cannot write a slim checkpoint from a batch-norm-folded model; "
                         "save the model before calling fused()")
    by_path = {v.path: v for v in model.weights}
    head = f"{LOGITS_NAME}/kernel" in by_path
    table = slim_name_map(head=head)
    missing = [k for k in table.values() if k not in by_path]
    extra = [p for p in by_path if p not in set(table.values())]
    if missing or extra:
        raise ValueError(
            "model is not a complete MobileNet V1 "
            f"({'missing ' + missing[0] if missing else 'extra weight ' + extra[0]}); "
            "slim checkpoints hold the full backbone, so save a model built without "
            "feature_layers"
        )
    names = sorted(table) + ["global_step"]
    values = [np.asarray(by_path[table[n]].numpy(), np.float32) for n in sorted(table)]
    values.append(np.zeros((), np.int64))
    index_dst, data_dst = dst + ".index", dst + DATA_SUFFIX
    for path in (index_dst, data_dst):
        check_writable(path, force)
    # The data file is moved into place before the index, so a reader never finds an index
    # without its data; on any failure both temporaries are removed.
    with atomic_output(index_dst, force, suffix=".index") as index_tmp, \
            atomic_output(data_dst, force, suffix=DATA_SUFFIX) as data_tmp:
        prefix = index_tmp[: -len(".index")]
        with tf.device("/CPU:0"):
            tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names,
                              shape_and_slices=[""] * len(names),
                              tensors=[tf.constant(v) for v in values])
        os.replace(prefix + DATA_SUFFIX, data_tmp)
    return dst
