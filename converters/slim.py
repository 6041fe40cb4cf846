"""Writing TF-slim checkpoints: our Keras weights under slim's original variable names."""

from __future__ import annotations

import os

import numpy as np

from tf_mobilenet_v1.architecture import LOGITS_NAME
from tf_mobilenet_v1.fileio import atomic_outputs
from tf_mobilenet_v1.loaders.slim import slim_name_map
from tf_mobilenet_v1.loaders.tf_checkpoint import DATA_SUFFIX


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
    if getattr(model, "fold_batchnorm", False):
        raise ValueError("cannot write a slim checkpoint from a batch-norm-folded model; "
                         "save the model before calling folded()")
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
    # Both files are written side by side and replace the old pair as a unit, so a reader
    # never sees a new .data with an old .index (or either without the other).
    with atomic_outputs([index_dst, data_dst], force,
                        suffixes=[".index", DATA_SUFFIX]) as (index_tmp, data_tmp):
        prefix = index_tmp[: -len(".index")]
        with tf.device("/CPU:0"):
            tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names,
                              shape_and_slices=[""] * len(names),
                              tensors=[tf.constant(v) for v in values])
        os.replace(prefix + DATA_SUFFIX, data_tmp)
    return dst
