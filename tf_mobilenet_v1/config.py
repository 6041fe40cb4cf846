"""``MobileNetV1Config``: Hugging Face's fields and defaults, plus what slim can do."""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import numbers
import os
import warnings
from collections.abc import Mapping
from typing import Any

from .architecture import VALID_OUTPUT_STRIDES
from .errors import did_you_mean
from .fileio import SavesPretrained
from .labels import default_id2label
from .variants import FORMAT as VARIANT_FORMAT
from .variants import parse_variant, release_stem, variant_name

ACTIVATIONS = ("relu6", "relu", "gelu", "silu", "swish", "tanh", "sigmoid", "linear")
MIN_INPUT_SIZE = 32
# At 2048 px one image's largest activation is already 256 MiB (1.0, float32); 8192 would need
# 4 GiB per layer and end in an out-of-memory error deep inside TensorFlow.
MAX_IMAGE_SIZE = 2048
MAX_DEPTH_MULTIPLIER = 16.0
MAX_NUM_LABELS = 1_000_000
# Bounds memory before anything is built (1.0 with 1001 labels: 4.2M).
MAX_PARAMS = 2**28

# Keys a transformers ``config.json`` carries that mean nothing for this port.
CONFIG_NAME = "config.json"
MODEL_TYPE = "mobilenet_v1"
_LABEL_FIELDS = ("num_labels", "id2label", "label2id")

_HF_GENERIC_KEYS = frozenset({
    "architectures", "model_type", "torch_dtype", "dtype", "transformers_version",
    "_name_or_path", "return_dict", "output_attentions", "torchscript", "use_bfloat16",
    "problem_type", "pruned_heads", "tie_word_embeddings", "chunk_size_feed_forward",
    "is_encoder_decoder", "is_decoder", "add_cross_attention", "finetuning_task",
    "tokenizer_class", "prefix", "bos_token_id", "pad_token_id", "eos_token_id",
    "sep_token_id", "decoder_start_token_id", "task_specific_params", "_attn_implementation",
    "_commit_hash", "tf_legacy_loss", "use_return_dict",
})


@dataclasses.dataclass
class MobileNetV1Config(SavesPretrained):
    """Configuration of a MobileNet V1 (field names and defaults follow Hugging Face's).

    Extras over Hugging Face: ``output_stride`` (atrous, 8/16/32), ``global_pool`` (False gives
    slim's fixed 7x7 VALID average pool with stride 2), ``spatial_squeeze`` (False keeps the
    logits (B, 1, 1, C) as slim can) and ``num_labels``/``id2label`` as fields; ``num_labels=0``
    (or None) is slim's ``num_classes=0``: the classifier returns the pre-logits features.
    ``classifier_dropout_prob`` defaults to 0.001: HF's 0.999 was slim's *keep* probability.
    """

    FILE_NAME = CONFIG_NAME  # not a field: save_pretrained writes it

    num_channels: int = 3
    image_size: int = 224
    depth_multiplier: float = 1.0
    min_depth: int = 8
    hidden_act: str = "relu6"
    tf_padding: bool = True
    classifier_dropout_prob: float = 0.001
    initializer_range: float = 0.02
    layer_norm_eps: float = 0.001
    num_labels: int = 1001
    id2label: dict[int, str] | None = None
    label2id: dict[str, int] | None = None
    output_stride: int | None = None
    global_pool: bool = True
    spatial_squeeze: bool = True
    output_hidden_states: bool = False

    def __post_init__(self):
        self._validate()
        if self.id2label is None:
            self.id2label = default_id2label(self.num_labels)
        else:
            self.id2label = _checked_id2label(self.id2label)
            if len(self.id2label) != self.num_labels:
                raise ValueError(
                    f"id2label has {len(self.id2label)} entries but num_labels is "
                    f"{self.num_labels}; pass matching num_labels and id2label"
                )
            if set(self.id2label) != set(range(self.num_labels)):
                raise ValueError(f"MobileNetV1Config: id2label keys must be 0.."
                                 f"{self.num_labels - 1}, got {_sample(sorted(self.id2label))}")
        if self.label2id is not None and not isinstance(self.label2id, Mapping):
            raise ValueError(f"MobileNetV1Config: label2id must be a mapping of names to ids, "
                             f"got a {type(self.label2id).__name__}")
        if self.label2id is None or len(self.label2id) != self.num_labels:
            self.label2id = {v: k for k, v in self.id2label.items()}
        else:
            try:
                self.label2id = {str(k): int(v) for k, v in self.label2id.items()}
            except (TypeError, ValueError):
                raise ValueError("MobileNetV1Config: label2id values must be integer ids, got "
                                 f"{_sample(list(self.label2id.values()))}") from None
            if any(self.id2label.get(i) != name for name, i in self.label2id.items()):
                # label2id is derived data: a stale or foreign one is rebuilt from id2label.
                self.label2id = {v: k for k, v in self.id2label.items()}
        if self.classifier_dropout_prob > 0.5:
            warnings.warn(
                f"classifier_dropout_prob={self.classifier_dropout_prob} drops most features "
                "during training; HF's old default 0.999 was slim's keep probability "
                "(transformers issue 22767), the intended drop rate is 0.001",
                stacklevel=3,
            )
        object.__setattr__(self, "_ready", True)

    def __setattr__(self, name, value):
        """HF-style edits (``config.num_labels = 3``) go through the same validation as the
        constructor and keep the label fields consistent; a built model's config only lets its
        label names change, since its layers were made for the rest."""
        if not self.__dict__.get("_ready") or name.startswith("_"):
            object.__setattr__(self, name, value)
            return
        fields = [f.name for f in dataclasses.fields(self)]
        if name not in fields:
            raise AttributeError(f"MobileNetV1Config has no field {name!r}"
                                 f"{did_you_mean(name, fields)}")
        owner = self.__dict__.get("_owner")
        if owner and name not in _LABEL_FIELDS[1:]:
            raise AttributeError(
                f"the config of a built {owner} cannot change {name} (its layers were made "
                f"for {name}={getattr(self, name)!r}); build a new model instead, e.g. "
                f"{owner}.from_pretrained(weights, {name}=...)")
        data = self.to_dict()
        data[name] = value
        if name == "num_labels":
            data.pop("id2label")
            data.pop("label2id")
        elif name == "id2label":
            data.pop("label2id")
            if isinstance(value, Mapping):
                data["num_labels"] = len(value)
        elif name == "label2id":
            if not isinstance(value, Mapping):
                raise ValueError("MobileNetV1Config: label2id must be a mapping of names to ids")
            data["id2label"] = {i: n for n, i in value.items()}
            data["num_labels"] = len(value)
        new = type(self)(**data)
        if owner and new.num_labels != self.num_labels:
            raise AttributeError(
                f"the config of a built {owner} has {self.num_labels} labels; {name} must name "
                f"exactly {self.num_labels} (for another count, build a new model with "
                "num_labels=...)")
        self.__dict__.update({f: getattr(new, f) for f in fields})

    def _bind(self, owner: str) -> None:
        """Tie this config to a built model (see ``__setattr__``)."""
        object.__setattr__(self, "_owner", owner)

    def _validate(self):
        def bad(msg):
            raise ValueError(f"MobileNetV1Config: {msg}")

        # Types first: a JSON config may hold strings, booleans or nulls anywhere, and a
        # comparison with those would raise TypeError instead of saying what is wrong.
        for name in ("num_channels", "image_size", "min_depth", "num_labels"):
            if isinstance(getattr(self, name), bool):
                bad(f"{name} must be an integer, got {getattr(self, name)!r}")
        if self.num_labels is None:  # HF and slim both spell "no classifier" this way
            self.num_labels = 0
        for name in ("tf_padding", "global_pool", "spatial_squeeze", "output_hidden_states"):
            if not isinstance(getattr(self, name), bool):
                bad(f"{name} must be true or false, got {getattr(self, name)!r}")
        for name in ("depth_multiplier", "classifier_dropout_prob", "initializer_range",
                     "layer_norm_eps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) \
                    or not math.isfinite(value):
                bad(f"{name} must be a finite number, got {value!r}")
        if not 0 < self.depth_multiplier <= MAX_DEPTH_MULTIPLIER:
            bad(f"depth_multiplier must be in (0, {MAX_DEPTH_MULTIPLIER:g}], got "
                f"{self.depth_multiplier!r} (official values: 0.25, 0.5, 0.75, 1.0)")
        self.depth_multiplier = float(self.depth_multiplier)
        if not isinstance(self.min_depth, int) or not 1 <= self.min_depth <= 4096:
            bad(f"min_depth must be an integer in [1, 4096], got {self.min_depth!r}")
        if self.output_stride is not None and self.output_stride not in VALID_OUTPUT_STRIDES:
            bad(f"output_stride must be None, 8, 16 or 32, got {self.output_stride!r}")
        if self.hidden_act not in ACTIVATIONS:
            bad(f"unknown hidden_act {self.hidden_act!r}; use one of {', '.join(ACTIVATIONS)}")
        if not isinstance(self.image_size, int) \
                or not MIN_INPUT_SIZE <= self.image_size <= MAX_IMAGE_SIZE:
            bad(f"image_size must be an integer in [{MIN_INPUT_SIZE}, {MAX_IMAGE_SIZE}], "
                f"got {self.image_size!r}")
        if not isinstance(self.num_channels, int) or not 1 <= self.num_channels <= 64:
            bad(f"num_channels must be an integer in [1, 64], got {self.num_channels!r}")
        if not isinstance(self.num_labels, int) or not 0 <= self.num_labels <= MAX_NUM_LABELS:
            bad(f"num_labels must be an integer in [0, {MAX_NUM_LABELS}] (0: no classifier), "
                f"got {self.num_labels!r}")
        if not 0 <= self.classifier_dropout_prob < 1:
            bad(f"classifier_dropout_prob must be in [0, 1), got {self.classifier_dropout_prob}")
        if not self.layer_norm_eps > 0:
            bad(f"layer_norm_eps must be positive, got {self.layer_norm_eps}")
        if not self.initializer_range >= 0:
            bad(f"initializer_range must not be negative, got {self.initializer_range}")
        if self.id2label is not None and not isinstance(self.id2label, Mapping):
            bad(f"id2label must be a mapping of ids to names, got a "
                f"{type(self.id2label).__name__}")
        from .architecture import count_params, layer_specs

        params = count_params(layer_specs(self), self.num_labels)
        if params > MAX_PARAMS:
            bad(f"depth_multiplier {self.depth_multiplier:g} with {self.num_labels} labels "
                f"needs {params:,} weights, more than {MAX_PARAMS:,} (1 GiB of float32); "
                "use a smaller depth_multiplier or fewer labels")

    # ----- dict / JSON -----
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["id2label"] = {str(k): v for k, v in self.id2label.items()}
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any], **overrides) -> MobileNetV1Config:
        """Build from our own dict or a Hugging Face ``config.json`` dict; ``overrides`` win."""
        data = {**data, **overrides}
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names - _HF_GENERIC_KEYS
        if unknown:
            warnings.warn(f"MobileNetV1Config ignores unknown keys: {sorted(unknown)}",
                          stacklevel=2)
        kwargs = {k: v for k, v in data.items() if k in names}
        if "num_labels" not in kwargs and isinstance(kwargs.get("id2label"), Mapping) \
                and kwargs["id2label"]:
            kwargs["num_labels"] = len(kwargs["id2label"])
        if "num_labels" in overrides and "id2label" not in overrides:
            old = kwargs.get("id2label")
            if old is not None and (not isinstance(old, Mapping)
                                    or len(old) != overrides["num_labels"]):
                kwargs.pop("id2label", None)
                kwargs.pop("label2id", None)
        return cls(**kwargs)

    def to_json_string(self) -> str:
        """``config.json`` text, readable by transformers' ``MobileNetV1Config`` too."""
        data = {**self.to_dict(), "model_type": MODEL_TYPE}
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json_file(cls, path: str | os.PathLike, **overrides) -> MobileNetV1Config:
        from .fileio import read_json_object

        return cls.from_dict(read_json_object(path, "config"), **overrides)

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, **overrides) -> MobileNetV1Config:
        """From a directory holding ``config.json``, that file itself, or a variant name
        (``mobilenet_v1_0.5_160``: nothing is downloaded)."""
        path = os.fspath(name_or_path)
        if os.path.isdir(path):
            path = os.path.join(path, CONFIG_NAME)
        if os.path.exists(path) or os.sep in path or path.endswith(".json"):
            return cls.from_json_file(path, **overrides)
        return cls.from_variant(path, **overrides)

    def replace(self, **changes) -> MobileNetV1Config:
        """A copy with some fields changed (a new ``num_labels`` resets the label names)."""
        return type(self).from_dict(self.to_dict(), **changes)

    @property
    def variant(self) -> str:
        """Slim-style name, e.g. ``mobilenet_v1_0.75_192``."""
        return variant_name(self.depth_multiplier, self.image_size)

    @classmethod
    def from_variant(cls, name: str, **overrides) -> MobileNetV1Config:
        """Parse ``mobilenet_v1_<alpha>_<res>[_quant]`` into a config."""
        v = parse_variant(release_stem(str(name)))
        if v is None:
            raise ValueError(f"unknown variant {name!r}; expected {VARIANT_FORMAT}")
        return cls(**{"depth_multiplier": v.depth_multiplier, "image_size": v.resolution,
                      **overrides})


def _sample(items, n: int = 3) -> str:
    shown = ", ".join(repr(x) for x in list(items)[:n])
    return f"[{shown}{', ...' if len(items) > n else ''}]"


def _checked_id2label(id2label: Mapping) -> dict[int, str]:
    """``{int id: name}`` from a mapping whose keys may be JSON strings (``"0"``)."""
    out = {}
    for k, v in id2label.items():
        try:
            key = int(k)
        except (TypeError, ValueError):
            key = None
        if key is None or isinstance(k, bool) or isinstance(k, float) and k != key:
            raise ValueError(f"MobileNetV1Config: id2label keys must be integer ids, got {k!r}")
        if not isinstance(v, (str, int)) or isinstance(v, bool):
            raise ValueError(f"MobileNetV1Config: id2label names must be strings, got {v!r} "
                             f"for id {k!r}")
        out[key] = str(v)
    return out


def _init_naming_typos(init):
    """The dataclass's ``__init__``, with an unknown field's TypeError naming the closest
    field (``depth_mutliplier`` -> ``depth_multiplier``)."""
    names = frozenset(f.name for f in dataclasses.fields(MobileNetV1Config))

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        for key in kwargs:
            if key not in names:
                raise TypeError(f"MobileNetV1Config got an unexpected keyword argument {key!r}"
                                f"{did_you_mean(key, names)}")
        init(self, *args, **kwargs)

    return __init__


MobileNetV1Config.__init__ = _init_naming_typos(MobileNetV1Config.__init__)
