"""Keras <-> Hugging Face (PyTorch) MobileNet V1 weights, exact in both directions.

Export writes a directory that ``transformers.MobileNetV1ForImageClassification.from_pretrained``
loads (``config.json``, ``preprocessor_config.json``, ``model.safetensors``), or a bare
``.safetensors`` / ``.bin`` state dict. Import reads those, or an in-memory dict of numpy or
torch tensors. Names and layouts come from ``converters.hf_names`` (derived from the
architecture table). torch is only needed for ``.bin`` files.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle  # only for its exception type; files are read by torch.load(weights_only)
import warnings
from collections.abc import Mapping

import numpy as np

from tf_mobilenet_v1.architecture import CONV_DEFS, channels, layer_specs
from tf_mobilenet_v1.config import MobileNetV1Config
from tf_mobilenet_v1.errors import first_line
from tf_mobilenet_v1.fileio import atomic_output, read_json_object
from tf_mobilenet_v1.models import MobileNetV1ForImageClassification, MobileNetV1Model

from .hf_names import (
    CLASSIFIER,
    NUM_BATCHES_TRACKED,
    PREFIX,
    TRANSFORMS,
    HFTensor,
    hf_table,
)

MODEL_TYPE = "mobilenet_v1"
CONFIG_NAME = "config.json"
PREPROCESSOR_NAME = "preprocessor_config.json"
SAFETENSORS_NAME = "model.safetensors"
PYTORCH_NAME = "pytorch_model.bin"
# Weight files of an HF directory, in the order transformers prefers them.
WEIGHT_FILES = (SAFETENSORS_NAME, SAFETENSORS_NAME + ".index.json",
                PYTORCH_NAME, PYTORCH_NAME + ".index.json")
# Depth multipliers tried first when inferring a config (any value giving the same widths is
# the same network, so prefer the published ones).
_COMMON_MULTIPLIERS = (0.25, 0.5, 0.75, 1.0, 0.35, 1.25, 1.3, 1.4, 1.5, 2.0)


# ----- helpers -----
def _import_torch():
    try:
        import torch
    except ImportError:
        raise ImportError(
            "PyTorch .bin files need torch; pip install torch (or use .safetensors)"
        ) from None
    return torch


def _has_head(model) -> bool:
    if isinstance(model, MobileNetV1ForImageClassification):
        return True
    if isinstance(model, MobileNetV1Model):
        return False
    raise TypeError(
        f"expected a tf_mobilenet_v1 MobileNetV1Model or MobileNetV1ForImageClassification, "
        f"got {type(model).__name__}"
    )


def _check_unfused(model):
    if getattr(model, "fuse_batchnorm", False):
        raise ValueError(
            "this model has batch norm folded into its convolutions, which Hugging Face's "
            "MobileNetV1 cannot hold; convert the unfused model instead"
        )


def _shape(x) -> tuple[int, ...]:
    return tuple(int(d) for d in x.shape)


def _to_numpy(value, key: str, source: str = "state dict") -> np.ndarray:
    """numpy array from a numpy array or a torch tensor (bfloat16 widened, exactly, to float32)."""
    if isinstance(value, np.ndarray):
        if value.dtype.name == "bfloat16":  # ml_dtypes' numpy bfloat16 (TensorFlow loads it)
            return value.astype(np.float32)
        return value
    if hasattr(value, "detach") and hasattr(value, "numpy"):  # torch.Tensor, without torch
        t = value.detach().cpu()
        if str(t.dtype) == "torch.bfloat16":
            t = t.float()  # numpy has no bfloat16; widening to float32 is exact
        return t.numpy()
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return np.asarray(value)
    raise ValueError(
        f"{source} entry {key!r} is a {type(value).__name__}, not a tensor; pass a flat "
        "mapping of names to numpy arrays or torch tensors"
    )


def _numpy_state_dict(state_dict, source: str = "state dict") -> dict[str, np.ndarray]:
    if not isinstance(state_dict, Mapping):
        raise ValueError(
            f"expected a state dict (a mapping of names to tensors), got "
            f"{type(state_dict).__name__}"
        )
    return {str(k): _to_numpy(v, str(k), source) for k, v in state_dict.items()}


# ----- Keras -> state dict -----
def keras_to_state_dict(model) -> dict[str, np.ndarray]:
    """HF state dict (PyTorch names and layouts, numpy arrays) of one of our Keras models.

    A ``MobileNetV1ForImageClassification`` gives ``mobilenet_v1.*`` + ``classifier.*`` keys; a
    ``MobileNetV1Model`` gives the bare backbone keys. ``num_batches_tracked`` is int64 0.
    """
    with_head = _has_head(model)
    _check_unfused(model)
    variables = {v.path: v for v in model.weights}
    state_dict: dict[str, np.ndarray] = {}
    used = set()
    for row in hf_table(model.config, with_head):
        if row.keras_path is None:
            state_dict[row.hf_key] = np.zeros((), np.int64)
            continue
        var = variables.get(row.keras_path)
        if var is None:
            raise ValueError(
                f"the model has no variable {row.keras_path} (needed for {row.hf_key}); only "
                "complete MobileNetV1Model / MobileNetV1ForImageClassification models convert"
            )
        used.add(row.keras_path)
        # np.array copies: torch.from_numpy and safetensors want writable C-contiguous arrays.
        value = np.array(TRANSFORMS[row.transform].to_hf(np.asarray(var.numpy())), order="C")
        if _shape(value) != row.hf_shape:
            raise ValueError(
                f"{row.keras_path} has shape {_shape(var)}, which does not give "
                f"{row.hf_key} {row.hf_shape}; the model does not match its config"
            )
        state_dict[row.hf_key] = value
    unused = sorted(set(variables) - used)
    if unused:
        raise ValueError(f"model variables with no Hugging Face name: {', '.join(unused)}")
    return state_dict


# ----- state dict -> Keras -----
@dataclasses.dataclass
class LoadReport:
    """What ``state_dict_to_keras`` did: every key is accounted for in exactly one list."""

    loaded: list[str] = dataclasses.field(default_factory=list)
    ignored: list[str] = dataclasses.field(default_factory=list)  # num_batches_tracked
    dropped: list[str] = dataclasses.field(default_factory=list)  # head not in the model
    left_at_init: list[str] = dataclasses.field(default_factory=list)  # Keras paths

    def __str__(self) -> str:
        lines = [f"loaded {len(self.loaded)} tensors"]
        if self.ignored:
            lines.append(f"ignored {len(self.ignored)} num_batches_tracked counters")
        if self.dropped:
            lines.append(f"dropped (not in the model): {', '.join(self.dropped)}")
        if self.left_at_init:
            lines.append(f"left at initialization: {', '.join(self.left_at_init)}")
        return "; ".join(lines)


class StateDictMismatchError(ValueError):
    """The state dict does not fit the model; ``missing``/``unexpected``/``mismatched`` say how.

    ``mismatched`` holds ``(key, explanation)`` pairs.
    """

    def __init__(self, target: str, missing, unexpected, mismatched,
                 source: str = "state dict"):
        self.missing, self.unexpected, self.mismatched = missing, unexpected, mismatched
        if mismatched:
            first = mismatched[0][1]
        elif missing:
            first = f"{missing[0]} is missing from the state dict"
        else:
            first = f"{unexpected[0]} has no place in the model"
        summary = (
            f"{source} does not match the {target}: {first} ({len(mismatched)} mismatched, "
            f"{len(missing)} missing, {len(unexpected)} unexpected keys; check that the "
            "weights and the config are of the same variant)"
        )
        lines = [summary]
        lines += [f"  mismatched {why}" for _, why in mismatched]
        lines += [f"  missing    {k}" for k in missing]
        lines += [f"  unexpected {k}" for k in unexpected]
        super().__init__("\n".join(lines))


def _describe(model) -> str:
    cfg = model.config
    if _has_head(model):
        return f"{cfg.variant} classifier ({cfg.num_labels} labels)"
    return f"{cfg.variant} backbone"


def state_dict_to_keras(state_dict, model, source: str = "state dict") -> LoadReport:
    """Load an HF state dict into one of our Keras models, strictly and bit-exactly.

    Every tensor must be used and every model variable set, with the right shape, except:
    ``num_batches_tracked`` is ignored; a classification state dict loaded into a
    ``MobileNetV1Model`` drops ``classifier.*`` (with a warning); a bare backbone state dict
    loaded into the classifier leaves ``Logits`` at its initialization (with a warning).
    Nothing is assigned unless everything matches (``StateDictMismatchError``, a ValueError).
    """
    sd = _numpy_state_dict(state_dict, source)
    with_head = _has_head(model)
    _check_unfused(model)
    src_prefixed = any(k.startswith(PREFIX) for k in sd)
    rows = hf_table(model.config, with_head=src_prefixed)
    report = LoadReport()
    if src_prefixed and not with_head:
        head = [k for k in sd if k.startswith(CLASSIFIER + ".")]
        rows = [r for r in rows if not r.hf_key.startswith(CLASSIFIER + ".")]
        report.dropped = sorted(head)
    expected: dict[str, HFTensor] = {r.hf_key: r for r in rows}

    missing, mismatched, values = [], [], {}
    for key, row in expected.items():
        if row.keras_path is None:
            continue  # num_batches_tracked: optional, never read
        if key not in sd:
            missing.append(key)
            continue
        arr = sd[key]
        if _shape(arr) != row.hf_shape:
            mismatched.append((key, f"{key} has shape {_shape(arr)} in the state dict but the "
                                    f"model needs {row.hf_shape}"))
        elif not np.issubdtype(arr.dtype, np.floating):
            mismatched.append((key, f"{key} is {arr.dtype}, not a floating-point tensor"))
        elif not np.isfinite(arr.astype(np.float32)).all():  # also catches float32 overflow
            mismatched.append((key, f"{key} holds NaN or infinite values (a diverged or "
                                    "corrupt checkpoint)"))
        else:
            values[row.keras_path] = TRANSFORMS[row.transform].to_keras(arr)
    unexpected = [k for k in sd if k not in expected and k not in report.dropped]
    if missing or mismatched or unexpected:
        raise StateDictMismatchError(_describe(model), missing, unexpected, mismatched,
                                     source=source)

    variables = {v.path: v for v in model.weights}
    not_set = sorted(set(variables) - set(values))
    if not_set and not (with_head and not src_prefixed):
        raise ValueError(f"{source} does not set the model variables {', '.join(not_set)}")
    for path, value in values.items():
        var = variables[path]
        var.assign(value.astype(var.dtype))
    report.loaded = sorted(k for k, r in expected.items() if r.keras_path is not None)
    report.ignored = sorted(k for k in sd if k.endswith("." + NUM_BATCHES_TRACKED)
                            and k in expected)
    report.left_at_init = not_set
    if report.dropped:
        warnings.warn(f"{source}: the model has no classifier, so "
                      f"{', '.join(report.dropped)} were not loaded", stacklevel=2)
    if report.left_at_init:
        warnings.warn(f"{source} holds only the backbone; the classifier "
                      f"({', '.join(not_set)}) keeps its random initialization", stacklevel=2)
    return report


# ----- config inference -----
def infer_config(state_dict, **overrides) -> MobileNetV1Config:
    """A config whose weight shapes match ``state_dict`` (numpy or torch tensors, or shapes).

    Shapes fix ``num_channels``, ``depth_multiplier`` (the published value when one fits),
    ``min_depth`` and ``num_labels``; the rest (``tf_padding``, ``image_size``, ``hidden_act``,
    ``layer_norm_eps``...) cannot be seen in weights and take the defaults unless overridden.
    """
    shapes = {str(k): _shape(v) if hasattr(v, "shape") else tuple(v)
              for k, v in state_dict.items()}
    prefix = PREFIX if any(k.startswith(PREFIX) for k in shapes) else ""
    stem_key = f"{prefix}conv_stem.convolution.weight"
    if stem_key not in shapes or len(shapes[stem_key]) != 4:
        raise ValueError(
            f"not a Hugging Face MobileNet V1 state dict: no 4-D {stem_key} among its "
            f"{len(shapes)} keys"
        )
    specs = layer_specs()  # only the layer kinds are used; widths come from the shapes
    outs = [shapes[stem_key][0]]
    for j in range(len(specs) - 1):
        key = f"{prefix}layer.{j}.convolution.weight"
        if key not in shapes or len(shapes[key]) != 4:
            raise ValueError(f"not a MobileNet V1 state dict: {key} is missing or not 4-D")
        outs.append(shapes[key][0])
    fields = {"num_channels": shapes[stem_key][1]}
    head = shapes.get(f"{CLASSIFIER}.weight")
    if prefix and head is not None and len(head) == 2:
        fields["num_labels"] = head[0]
    fields.update(overrides)

    if "depth_multiplier" in overrides:
        # The caller chose the variant: the strict loader reports any shape that disagrees.
        return MobileNetV1Config(**fields)
    # Pointwise widths (one per CONV_DEFS row) fix depth_multiplier and min_depth.
    widths = [out for out, spec in zip(outs, specs, strict=True) if spec.kind != "depthwise"]
    depths = [row.depth for row in CONV_DEFS]
    ratios = sorted({w / d for w, d in zip(widths, depths, strict=True)})
    min_depths = [overrides["min_depth"]] if "min_depth" in overrides \
        else [8, *sorted(set(widths))]
    for m in [*_COMMON_MULTIPLIERS, *ratios]:
        for md in min_depths:
            if [channels(d, m, md) for d in depths] == widths:
                # Depthwise widths and kernel sizes are then checked by the strict loader.
                return MobileNetV1Config(**{**fields, "depth_multiplier": m, "min_depth": md})
    raise ValueError(
        f"no depth_multiplier/min_depth gives the layer widths {widths} of this state dict; "
        "it is not a standard MobileNet V1"
    )


# ----- reading HF files -----
def _load_safetensors(path: str) -> dict:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        return load_file(path)
    except SafetensorError as e:
        raise ValueError(f"cannot read {path} as safetensors: {e}") from None
    except TypeError as e:
        if "bfloat16" not in str(e):
            raise ValueError(f"cannot read {path} as safetensors: {e}") from None
    # numpy has no bfloat16: read through torch, then widen exactly to float32 (_to_numpy).
    try:
        from safetensors.torch import load_file as load_torch
    except ImportError:
        raise ImportError(f"{path} holds bfloat16 tensors, which need torch to read; "
                          "pip install torch") from None
    return load_torch(path)


def _load_bin(path: str) -> dict:
    torch = _import_torch()
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such file: {path}")
    # weights_only=True: a .bin is a pickle, and only plain tensors may come out of it.
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ValueError(
            f"{path} is not a plain PyTorch state dict (it is corrupt or holds Python objects "
            "besides tensors, which torch.load(weights_only=True) refuses); re-save it as "
            "safetensors"
        ) from None
    except Exception as e:  # noqa: BLE001 - malformed bytes raise EOFError, KeyError, OSError...
        first = first_line(e)
        raise ValueError(f"cannot read {path} as a PyTorch state dict ({first}); it is "
                         "truncated or corrupt") from None
    if not isinstance(data, Mapping):
        raise ValueError(f"{path} holds a {type(data).__name__}, not a state dict")
    return dict(data)


def _shard_files(index_path: str) -> list[str]:
    """The shard files a ``*.index.json`` names, each a plain file name in its directory."""
    try:
        with open(index_path, encoding="utf-8") as f:
            weight_map = json.load(f).get("weight_map")
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError) as e:
        raise ValueError(f"cannot read {index_path} as a sharded-weights index: {e}") from None
    if not isinstance(weight_map, dict) or not weight_map \
            or not all(isinstance(v, str) for v in weight_map.values()):
        raise ValueError(f"{index_path} has no weight_map of tensor names to shard files")
    shards = sorted(set(weight_map.values()))
    for shard in shards:
        # A shard is a sibling file; an index must not point the reader anywhere else.
        if shard != os.path.basename(shard) or shard in ("", ".", "..") \
                or not shard.endswith((".safetensors", ".bin")):
            raise ValueError(f"{index_path} names the shard {shard!r}; shards must be "
                             ".safetensors or .bin files in the same directory")
    return [os.path.join(os.path.dirname(index_path), shard) for shard in shards]


def _load_weights_file(path: str) -> dict:
    if path.endswith(".index.json"):
        merged = {}
        for shard in _shard_files(path):
            merged.update(_load_weights_file(shard))
        return merged
    if path.endswith(".safetensors"):
        return _load_safetensors(path)
    return _load_bin(path)


def _weights_file(path: str) -> str:
    """The weights file of an HF directory (the first of ``WEIGHT_FILES`` present), or ``path``."""
    if not os.path.isdir(path):
        return path
    found = next((os.path.join(path, n) for n in WEIGHT_FILES
                  if os.path.isfile(os.path.join(path, n))), None)
    if found is None:
        raise FileNotFoundError(
            f"{path} is not a Hugging Face model directory: it has none of "
            f"{', '.join(WEIGHT_FILES)}"
        )
    return found


def tensor_names(path: str) -> list[str]:
    """Tensor names of an HF directory or weights file; ``.safetensors`` reads the header only."""
    path = _weights_file(os.fspath(path))
    if path.endswith(".index.json"):
        _shard_files(path)  # validates the index
        with open(path, encoding="utf-8") as f:
            return list(json.load(f)["weight_map"])
    if path.endswith(".safetensors"):
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(path, framework="numpy") as f:
                return list(f.keys())
        except (SafetensorError, OSError) as e:
            raise ValueError(f"cannot read {path} as safetensors: {e}") from None
    return [str(k) for k in _load_bin(path)]


def has_classifier(path: str) -> bool:
    """Whether an HF directory or weights file holds ``classifier.weight``."""
    return any(k.endswith(f"{CLASSIFIER}.weight") for k in tensor_names(path))


def _read_hf_config(path: str) -> dict:
    data = read_json_object(path, "config")
    model_type = data.get("model_type", MODEL_TYPE)
    if model_type != MODEL_TYPE:
        raise ValueError(f"{path} is for model_type {model_type!r}, not {MODEL_TYPE!r}")
    return data


def _config_from_hf(data: dict, overrides: dict) -> MobileNetV1Config:
    data = dict(data)
    size = data.get("image_size")
    if isinstance(size, (list, tuple)):
        if not size or any(v != size[0] for v in size):
            raise ValueError(f"only square image_size is supported, got {size}")
        data["image_size"] = size[0]  # the config checks that it is an integer
    return MobileNetV1Config.from_dict(data, **overrides)


def _read_source(src) -> tuple[dict, dict | None, str]:
    """(state dict, HF config dict or None, name for messages) of any HF source."""
    if isinstance(src, Mapping):
        return dict(src), None, "state dict"
    path = os.fspath(src)
    if os.path.isdir(path):
        weights = _weights_file(path)
        config_path = os.path.join(path, CONFIG_NAME)
    elif path.endswith((".safetensors", ".bin")):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no such file: {path}")
        weights = path
        # A state-dict file inside an HF directory uses that directory's config.
        config_path = os.path.join(os.path.dirname(path), CONFIG_NAME)
    else:
        raise ValueError(
            f"{path} is not a Hugging Face source; pass a model directory, a .safetensors or "
            "a .bin file"
        )
    config = _read_hf_config(config_path) if os.path.isfile(config_path) else None
    return _load_weights_file(weights), config, path


def is_hf_source(path) -> bool:
    """True for a state-dict mapping, a ``.safetensors``/``.bin`` path, or a directory holding
    ``model.safetensors`` / ``pytorch_model.bin`` (or their sharded index)."""
    if isinstance(path, Mapping):
        return True
    try:
        path = os.fspath(path)
    except TypeError:
        return False
    if os.path.isdir(path):
        return any(os.path.isfile(os.path.join(path, n)) for n in WEIGHT_FILES)
    return path.endswith((".safetensors", ".bin"))


def load_hf(path_or_state_dict, cls=MobileNetV1ForImageClassification, **config_overrides):
    """Build a Keras model of class ``cls`` from an HF directory, ``.safetensors``, ``.bin`` or a
    dict of numpy/torch tensors. The config comes from ``config.json`` when there is one, else
    from the shapes (``infer_config``); ``config_overrides`` (and ``input_shape``) win."""
    input_shape = config_overrides.pop("input_shape", None)
    state_dict, hf_config, source = _read_source(path_or_state_dict)
    state_dict = _numpy_state_dict(state_dict, source)
    try:
        if hf_config is not None:
            config = _config_from_hf(hf_config, config_overrides)
        else:
            config = infer_config(state_dict, **config_overrides)
    except ValueError as e:
        if source == "state dict":
            raise
        where = f"{source} (config.json)" if hf_config is not None else source
        raise ValueError(f"{where}: {e}") from None
    if hf_config is not None:
        # config.json is taken on trust only as far as the tensors agree with it: check the
        # shapes before building, so an absurd (or wrong) config allocates nothing.
        _check_shapes_against(state_dict, config, source,
                              head=issubclass(cls, MobileNetV1ForImageClassification))
    model = cls(config, input_shape=input_shape)
    state_dict_to_keras(state_dict, model, source=source)
    return model


def _check_shapes_against(state_dict: dict, config: MobileNetV1Config, source: str,
                          head: bool) -> None:
    """Raise ``StateDictMismatchError`` when present tensors disagree with ``config``'s shapes
    (the classifier's only when ``head``: a backbone leaves it out anyway)."""
    prefixed = any(k.startswith(PREFIX) for k in state_dict)
    rows = [r for r in hf_table(config, with_head=prefixed) if r.keras_path is not None
            and (head or not r.hf_key.startswith(CLASSIFIER + "."))]
    mismatched = [(r.hf_key, f"{r.hf_key} has shape {_shape(state_dict[r.hf_key])} in "
                             f"{source} but its config ({config.variant}) needs {r.hf_shape}")
                  for r in rows if r.hf_key in state_dict
                  and _shape(state_dict[r.hf_key]) != r.hf_shape]
    if mismatched:
        raise StateDictMismatchError(f"{config.variant} config in its config.json", [], [],
                                     mismatched, source=source)


# ----- writing HF files -----
def hf_config_dict(config: MobileNetV1Config, with_head: bool = True) -> dict:
    """``config.json`` content: every field of ours plus model_type and architectures."""
    d = config.to_dict()
    d["model_type"] = MODEL_TYPE
    d["architectures"] = ["MobileNetV1ForImageClassification" if with_head
                          else "MobileNetV1Model"]
    d["id2label"] = {str(k): v for k, v in config.id2label.items()}
    d["label2id"] = dict(config.label2id)
    return d


def preprocessor_config_dict(config: MobileNetV1Config) -> dict:
    """``preprocessor_config.json``: resize the short side to size + 32, center-crop, [-1, 1]."""
    size = config.image_size
    return {
        "image_processor_type": "MobileNetV1ImageProcessor",
        "do_resize": True,
        "size": {"shortest_edge": size + 32},
        "resample": 2,  # PIL bilinear
        "do_center_crop": True,
        "crop_size": {"height": size, "width": size},
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": [0.5] * config.num_channels,
        "image_std": [0.5] * config.num_channels,
    }


def _write_json(path: str, data: dict):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")


def _write_safetensors(state_dict: dict, path: str):
    from safetensors.numpy import save_file

    # {"format": "pt"} tells transformers these are PyTorch-layout tensors.
    save_file(state_dict, path, metadata={"format": "pt"})


def _write_bin(torch, state_dict: dict, path: str):
    torch.save({k: torch.from_numpy(v) for k, v in state_dict.items()}, path)


def _warn_unsupported(config: MobileNetV1Config):
    if config.output_stride is not None:
        warnings.warn(f"transformers' MobileNetV1 has no output_stride; it will run the exported "
                      f"weights without the dilation of output_stride={config.output_stride}",
                      stacklevel=3)
    if not config.global_pool:
        warnings.warn("transformers' MobileNetV1 always pools globally; with global_pool=False "
                      "its outputs differ from this model's except at the 224-style sizes",
                      stacklevel=3)


def save_hf(model, dst, force: bool = False, pytorch_bin: bool = False) -> str:
    """Write ``model`` for Hugging Face, atomically; return ``dst``.

    ``dst`` ending in ``.safetensors`` or ``.bin`` gets just the state dict (``.bin`` needs
    torch); anything else becomes a model directory with ``config.json``,
    ``preprocessor_config.json``, ``model.safetensors`` and, with ``pytorch_bin``,
    ``pytorch_model.bin``. An existing ``dst`` is replaced only with ``force``.
    """
    dst = os.fspath(dst)
    dst = dst.rstrip(os.sep) or dst  # "hf_dir/" names the directory hf_dir
    state_dict = keras_to_state_dict(model)
    _warn_unsupported(model.config)
    if dst.endswith(".safetensors"):
        with atomic_output(dst, force, suffix=".safetensors") as tmp:
            _write_safetensors(state_dict, tmp)
        return dst
    if dst.endswith(".bin"):
        torch = _import_torch()
        with atomic_output(dst, force, suffix=".bin") as tmp:
            _write_bin(torch, state_dict, tmp)
        return dst
    torch = _import_torch() if pytorch_bin else None
    with atomic_output(dst, force, directory=True) as tmp:
        _write_json(os.path.join(tmp, CONFIG_NAME), hf_config_dict(model.config, _has_head(model)))
        _write_json(os.path.join(tmp, PREPROCESSOR_NAME), preprocessor_config_dict(model.config))
        _write_safetensors(state_dict, os.path.join(tmp, SAFETENSORS_NAME))
        if torch is not None:
            _write_bin(torch, state_dict, os.path.join(tmp, PYTORCH_NAME))
    return dst
