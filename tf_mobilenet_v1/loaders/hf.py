"""Hugging Face (PyTorch) MobileNet V1 weights into our Keras models, exactly.

Reads a Hugging Face model directory (``config.json`` + ``model.safetensors`` or
``pytorch_model.bin``, sharded or not), a bare ``.safetensors`` / ``.bin`` state dict, or an
in-memory dict of numpy or torch tensors, strictly. Names and layouts come from
``loaders.hf_names`` (derived from the architecture table); ``converters.hf`` writes the same
forms. torch is only needed for ``.bin`` files.
"""

from __future__ import annotations

import dataclasses
import os
import pickle  # only for its exception type; files are read by torch.load(weights_only)
import warnings
from collections.abc import Mapping

import numpy as np

from ..architecture import infer_depth_multiplier, layer_specs
from ..config import MobileNetV1Config
from ..errors import PretrainedWarning, first_line
from ..fileio import MAX_WEIGHTS_BYTES, check_regular_file, read_json_object
from ..models import MobileNetV1ForImageClassification, MobileNetV1Model
from .hf_names import (
    CLASSIFIER,
    CONFIG_NAME,
    MODEL_TYPE,
    NUM_BATCHES_TRACKED,
    PREFIX,
    PREPROCESSOR_NAME,
    TRANSFORMS,
    WEIGHT_FILES,
    HFTensor,
    hf_module_name,
    hf_table,
)
from .source import tensor_problem


# ----- helpers -----
def import_torch():
    try:
        import torch
    except ImportError:
        raise ImportError(
            "PyTorch .bin files need torch; pip install torch (or use .safetensors)"
        ) from None
    return torch


def has_head(model) -> bool:
    if isinstance(model, MobileNetV1ForImageClassification):
        return True
    if isinstance(model, MobileNetV1Model):
        return False
    raise TypeError(
        f"expected a tf_mobilenet_v1 MobileNetV1Model or MobileNetV1ForImageClassification, "
        f"got {type(model).__name__}"
    )


def check_unfolded(model):
    if getattr(model, "fold_batchnorm", False):
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
        t = value.detach()
        dtype = str(t.dtype).removeprefix("torch.")
        layout = str(getattr(t, "layout", "torch.strided")).removeprefix("torch.")
        if layout != "strided" or dtype not in TENSOR_DTYPES:
            what = f"a {layout} tensor" if layout != "strided" else f"dtype {dtype}"
            raise _unsupported(source, key, what)
        t = t.cpu()
        if dtype == "bfloat16":
            t = t.float()  # numpy has no bfloat16; widening to float32 is exact
        return t.numpy()
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return np.asarray(value)
    raise ValueError(
        f"{source} entry {key!r} is a {type(value).__name__}, not a tensor; pass a flat "
        "mapping of names to numpy arrays or torch tensors"
    )


# What a MobileNet V1 state dict holds: float weights (any width numpy or torch can widen
# exactly) and integer num_batches_tracked counters. float8, quantized (qint8) and sparse tensors
# are refused by name rather than left to fail deep inside numpy or torch.
TENSOR_DTYPES = frozenset({"float16", "bfloat16", "float32", "float64", "int32", "int64"})
_SAFETENSORS_DTYPES = {"F16": "float16", "BF16": "bfloat16", "F32": "float32",
                       "F64": "float64", "I32": "int32", "I64": "int64"}


def _unsupported(source: str, key: str, what: str) -> ValueError:
    return ValueError(f"{source} entry {key!r} is {what}, which MobileNet V1 weights never are; "
                      "save the float32 (or float16/bfloat16) weights instead")


def _numpy_state_dict(state_dict, source: str = "state dict") -> dict[str, np.ndarray]:
    if not isinstance(state_dict, Mapping):
        raise ValueError(
            f"expected a state dict (a mapping of names to tensors), got "
            f"{type(state_dict).__name__}"
        )
    return {str(k): _to_numpy(v, str(k), source) for k, v in state_dict.items()}


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
    if has_head(model):
        return f"{cfg.variant} classifier ({cfg.num_labels} labels)"
    return f"{cfg.variant} backbone"


def _keras_values(sd: dict[str, np.ndarray], config: MobileNetV1Config, target: str,
                  source: str, keep_head: bool) -> tuple[dict, dict, list[str]]:
    """``({keras path: array}, {keras path: HF key}, dropped head keys)`` of a numpy state
    dict for ``config``, strictly: every key known, every tensor present with its shape, a
    float and finite; else one ``StateDictMismatchError`` listing every problem. A
    classification state dict's ``classifier.*`` is dropped unless ``keep_head``."""
    prefixed = any(k.startswith(PREFIX) for k in sd)
    rows = hf_table(config, with_head=prefixed)
    dropped = []
    if prefixed and not keep_head:
        dropped = sorted(k for k in sd if k.startswith(CLASSIFIER + "."))
        rows = [r for r in rows if not r.hf_key.startswith(CLASSIFIER + ".")]
    expected: dict[str, HFTensor] = {r.hf_key: r for r in rows}
    missing, mismatched, values, names = [], [], {}, {}
    for key, row in expected.items():
        if row.keras_path is None:
            continue  # num_batches_tracked: optional, never read
        if key not in sd:
            missing.append(key)
            continue
        arr = sd[key]
        problem = tensor_problem(arr) if _shape(arr) == row.hf_shape else \
            f"has shape {_shape(arr)} in the state dict but the model needs {row.hf_shape}"
        if problem:
            mismatched.append((key, f"{key} {problem}"))
        else:
            values[row.keras_path] = TRANSFORMS[row.transform].to_keras(arr)
            names[row.keras_path] = key
    unexpected = [k for k in sd if k not in expected and k not in dropped]
    if missing or mismatched or unexpected:
        raise StateDictMismatchError(target, missing, unexpected, mismatched, source=source)
    return values, names, dropped


def state_dict_to_keras(state_dict, model, source: str = "state dict") -> LoadReport:
    """Load an HF state dict into one of our Keras models, strictly and bit-exactly.

    Every tensor must be used and every model variable set, with the right shape, except:
    ``num_batches_tracked`` is ignored; a classification state dict loaded into a
    ``MobileNetV1Model`` drops ``classifier.*`` (with a warning); a bare backbone state dict
    loaded into the classifier leaves ``Logits`` at its initialization (with a warning).
    Nothing is assigned unless everything matches (``StateDictMismatchError``, a ValueError).
    """
    sd = _numpy_state_dict(state_dict, source)
    with_head = has_head(model)
    check_unfolded(model)
    src_prefixed = any(k.startswith(PREFIX) for k in sd)
    values, names, dropped = _keras_values(sd, model.config, _describe(model), source,
                                           keep_head=with_head and bool(model.config.num_labels))
    variables = {v.path: v for v in model.weights}
    not_set = sorted(set(variables) - set(values))
    if not_set and not (with_head and not src_prefixed):
        raise ValueError(f"{source} does not set the model variables {', '.join(not_set)}")
    for path, value in values.items():
        var = variables[path]
        var.assign(value.astype(var.dtype))
    report = LoadReport(loaded=sorted(names.values()), dropped=dropped, left_at_init=not_set,
                        ignored=sorted(k for k in sd if k.endswith("." + NUM_BATCHES_TRACKED)))
    if report.dropped:
        warnings.warn(f"{source}: the model has no classifier, so "
                      f"{', '.join(report.dropped)} were not loaded", PretrainedWarning,
                      stacklevel=2)
    if report.left_at_init:
        warnings.warn(f"{source} holds only the backbone; the classifier "
                      f"({', '.join(not_set)}) keeps its random initialization",
                      PretrainedWarning, stacklevel=2)
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
    specs = layer_specs()  # only the layer kinds are used; widths come from the shapes
    outs = []
    for index, spec in enumerate(specs):
        key = f"{prefix}{hf_module_name(index, spec)}.convolution.weight"
        if key not in shapes or len(shapes[key]) != 4:
            what = "Hugging Face MobileNet V1" if index == 0 else "MobileNet V1"
            raise ValueError(f"not a {what} state dict: {key} is missing or not 4-D "
                             f"(it has {len(shapes)} keys)")
        outs.append(shapes[key][0])
    stem_key = f"{prefix}{hf_module_name(0, specs[0])}.convolution.weight"
    fields = {"num_channels": shapes[stem_key][1]}
    head = shapes.get(f"{CLASSIFIER}.weight")
    if prefix and head is not None and len(head) == 2:
        fields["num_labels"] = head[0]
    fields.update(overrides)
    if "depth_multiplier" in overrides:
        # The caller chose the variant: the strict loader reports any shape that disagrees.
        return MobileNetV1Config(**fields)
    # Depthwise widths and kernel sizes are then checked by the strict loader.
    widths = [out for out, spec in zip(outs, specs, strict=True) if spec.kind != "depthwise"]
    try:
        multiplier, min_depth = infer_depth_multiplier(widths, overrides.get("min_depth"))
    except ValueError as e:
        raise ValueError(f"{e} (this state dict)") from None
    return MobileNetV1Config(**{**fields, "depth_multiplier": multiplier,
                                "min_depth": min_depth})


# ----- reading HF files -----
def _load_safetensors(path: str) -> dict:
    from safetensors import SafetensorError, safe_open
    from safetensors.numpy import load_file

    try:
        with safe_open(path, framework="numpy") as f:
            for key in f.keys():
                dtype = f.get_slice(key).get_dtype()
                if dtype not in _SAFETENSORS_DTYPES:
                    raise _unsupported(path, key, f"dtype {dtype}")
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
    torch = import_torch()
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such file: {path}")
    # weights_only=True: a .bin is a pickle, and only plain tensors may come out of it.
    try:
        with warnings.catch_warnings():  # torch's deprecation notice for qint8 tensors
            warnings.simplefilter("ignore")
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
    weight_map = read_json_object(index_path, "sharded-weights index").get("weight_map")
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
    paths = [os.path.join(os.path.dirname(index_path), shard) for shard in shards]
    # Each shard is checked before any is read: N shards that are each just under a cap
    # would otherwise add up to gigabytes.
    total = sum(check_regular_file(p, "weights shard") for p in paths)
    if total > MAX_WEIGHTS_BYTES:
        raise ValueError(f"the {len(paths)} shards of {index_path} hold {total:,} bytes, more "
                         f"than any MobileNet V1 (at most {MAX_WEIGHTS_BYTES:,}); they are not "
                         "MobileNet V1 weights")
    return paths


def _load_weights_file(path: str) -> dict:
    if path.endswith(".index.json"):
        merged = {}
        for shard in _shard_files(path):
            merged.update(_load_weights_file(shard))
        return merged
    check_regular_file(path, "weights file", MAX_WEIGHTS_BYTES)
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
        return list(read_json_object(path, "sharded-weights index")["weight_map"])
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
    # Only a config.json that is truly absent means "infer the variant": a dangling link or a
    # pipe is somebody's broken config, and guessing past it would hide that.
    config = _read_hf_config(config_path) if os.path.lexists(config_path) else None
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


def load_hf(path_or_state_dict, cls=None, **overrides):
    """Build a Keras model of class ``cls`` from an HF directory, ``.safetensors``, ``.bin`` or a
    dict of numpy/torch tensors; ``cls=None``: the classifier when the weights have a head,
    else the backbone. The config comes from ``config.json`` when there is one, else from the
    shapes (``infer_config``); ``overrides`` (config fields, ``input_shape``...) win. The model
    is built once, by the assembler every format goes through."""
    from .dispatch import assemble, split_overrides

    config_overrides, model_kwargs = split_overrides(dict(overrides))
    src = read_hf(path_or_state_dict, config_overrides)  # the hints; the rest is assembly
    if cls is None:
        cls = MobileNetV1ForImageClassification if src.has_head else MobileNetV1Model
    return assemble(cls, src, config_overrides, model_kwargs)


def read_hf(path_or_state_dict, overrides: dict | None = None):
    """An HF source as a ``WeightSource`` (config, ``{keras path: array}``, its processor),
    checked tensor by tensor. Of ``overrides`` it takes the hints that fix a config-less
    state dict's variant (``depth_multiplier``, ``min_depth``, ``num_channels``)."""
    from .source import WeightSource

    overrides = {k: v for k, v in (overrides or {}).items() if k in _INFERENCE_HINTS}
    state_dict, hf_config, source = _read_source(path_or_state_dict)
    sd = _numpy_state_dict(state_dict, source)
    try:
        if hf_config is not None:
            config = _config_from_hf(hf_config, overrides)
        else:
            config = infer_config(sd, **overrides)
    except ValueError as e:
        if source == "state dict":
            raise
        where = f"{source} (config.json)" if hf_config is not None else source
        raise ValueError(f"{where}: {e}") from None
    prefixed = any(k.startswith(PREFIX) for k in sd)
    if hf_config is None and prefixed and f"{CLASSIFIER}.weight" not in sd:
        config = config.replace(num_labels=0)  # nothing says a head is missing: there is none
    target = f"{config.variant} config" + (" in its config.json" if hf_config else "")
    values, names, _ = _keras_values(sd, config, target, source,
                                     keep_head=prefixed and bool(config.num_labels))
    return WeightSource(config, values, source, names=names,
                        image_processor=_own_processor(path_or_state_dict, config))


def _own_processor(src, config: MobileNetV1Config) -> dict | None:
    """The ``preprocessor_config.json`` beside HF weights, when it fits the model's size."""
    if isinstance(src, Mapping):
        return None
    path = os.fspath(src)
    folder = path if os.path.isdir(path) else os.path.dirname(path)
    file = os.path.join(folder, PREPROCESSOR_NAME)
    if not os.path.isfile(file):
        return None
    from ..preprocessing import MobileNetV1ImageProcessor

    processor = MobileNetV1ImageProcessor.from_pretrained(file)  # errors name the file
    # An override of image_size (a variant around the same weights) makes its crop stale.
    if processor.output_size() != (config.image_size, config.image_size):
        return None
    return processor.to_dict()


# Overrides that only help read a config-less state dict (its shapes fix the rest).
_INFERENCE_HINTS = ("depth_multiplier", "min_depth", "num_channels")


def hf_source(path: str, use_ema: bool, overrides: dict):
    """The Hugging Face forms' reader (``formats``): the weights as they are, head or not."""
    return read_hf(path, overrides)
