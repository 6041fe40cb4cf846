"""``keras.applications.MobileNet`` (any ``alpha``, with or without its top, fine-tuned heads
included) as weights: a live model, a ``.keras`` file or a legacy ``.h5`` model file.

keras.applications builds MobileNet V1 with its own names (``conv1``, ``conv_dw_1``,
``conv_pw_1``, ``conv_preds``) and pads each stride-2 depthwise layer with a ZeroPadding2D of
one row and column at the bottom right before a VALID convolution, which is TensorFlow's SAME
padding at the even sizes it accepts (``tf_padding=True``). Its head is a global average pool,
dropout and a 1x1 convolution: ``global_pool=True``, and its classes stay as many as it has
(1000 for ImageNet: no background row). Layouts are Keras's on both sides.
"""

from __future__ import annotations

import numpy as np

from ..architecture import LOGITS_NAME, infer_depth_multiplier, layer_specs
from ..config import MobileNetV1Config
from ..labels import default_id2label
from .source import WeightSource, tensor_problem

_BN = ("gamma", "beta", "moving_mean", "moving_variance")


def _their_name(spec) -> str:
    if spec.kind == "conv":
        return "conv1"
    number = spec.name.split("_")[1]
    return f"conv_{'dw' if spec.kind == 'depthwise' else 'pw'}_{number}"


def name_table(head: bool) -> dict[str, str]:
    """``{our Keras weight path: keras.applications weight path}``."""
    table = {}
    for spec in layer_specs():
        theirs = _their_name(spec)
        ours = "depthwise" if spec.kind == "depthwise" else "conv"
        table[f"{spec.name}/{ours}/kernel"] = f"{theirs}/kernel"
        for v in _BN:
            table[f"{spec.name}/BatchNorm/{v}"] = f"{theirs}_bn/{v}"
    if head:
        table[f"{LOGITS_NAME}/kernel"] = "conv_preds/kernel"
        table[f"{LOGITS_NAME}/bias"] = "conv_preds/bias"
    return table


def is_applications_mobilenet(model) -> bool:
    """Whether ``model`` is keras.applications' MobileNet (V1), by its layer names."""
    names = {layer.name for layer in getattr(model, "layers", [])}
    return {"conv1", "conv1_bn", "conv_dw_1", "conv_pw_1", "conv_pw_13"} <= names \
        and "block_1_expand" not in names  # MobileNetV2 has conv1 too


def applications_source(model, description: str) -> WeightSource:
    """A keras.applications MobileNet's weights, strictly: every tensor of the backbone (and
    of ``conv_preds``, when it has its top) placed, nothing else in the model."""
    if not is_applications_mobilenet(model):
        raise ValueError(f"{description} is not keras.applications' MobileNet (no conv1, "
                         "conv_dw_1 ... conv_pw_13 layers); pass that model or one of ours")
    weights = {v.path: np.asarray(v.numpy()) for v in model.weights}
    head = "conv_preds/kernel" in weights
    table = name_table(head)
    missing = [theirs for theirs in table.values() if theirs not in weights]
    extra = sorted(set(weights) - set(table.values()))
    if missing or extra:
        what = f"lacks {missing[0]}" if missing else f"has {extra[0]}, which MobileNet V1 has not"
        raise ValueError(f"{description} {what}; pass an unmodified keras.applications "
                         "MobileNet (a new head belongs in a model around it)")
    ours = {}
    for path, theirs in table.items():
        problem = tensor_problem(weights[theirs])
        if problem:
            raise ValueError(f"{description}: {theirs} {problem}")
        ours[path] = weights[theirs].astype(np.float32)
    specs = layer_specs()
    widths = [ours[f"{s.name}/conv/kernel"].shape[-1] for s in specs if s.kind != "depthwise"]
    try:
        multiplier, min_depth = infer_depth_multiplier(widths)
    except ValueError as e:
        raise ValueError(f"{description}: {e}") from None
    shape = tuple(model.input_shape)
    size = shape[1] if len(shape) == 4 and shape[1] is not None else 224
    num_labels = int(ours[f"{LOGITS_NAME}/kernel"].shape[-1]) if head else 0
    epsilon = float(model.get_layer("conv1_bn").epsilon)
    config = MobileNetV1Config(
        depth_multiplier=multiplier, min_depth=min_depth, num_channels=int(shape[-1]),
        image_size=int(size), num_labels=num_labels, tf_padding=True, global_pool=True,
        layer_norm_eps=epsilon,
        **({"id2label": default_id2label(num_labels)} if num_labels else {}))
    names = {path: theirs for path, theirs in table.items()}
    return WeightSource(config, ours, description, names=names)


_LAYERS = ("conv1", "conv_dw_1", "conv_pw_13")


def is_applications_archive(path: str) -> bool:
    """Whether a ``.keras`` archive's config.json describes keras.applications' MobileNet (a
    Functional model with its layer names); cheap, nothing built."""
    import json
    import zipfile

    from ..fileio import MAX_JSON_BYTES

    try:
        with zipfile.ZipFile(path) as zf:
            if zf.getinfo("config.json").file_size > MAX_JSON_BYTES:
                return False  # the loader then refuses it, naming the size
            data = json.loads(zf.read("config.json"))
        layers = data["config"]["layers"]
        names = {layer["config"]["name"] for layer in layers}
    except (KeyError, TypeError, zipfile.BadZipFile, EOFError, OSError, ValueError):
        return False
    return data.get("class_name") == "Functional" and set(_LAYERS) <= names


def load_applications_file(path: str):
    """A keras.applications MobileNet from a ``.keras`` archive or a legacy ``.h5`` model file,
    in Keras's safe mode (a Lambda layer's pickled bytecode is refused)."""
    import keras

    from ..errors import first_line
    from ..fileio import MAX_WEIGHTS_BYTES, check_archive_sizes, check_regular_file

    check_regular_file(path, "Keras model", MAX_WEIGHTS_BYTES)
    if path.endswith(".keras"):
        check_archive_sizes(path)
    try:
        model = keras.saving.load_model(path, safe_mode=True, compile=False)
    except Exception as e:  # noqa: BLE001 - h5py and Keras raise many kinds on a bad file
        raise ValueError(f"cannot load Keras model {path} ({first_line(e)[:200]}); pass a "
                         "keras.applications MobileNet saved with model.save") from None
    if not is_applications_mobilenet(model):
        raise ValueError(f"{path} holds a {type(model).__name__} that is not keras.applications' "
                         "MobileNet (nor one of ours); pass a MobileNet V1")
    return model


def applications_file_source(path: str, use_ema: bool, overrides: dict) -> WeightSource:
    """The reader (``formats``) of a keras.applications MobileNet file."""
    return applications_source(load_applications_file(path), path)
