"""Which SavedModels this package runs: graphs made only of the ops an exported MobileNet V1
uses, checked in ``saved_model.pb`` before TensorFlow loads anything.

A SavedModel is a program: ``tf.saved_model.load`` and a signature call run whatever ops its
graph holds (``WriteFile``, ``PyFunc``, reading any file...). Keras files have safe mode and
``.bin`` files ``weights_only``; a SavedModel has neither, so foreign graphs are refused.
"""

from __future__ import annotations

import os
import re

from .errors import first_line
from .fileio import MAX_WEIGHTS_BYTES, check_regular_file

# Pure computation: what our exports' signatures (float, uint8, bytes; classification and
# feature vector; any config) hold, plus the close relatives another TensorFlow version or
# config may emit instead. None reads or writes files, runs Python or touches the network.
COMPUTE_OPS = frozenset("""
Abs Add AddN AddV2 ArgMax ArgMin AvgPool BatchToSpaceND BiasAdd Cast Ceil ConcatV2 Const Conv2D
DecodeBmp DecodeGif DecodeImage DecodeJpeg DecodePng DepthwiseConv2dNative Equal Exp ExpandDims
Fill Floor FloorDiv FloorMod FusedBatchNorm FusedBatchNormV3 GatherV2 Greater GreaterEqual
Identity IdentityN If Less LessEqual Log LogicalAnd LogicalNot LogicalOr MatMul Max MaxPool
Maximum Mean Min Minimum MirrorPad Mul Neg NoOp NotEqual OnesLike Pack Pad PadV2
PartitionedCall Placeholder Pow Prod Range RealDiv Relu Relu6 Reshape ResizeBilinear Round
Rsqrt Select SelectV2 Shape Sigmoid Size Slice Softmax SpaceToBatchND Split SplitV Sqrt Square
Squeeze StatefulPartitionedCall StatelessIf StatelessWhile StopGradient StridedSlice Sub
Substr Sum Tanh TensorListFromTensor TensorListGetItem TensorListReserve TensorListSetItem
TensorListStack Tile TopKV2 Transpose Unpack While ZerosLike
AssignVariableOp DisableCopyOnRead ReadVariableOp VarHandleOp VarIsInitializedOp
""".split())
# The checkpoint functions every SavedModel carries (tf.train.Checkpoint's save and restore):
# allowed there, and only if no other function calls them.
CHECKPOINT_OPS = frozenset({"MergeV2Checkpoints", "RestoreV2", "SaveV2", "ShardedFilename",
                            "StaticRegexFullMatch", "StringJoin"})
_CHECKPOINT_FUNCTION = re.compile(r"__inference__traced_(save|restore)_\d+")


def _called(nodes) -> set[str]:
    """Names of the functions that ``nodes`` call (``f``, ``then_branch``, ``body``...)."""
    names = set()
    for node in nodes:
        for attr in node.attr.values():
            if attr.HasField("func"):
                names.add(attr.func.name)
            names.update(f.name for f in attr.list.func)
    return names


def check_saved_model(path: str) -> None:
    """Refuse (``ValueError``, one line) a SavedModel whose graph holds an op that our exports
    never have, before it is loaded."""
    from google.protobuf.message import DecodeError
    from tensorflow.core.protobuf import saved_model_pb2

    pb = os.path.join(os.fspath(path), "saved_model.pb")
    check_regular_file(pb, "SavedModel graph", MAX_WEIGHTS_BYTES)
    saved = saved_model_pb2.SavedModel()
    try:
        with open(pb, "rb") as f:
            saved.ParseFromString(f.read())
    except (DecodeError, RuntimeWarning, ValueError) as e:
        raise ValueError(f"{pb} is not a SavedModel graph ({first_line(e)})") from None
    bad: set[str] = set()
    for graph in saved.meta_graphs:
        functions = graph.graph_def.library.function
        # The top-level graph's saver nodes call the checkpoint functions; a signature (a
        # library function) calling one could write anywhere.
        called = set().union(*(_called(f.node_def) for f in functions))
        bad |= {n.op for n in graph.graph_def.node} - COMPUTE_OPS
        for function in functions:
            ops = {n.op for n in function.node_def}
            saver = _CHECKPOINT_FUNCTION.fullmatch(function.signature.name) \
                and function.signature.name not in called
            bad |= ops - COMPUTE_OPS - (CHECKPOINT_OPS if saver else frozenset())
    if bad:
        raise ValueError(f"{path} runs TensorFlow ops that an exported MobileNet V1 never has "
                         f"({', '.join(sorted(bad)[:6])}); only SavedModels exported by "
                         "tf_mobilenet_v1 are run")
