"""Look inside a ``.tflite`` file: operators, fused activations, I/O tensors, GPU compatibility.

Operators are read from the flatbuffer with the schema that ``ai_edge_litert`` ships; GPU
delegate compatibility is a static check of the delegate's operator and I/O rules, held against
the real delegate by tests/test_gpu_delegate.py.
"""

from __future__ import annotations

import dataclasses
import os
from collections import Counter

from tf_mobilenet_v1.litert import LITERT_HINT, make_interpreter


def _litert_schema():
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError as e:
        raise ImportError(f"reading TFLite files needs ai-edge-litert: {LITERT_HINT} ({e})") \
            from None
    return schema


def _read_bytes(model) -> bytes:
    if isinstance(model, (bytes, bytearray, memoryview)):
        return bytes(model)
    with open(os.fspath(model), "rb") as f:
        return f.read()


@dataclasses.dataclass(frozen=True)
class TFLiteOp:
    """One operator of subgraph 0: builtin name and its fused activation (``None`` if n/a)."""

    name: str
    fused_activation: str | None


def tflite_ops(model) -> list[TFLiteOp]:
    """Operators of the main subgraph in execution order (``model``: path or bytes)."""
    schema = _litert_schema()
    buf = _read_bytes(model)
    if not schema.Model.ModelBufferHasIdentifier(buf, 0):
        raise ValueError("not a TFLite flatbuffer (missing the 'TFL3' identifier)")
    m = schema.ModelT.InitFromPackedBuf(buf, 0)
    op_names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    act_names = {v: k for k, v in vars(schema.ActivationFunctionType).items()
                 if not k.startswith("_")}
    ops = []
    for op in m.subgraphs[0].operators or []:
        code = m.operatorCodes[op.opcodeIndex]
        # Codes above 127 live in builtinCode; the deprecated byte field caps at 127.
        builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
        name = op_names.get(builtin, f"BUILTIN_{builtin}")
        if builtin == schema.BuiltinOperator.CUSTOM:
            name = f"CUSTOM:{code.customCode.decode() if code.customCode else '?'}"
        act = getattr(op.builtinOptions, "fusedActivationFunction", None)
        ops.append(TFLiteOp(name, None if act is None else act_names.get(act, str(act))))
    return ops


def tflite_op_names(model) -> list[str]:
    """Builtin operator names of the main subgraph in execution order, e.g. ``CONV_2D``."""
    return [op.name for op in tflite_ops(model)]


def op_counts(model) -> dict[str, int]:
    """How many times each operator occurs, most frequent first."""
    return dict(Counter(tflite_op_names(model)).most_common())


# Ops that the GPU delegate's own checker (tflite/tools/versioning/gpu_compatibility.cc)
# accepts at all; anything else runs on the CPU or makes the delegate refuse the graph.
GPU_DELEGATE_OPS = frozenset("""
    ABS ADD ADD_N ATAN2 AVERAGE_POOL_2D BATCH_MATMUL CAST CEIL CONCATENATION CONV_2D COS CUMSUM
    DENSIFY DEPTHWISE_CONV_2D DEPTH_TO_SPACE DEQUANTIZE DIV DYNAMIC_UPDATE_SLICE ELU
    EMBEDDING_LOOKUP EQUAL EXP FLOOR FLOOR_DIV FLOOR_MOD FULLY_CONNECTED GATHER GELU GREATER
    GREATER_EQUAL HARD_SWISH LEAKY_RELU LESS LESS_EQUAL LOG LOGICAL_AND LOGISTIC LSTM MAXIMUM
    MAX_POOL_2D MEAN MINIMUM MIRROR_PAD MUL NEG NOT_EQUAL ONE_HOT PACK PAD PADV2 POW PRELU QUANTIZE
    REDUCE_MAX REDUCE_MIN REDUCE_PROD RELU RELU6 RELU_N1_TO_1 RESHAPE RESIZE_BILINEAR
    RESIZE_NEAREST_NEIGHBOR RSQRT SELECT SELECT_V2 SIGN SIN SLICE SOFTMAX SPACE_TO_DEPTH SPLIT
    SPLIT_V SQRT SQUARE SQUARED_DIFFERENCE STABLEHLO_CLAMP STRIDED_SLICE SUB SUM TANH TILE
    TRANSPOSE TRANSPOSE_CONV
""".split())
# Tensor types a GPU delegate graph can carry (it computes in float16/32; int8/uint8 only as
# quantized tensors it dequantizes, int32/bool for shapes, indices and masks).
GPU_TENSOR_TYPES = frozenset({"FLOAT32", "FLOAT16", "INT8", "UINT8", "INT32", "BOOL"})
# What the delegate's OpenGL ES path (the one MediaPipe's GPU mode runs) feeds in and reads out:
# a uint8 input fails there ("ToTensorConverter: input data size ... does not match").
GPU_IO_TYPES = frozenset({"FLOAT32"})
GPU_HINT = "for GPUs export --quantize float16, or --quantize int8 --io-type float32"


@dataclasses.dataclass(frozen=True)
class GpuCompatibility:
    """Whether the TFLite GPU delegate can take the whole graph.

    ``problems``: every operator the delegate would reject (:func:`gpu_delegate_problems`)
    and every non-float32 model input or output (``io_problems``, :func:`gpu_io_problems`).
    tests/test_gpu_delegate.py holds both against the real delegate. TensorFlow's analyzer
    (``tf.lite.experimental.Analyzer``) is not consulted: in the TF 2.21 / ai-edge-litert 2.3
    wheels it calls every model compatible, even one that the delegate splits.
    """

    compatible: bool
    problems: tuple[str, ...]
    io_problems: tuple[str, ...] = ()

    def __str__(self) -> str:
        if self.compatible:
            return "compatible with the TFLite GPU delegate (every op, float32 input and output)"
        if len(self.io_problems) == len(self.problems):
            types = " and ".join(dict.fromkeys(f"{p.split()[-1].lower()} {p.split()[0]}"
                                               for p in self.io_problems))
            return (f"NOT for the TFLite GPU delegate: {types}, and its OpenGL ES path "
                    "(MediaPipe's GPU mode) feeds float32 only; this model is for the CPU, "
                    f"NNAPI or an Edge TPU; {GPU_HINT}")
        shown = "; ".join(self.problems[:5])
        more = f" (+{len(self.problems) - 5} more)" if len(self.problems) > 5 else ""
        return f"NOT compatible with the TFLite GPU delegate: {shown}{more}"


def gpu_compatibility(model) -> GpuCompatibility:
    """Check a TFLite model (path or bytes) against the GPU delegate's operator and I/O rules."""
    io = gpu_io_problems(model)
    problems = gpu_delegate_problems(model) + io
    return GpuCompatibility(not problems, tuple(problems), tuple(io))


def gpu_io_problems(model) -> list[str]:
    """Model inputs and outputs that are not float32, as ``"input 'pixel_values' UINT8"``."""
    schema = _litert_schema()
    m = schema.ModelT.InitFromPackedBuf(_read_bytes(model), 0)
    sg = m.subgraphs[0]
    type_names = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    names = {}
    if m.signatureDefs is not None and len(m.signatureDefs) == 1:
        sig = m.signatureDefs[0]
        names = {int(t.tensorIndex): _text(t.name)
                 for t in (sig.inputs or []) + (sig.outputs or [])}
    problems = []
    for role, tensors in (("input", sg.inputs), ("output", sg.outputs)):
        for t in tensors if tensors is not None else []:
            tname = type_names.get(sg.tensors[t].type, "?")
            if tname not in GPU_IO_TYPES:
                problems.append(f"{role} {names.get(int(t), _text(sg.tensors[t].name))!r} {tname}")
    return problems


def _text(name) -> str:
    return name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)


def gpu_delegate_problems(model) -> list[str]:
    """Operators the GPU delegate would reject, as ``"Op#i NAME: reason"`` (empty if none).

    Restates, for the operators an image classifier uses, the rules of the delegate's checker
    (``gpu_compatibility.cc``): supported op, fused activation, constant weights / axes /
    paddings, runtime input counts, depthwise shapes, softmax beta, tensor types.
    """
    schema = _litert_schema()
    buf = _read_bytes(model)
    m = schema.ModelT.InitFromPackedBuf(buf, 0)
    op_names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    type_names = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    act = schema.ActivationFunctionType
    sg = m.subgraphs[0]
    buffers = m.buffers or []

    def has_data(t):
        b = buffers[sg.tensors[t].buffer] if 0 < sg.tensors[t].buffer < len(buffers) else None
        return b is not None and (b.data is not None and len(b.data) > 0 or b.size > 0)

    # The delegate folds DEQUANTIZE of a constant (float16 or int8 weights) into a constant,
    # which is how float16-weight models run natively on the GPU.
    folded = set()
    for op in sg.operators or []:
        code = m.operatorCodes[op.opcodeIndex]
        if max(code.builtinCode, code.deprecatedBuiltinCode) == schema.BuiltinOperator.DEQUANTIZE \
                and op.inputs is not None and len(op.inputs) and has_data(op.inputs[0]):
            folded.update(int(t) for t in op.outputs)

    def is_const(t):
        return has_data(t) or t in folded

    def shape(t):
        s = sg.tensors[t].shape
        return [] if s is None else [int(d) for d in s]

    problems = []
    for i, op in enumerate(sg.operators or []):
        code = m.operatorCodes[op.opcodeIndex]
        name = op_names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "?")
        inputs = [t for t in (op.inputs if op.inputs is not None else []) if t >= 0]
        outputs = [t for t in (op.outputs if op.outputs is not None else []) if t >= 0]
        runtime = [t for t in inputs if not is_const(t)]
        opts = op.builtinOptions
        why = []
        if name not in GPU_DELEGATE_OPS:
            why.append("operator not supported by the GPU delegate")
        if getattr(opts, "fusedActivationFunction", act.NONE) == act.SIGN_BIT:
            why.append("fused SIGN_BIT activation")
        for t in runtime + outputs:
            tname = type_names.get(sg.tensors[t].type, "?")
            if tname not in GPU_TENSOR_TYPES:
                why.append(f"{tname} tensor {_text(sg.tensors[t].name)!r}")
        if name in ("CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV"):
            if len(runtime) > 2 or len(outputs) != 1:
                why.append("expects 1-2 runtime inputs and 1 output")
            for field in ("strideH", "strideW", "dilationHFactor", "dilationWFactor"):
                if getattr(opts, field, 1) <= 0:
                    why.append(f"{field} <= 0")
        if name == "DEPTHWISE_CONV_2D" and len(inputs) >= 2 and outputs:
            x, w, y = shape(inputs[0]), shape(inputs[1]), shape(outputs[0])
            if len(x) != 4 or len(w) != 4 or len(y) != 4:
                why.append("input, filter and output must be 4-D")
            else:
                mult = opts.depthMultiplier or (y[3] // max(x[3], 1))
                if w[3] != y[3] or y[3] != x[3] * mult or x[0] != y[0]:
                    why.append("inconsistent depthwise shapes")
                if mult != 1 and x[3] != 1:
                    why.append("depth_multiplier != 1 with more than one input channel")
        if name in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
            if len(runtime) != 1 or len(outputs) != 1:
                why.append("expects 1 runtime input and 1 output")
            if min(opts.filterHeight, opts.filterWidth, opts.strideH, opts.strideW) <= 0:
                why.append("non-positive pool kernel or stride")
        if name in ("MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN", "REDUCE_PROD"):
            axes = inputs[1] if len(inputs) > 1 else None
            if len(runtime) != 1 or axes is None or not is_const(axes) \
                    or type_names.get(sg.tensors[axes].type) != "INT32":
                why.append("needs one runtime input and constant int32 axes")
        if name in ("PAD", "PADV2", "MIRROR_PAD"):
            pads = inputs[1] if len(inputs) > 1 else None
            if len(runtime) != 1 or pads is None or shape(pads) not in ([4, 2], [3, 2]):
                why.append("needs one runtime input and a 4x2 or 3x2 paddings tensor")
        if name in ("RESHAPE", "QUANTIZE", "TRANSPOSE", "TILE") \
                and (len(runtime) != 1 or len(outputs) != 1):
            why.append("expects 1 runtime input and 1 output")
        if name == "SOFTMAX" and getattr(opts, "beta", 1.0) != 1.0:
            why.append("softmax beta != 1")
        if name == "DEQUANTIZE" and inputs \
                and type_names.get(sg.tensors[inputs[0]].type) == "INT16":
            why.append("int16 dequantization")
        problems += [f"Op#{i} {name}: {w}" for w in dict.fromkeys(why)]
    return problems


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """A model input or output as the interpreter sees it."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    scale: float
    zero_point: int

    def __str__(self) -> str:
        q = f", quantized: real = {self.scale:.6g} * (q - {self.zero_point})" if self.scale else ""
        return f"{self.name} {self.dtype}{list(self.shape)}{q}"


def tflite_io(model) -> tuple[list[TensorInfo], list[TensorInfo]]:
    """Inputs and outputs (name, dtype, shape, quantization) via ``ai_edge_litert``."""
    interp = make_interpreter(model)
    # Name tensors by the signature's keys (pixel_values, logits) when there is one signature.
    names = {}
    signatures = interp.get_signature_list()
    if len(signatures) == 1:
        runner = interp.get_signature_runner(next(iter(signatures)))
        for details in (runner.get_input_details(), runner.get_output_details()):
            names.update({d["index"]: key for key, d in details.items()})

    def info(d):
        scale, zero = d["quantization"]
        return TensorInfo(names.get(d["index"], d["name"]), d["dtype"].__name__,
                          tuple(int(s) for s in d["shape"]), float(scale), int(zero))

    return ([info(d) for d in interp.get_input_details()],
            [info(d) for d in interp.get_output_details()])


OUTPUT_KINDS = ("probabilities", "logits", "features")


def output_kind(interp, model=None) -> str:
    """What a classifier outputs: ``probabilities``, ``logits`` or ``features``, by its
    signature's output name (our exports name it so); without one, ``probabilities`` when
    ``model`` (path or bytes) ends in a softmax (Google's hosted models), else ``logits``."""
    signatures = interp.get_signature_list()
    if len(signatures) == 1:
        outputs = next(iter(signatures.values()))["outputs"]
        if len(outputs) == 1 and outputs[0] in OUTPUT_KINDS:
            return outputs[0]
    if model is not None:
        last = [n for n in tflite_op_names(model) if n not in _SHAPE_ONLY_OPS]
        if last and last[-1] == "SOFTMAX":
            return "probabilities"
    return "logits"


# Ops after the softmax that change no value (a squeeze to (1, classes), a dequantize).
_SHAPE_ONLY_OPS = frozenset({"RESHAPE", "SQUEEZE", "DEQUANTIZE", "QUANTIZE"})


def run_tflite(model, x, num_threads: int | None = None):
    """Run a single-input, single-output model on each row of ``x``; returns the stacked outputs.

    ``x`` must already have the input's dtype (float32, or uint8/int8 for integer inputs);
    rows go one at a time (batch 1, also for a dynamic-batch model).
    """
    import numpy as np

    interp = make_interpreter(model, num_threads)
    (inp,), (out,) = interp.get_input_details(), interp.get_output_details()
    x = np.asarray(x)
    if x.dtype != inp["dtype"]:
        raise ValueError(f"input dtype {x.dtype} does not match the model's {inp['dtype']}")
    results = []
    for row in x:
        interp.set_tensor(inp["index"], row[None])
        interp.invoke()
        results.append(interp.get_tensor(out["index"])[0].copy())
    return np.stack(results)
