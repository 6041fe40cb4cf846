"""ONNX export through tf2onnx (``pip install ".[onnx]"`` in the checkout).

The graph is the batch-norm-folded model as a ``tf.function``, converted by
``tf2onnx.convert.from_function``: input ``pixel_values`` float32 (B, S, S, C), NHWC and
normalized to [-1, 1] as for every export; outputs ``logits`` and ``probabilities`` (a
classifier) or ``features`` (``task="feature-vector"``). The batch is dynamic unless
``dynamic_batch=False``. ``onnxruntime`` runs it (see :func:`run_onnx`).
"""

from __future__ import annotations

import os

from tf_mobilenet_v1.fileio import atomic_output, check_writable

from ._deploy import at_size, check_classifier, check_task, head_fn, labels_text

DEFAULT_OPSET = 17
_HINT = ("pip install '.[onnx]' in the checkout, or the wheel with [onnx] (tf2onnx, onnx, "
         "onnxruntime)")


def _tf2onnx():
    try:
        import tf2onnx
    except ImportError as e:
        raise ImportError(f"ONNX export needs tf2onnx: {_HINT} ({e})") from None
    return tf2onnx


def convert_onnx(model, *, image_size: int | None = None, task: str = "classification",
                 dynamic_batch: bool = True, opset: int = DEFAULT_OPSET) -> bytes:
    """Serialized ONNX ``ModelProto`` bytes of ``model`` (see the module docstring)."""
    import tensorflow as tf

    tf2onnx = _tf2onnx()
    head = check_task(task, None)
    model, size = at_size(check_classifier(model), image_size)
    folded = model.folded()
    channels = model.config.num_channels
    if head == "features":
        features = head_fn(folded, "features")

        def outputs(x):
            return {"features": features(x)}
    else:
        logits_fn = head_fn(folded, "logits")

        def outputs(x):
            logits = logits_fn(x)
            return {"logits": logits, "probabilities": tf.nn.softmax(logits, axis=-1)}

    spec = tf.TensorSpec([None if dynamic_batch else 1, size, size, channels], tf.float32,
                         name="pixel_values")
    fn = tf.function(outputs, input_signature=[spec])
    try:
        proto, _ = tf2onnx.convert.from_function(fn, input_signature=[spec], opset=opset)
    except Exception as e:  # tf2onnx raises assorted errors from its graph rewriters
        raise RuntimeError(f"ONNX conversion failed: {str(e).strip().splitlines()[0]}") from e
    if dynamic_batch:  # name the batch axis (tf2onnx calls it unk__N)
        for value in (*proto.graph.input, *proto.graph.output):
            value.type.tensor_type.shape.dim[0].dim_param = "batch"
    proto.doc_string = f"MobileNet V1 {model.config.replace(image_size=size).variant} " \
                       f"({'feature vector' if head == 'features' else 'classifier'}), " \
                       "exported by tf_mobilenet_v1"
    if head != "features":
        entry = proto.metadata_props.add()
        entry.key, entry.value = "labels", labels_text(model)
    return proto.SerializeToString()


def export_onnx(model, dst, *, image_size: int | None = None, task: str = "classification",
                dynamic_batch: bool = True, force: bool = False,
                opset: int = DEFAULT_OPSET) -> str:
    """Write ``dst`` (``.onnx``); the class names are in its ``labels`` metadata property.
    Nothing is written if anything fails."""
    dst = check_writable(os.fspath(dst), force)
    if not dst.endswith(".onnx"):
        raise ValueError(f"ONNX output {dst!r} must end in .onnx")
    content = convert_onnx(model, image_size=image_size, task=task,
                           dynamic_batch=dynamic_batch, opset=opset)
    with atomic_output(dst, force, suffix=".onnx") as tmp:
        with open(tmp, "wb") as f:
            f.write(content)
    return dst


def run_onnx(path, x, output: str | None = None):
    """Run an exported ``.onnx`` with onnxruntime on (B, S, S, C) float32 ``x``; returns the
    ``output`` array (default: every output, as a dict)."""
    import numpy as np

    try:
        import onnxruntime as ort
    except ImportError as e:
        raise ImportError(f"running ONNX models needs onnxruntime: {_HINT} ({e})") from None
    session = ort.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    values = session.run(None, {session.get_inputs()[0].name: np.asarray(x, np.float32)})
    result = dict(zip(names, values, strict=True))
    return result if output is None else result[output]
