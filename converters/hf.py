"""Our Keras models as Hugging Face (PyTorch) MobileNet V1 weights, exactly.

Writes a directory that ``transformers.MobileNetV1ForImageClassification.from_pretrained`` loads
(``config.json``, ``preprocessor_config.json``, ``model.safetensors``), or a bare
``.safetensors`` / ``.bin`` state dict. The rows of ``loaders.hf_names`` drive both this writer
and the reader ``loaders.hf``, so a round trip is bit-exact.
"""

from __future__ import annotations

import io
import json
import os
import warnings

import numpy as np

from tf_mobilenet_v1.config import MobileNetV1Config
from tf_mobilenet_v1.fileio import atomic_output
from tf_mobilenet_v1.loaders.hf import check_unfolded, has_head, import_torch
from tf_mobilenet_v1.loaders.hf_names import (
    CONFIG_NAME,
    MODEL_TYPE,
    PREPROCESSOR_NAME,
    PYTORCH_NAME,
    SAFETENSORS_NAME,
    TRANSFORMS,
    hf_table,
)


def _shape(x) -> tuple[int, ...]:
    return tuple(int(d) for d in x.shape)


def keras_to_state_dict(model) -> dict[str, np.ndarray]:
    """HF state dict (PyTorch names and layouts, numpy arrays) of one of our Keras models.

    A ``MobileNetV1ForImageClassification`` gives ``mobilenet_v1.*`` + ``classifier.*`` keys; a
    ``MobileNetV1Model`` gives the bare backbone keys. ``num_batches_tracked`` is int64 0.
    """
    with_head = has_head(model)
    check_unfolded(model)
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
    # Serialized in memory first: torch's zip writer reports a full disk only as "unexpected
    # pos", while a plain write names the cause.
    buf = io.BytesIO()
    torch.save({k: torch.from_numpy(v) for k, v in state_dict.items()}, buf)
    with open(path, "wb") as f:
        f.write(buf.getbuffer())


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
        torch = import_torch()
        with atomic_output(dst, force, suffix=".bin") as tmp:
            _write_bin(torch, state_dict, tmp)
        return dst
    torch = import_torch() if pytorch_bin else None
    with atomic_output(dst, force, directory=True) as tmp:
        _write_json(os.path.join(tmp, CONFIG_NAME), hf_config_dict(model.config, has_head(model)))
        # The processor that came with the weights, else HF's crop for the model's size.
        own = getattr(model, "_processor_config", None)
        processor = dict(own) if own else preprocessor_config_dict(model.config)
        _write_json(os.path.join(tmp, PREPROCESSOR_NAME), processor)
        _write_safetensors(state_dict, os.path.join(tmp, SAFETENSORS_NAME))
        if torch is not None:
            _write_bin(torch, state_dict, os.path.join(tmp, PYTORCH_NAME))
    return dst
