"""Weights out of a frozen TF1 GraphDef (``frozen_graph.pb``, ``*_frozen.pb``), by parsing only.

Freezing turns each variable into a ``Const`` node of the same name (read through an
``<name>/read`` Identity), so the weights can be taken from the protobuf without importing or
running the graph.
"""

from __future__ import annotations

import math

import numpy as np

from ..fileio import MAX_WEIGHTS_BYTES

# Last name parts of slim variables; such a Const is a weight even without a /read node.
VARIABLE_LEAVES = frozenset({
    "weights", "depthwise_weights", "biases", "gamma", "beta", "moving_mean", "moving_variance",
    "min", "max", "ExponentialMovingAverage",
})
_VARIABLE_OPS = frozenset({"VariableV2", "Variable", "VarHandleOp"})
# A Const may declare any shape with a single value that make_ndarray repeats to fill it, so a
# few hundred bytes can ask for gigabytes: the declared sizes (elements x dtype width) are added
# up and checked against the weights cap before anything is allocated.
_MAX_RANK = 8


def _node_input_name(name: str) -> str:
    return name.lstrip("^").split(":")[0]


def read_frozen_graph(data: bytes, source: str) -> tuple[dict[str, np.ndarray], int | None]:
    """``({variable name: array}, input resolution or None)`` from serialized GraphDef bytes."""
    import tensorflow as tf
    from google.protobuf.message import DecodeError

    graph_def = tf.compat.v1.GraphDef()
    try:
        graph_def.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError):
        raise ValueError(
            f"{source} is not a frozen TensorFlow GraphDef; pass frozen_graph.pb, a slim "
            "checkpoint or a release .tgz"
        ) from None
    nodes = list(graph_def.node)
    if not nodes:
        raise ValueError(f"{source} holds an empty graph; pass frozen_graph.pb, a slim "
                         "checkpoint or a release .tgz")
    if any(n.op in _VARIABLE_OPS for n in nodes):
        raise ValueError(f"{source} still holds variables (it is not frozen); pass the "
                         "checkpoint it was trained with instead")
    read_targets = {
        _node_input_name(n.input[0]) for n in nodes
        if n.op == "Identity" and n.input and n.name == _node_input_name(n.input[0]) + "/read"
    }
    weights = [n for n in nodes if n.op == "Const" and (
        n.name in read_targets or n.name.rsplit("/", 1)[-1] in VARIABLE_LEAVES)]
    total = 0
    for n in weights:  # every declared size is checked before anything is allocated
        proto = n.attr["value"].tensor
        dims = [d.size for d in proto.tensor_shape.dim]
        if len(dims) > _MAX_RANK or any(d < 0 for d in dims):
            raise ValueError(f"{source}: constant {n.name} declares the shape {dims}, which "
                             "no MobileNet V1 weight has; the graph is corrupt or crafted")
        try:
            width = tf.dtypes.as_dtype(proto.dtype).size
        except (TypeError, ValueError):
            raise ValueError(f"{source}: constant {n.name} has an unknown dtype "
                             f"({proto.dtype}); the graph is corrupt or crafted") from None
        total += math.prod(dims) * width
        if total > MAX_WEIGHTS_BYTES:
            raise ValueError(f"{source}: constant {n.name} declares the shape {dims}, "
                             f"which takes the weights past {MAX_WEIGHTS_BYTES:,} bytes, "
                             "more than any MobileNet V1; the graph is corrupt or crafted")
    tensors = {}
    for n in weights:
        try:
            tensors[n.name] = np.asarray(tf.make_ndarray(n.attr["value"].tensor))
        except (TypeError, ValueError) as e:
            raise ValueError(f"{source}: constant {n.name} is malformed ({e}); the graph is "
                             "corrupt") from None
    return tensors, _input_resolution(nodes)


def _input_resolution(nodes) -> int | None:
    """Square static height/width of the single image placeholder, if the graph fixes one."""
    placeholders = [n for n in nodes if n.op == "Placeholder"]
    if len(placeholders) != 1:
        return None
    dims = [d.size for d in placeholders[0].attr["shape"].shape.dim]
    if len(dims) == 4 and dims[1] == dims[2] and dims[1] > 0:
        return int(dims[1])
    return None
