"""MobileNet V1 ``.tflite`` models (float, or uint8 / int8 quantized) as weights.

The flatbuffer is parsed with the schema module that ``ai-edge-litert`` ships (no TensorFlow,
nothing run). The 27 convolutions (+ the ``Logits`` 1x1 convolution) are matched in execution
order against the architecture table: kinds, strides, SAME padding, ReLU6 and every shape,
strictly; anything else is refused. Batch norm arrives folded into the convolutions (how every
TFLite MobileNet is made), so the model is the folded one. Quantized weights are dequantized
(``scale * (q - zero_point)``, per tensor or per channel) and the activation ranges are kept
in ``model.quant_ranges`` as the ``_quant`` checkpoints' ``{scope: (min, max)}``. Labels come
from the metadata's packed ``labels.txt``, the processor from its normalization options.
"""

from __future__ import annotations

import os
import zipfile

import numpy as np

from ..architecture import LOGITS_NAME, infer_depth_multiplier, layer_specs
from ..config import MobileNetV1Config
from ..errors import first_line
from ..fileio import MAX_JSON_BYTES, MAX_WEIGHTS_BYTES, check_regular_file
from ..labels import default_id2label
from ..litert import LITERT_HINT, make_interpreter
from .source import WeightSource, tensor_problem

SCOPE = "MobilenetV1"  # the _quant checkpoints' scope, for quant_ranges keys
_CONVS = {"CONV_2D": ("conv", "pointwise"), "DEPTHWISE_CONV_2D": ("depthwise",)}
# Ops a MobileNet V1 classifier or feature extractor has besides its convolutions.
_OTHER_OPS = frozenset({"AVERAGE_POOL_2D", "MEAN", "RESHAPE", "SQUEEZE", "SOFTMAX", "QUANTIZE",
                        "DEQUANTIZE"})


def _schema():
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError as e:
        raise ImportError(f"reading .tflite weights needs ai-edge-litert: {LITERT_HINT} ({e})") \
            from None
    return schema


def _names(enum) -> dict[int, str]:
    return {v: k for k, v in vars(enum).items() if not k.startswith("_")}


class _Graph:
    """The main subgraph of a parsed model: its ops by name and its tensors as numpy."""

    def __init__(self, buf: bytes, path: str):
        schema = _schema()
        if len(buf) < 8 or not schema.Model.ModelBufferHasIdentifier(buf, 0):
            raise ValueError(f"{path} is not a TFLite model (no 'TFL3' identifier); pass a "
                             ".tflite file")
        try:
            self.model = schema.ModelT.InitFromPackedBuf(buf, 0)
            self.graph = self.model.subgraphs[0]
        except Exception as e:  # noqa: BLE001 - a damaged flatbuffer raises anything
            raise ValueError(f"{path} is a damaged TFLite model ({type(e).__name__}); export "
                             "or download it again") from None
        self.path, self.schema = path, schema
        self.types = _names(schema.TensorType)
        builtins = _names(schema.BuiltinOperator)
        self.ops = []
        for op in self.graph.operators or []:
            code = self.model.operatorCodes[op.opcodeIndex]
            self.ops.append((builtins.get(max(code.builtinCode, code.deprecatedBuiltinCode),
                                          "CUSTOM"), op))

    def tensor(self, index: int):
        return self.graph.tensors[index]

    def shape(self, index: int) -> tuple[int, ...]:
        return tuple(int(d) for d in self.tensor(index).shape)

    def value(self, index: int) -> np.ndarray:
        """A constant tensor, dequantized to float32 when it is quantized."""
        t = self.tensor(index)
        data = self.model.buffers[t.buffer].data
        dtype = {"FLOAT32": np.float32, "FLOAT16": np.float16, "UINT8": np.uint8,
                 "INT8": np.int8, "INT32": np.int32}.get(self.types.get(t.type))
        shape = self.shape(index)
        if dtype is None or data is None or \
                len(data) != int(np.prod(shape)) * np.dtype(dtype).itemsize:
            raise ValueError(f"{self.path}: {t.name.decode(errors='replace')} is not a stored "
                             f"{'x'.join(map(str, shape))} tensor of a known type; the file is "
                             "damaged or not a MobileNet V1")
        q = np.frombuffer(np.asarray(data, np.uint8).tobytes(), dtype).reshape(shape)
        scale = _quant(t)
        if scale is None:
            return q.astype(np.float32)
        scales, zeros, axis = scale
        view = [1] * len(shape)
        if len(scales) > 1:
            view[axis] = len(scales)
        return ((q.astype(np.float64) - zeros.reshape(view)) * scales.reshape(view)) \
            .astype(np.float32)

    def act_range(self, index: int) -> tuple[float, float] | None:
        """The float range an 8-bit activation tensor covers, or ``None`` (float)."""
        t = self.tensor(index)
        scale = _quant(t)
        if scale is None or len(scale[0]) != 1:
            return None
        lo, hi = (0, 255) if self.types.get(t.type) == "UINT8" else (-128, 127)
        s, z = float(scale[0][0]), float(scale[1][0])
        return (s * (lo - z), s * (hi - z))


def _quant(t):
    q = t.quantization
    if q is None or q.scale is None or not len(q.scale):
        return None
    zeros = np.zeros(len(q.scale)) if q.zeroPoint is None else np.asarray(q.zeroPoint, float)
    return np.asarray(q.scale, np.float64), zeros, int(q.quantizedDimension)


def read_tflite(path: str) -> WeightSource:
    """A MobileNet V1 ``.tflite`` as a folded ``WeightSource`` (see the module docstring)."""
    path = os.fspath(path)
    check_regular_file(path, "TFLite model", MAX_WEIGHTS_BYTES)
    with open(path, "rb") as f:
        buf = f.read()
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise ValueError(f"{path} is not a TFLite model (no 'TFL3' identifier); pass a .tflite "
                         "file")
    try:
        # LiteRT's C++ verifier first: the Python flatbuffer parser trusts every offset and
        # length, so a damaged file could send it far outside the buffer or into a huge loop.
        make_interpreter(buf)
    except (ValueError, RuntimeError) as e:
        raise ValueError(f"{path} is a damaged TFLite model ({first_line(e)[:200]}); export or "
                         "download it again") from None
    g = _Graph(buf, path)
    unknown = sorted({name for name, _ in g.ops} - set(_CONVS) - _OTHER_OPS)
    if unknown:
        raise ValueError(f"{path} is not a MobileNet V1 TFLite model: it has {', '.join(unknown)} "
                         "ops, which MobileNet V1 never has")
    convs = [(name, op) for name, op in g.ops if name in _CONVS]
    specs = layer_specs()
    if len(convs) not in (len(specs), len(specs) + 1):
        raise ValueError(f"{path} is not a MobileNet V1 TFLite model: it has {len(convs)} "
                         f"convolutions where MobileNet V1 has {len(specs)} (+1 for the "
                         "classifier)")
    (inp,) = g.graph.inputs
    in_shape = g.shape(inp)
    if len(in_shape) != 4 or in_shape[1] != in_shape[2]:
        raise ValueError(f"{path} takes input {list(in_shape)}; a MobileNet V1 takes square "
                         "(1, size, size, channels) images")
    weights, names, widths, ranges = {}, {}, [], {}
    relu6 = g.schema.ActivationFunctionType.RELU6
    same = g.schema.Padding.SAME
    for index, (name, op) in enumerate(convs):
        spec = specs[index] if index < len(specs) else None
        kind = spec.kind if spec else "pointwise"
        layer = spec.name if spec else LOGITS_NAME
        options = op.builtinOptions
        kernel, bias = g.value(op.inputs[1]), g.value(op.inputs[2]) if len(op.inputs) > 2 \
            and op.inputs[2] >= 0 else None
        stride = (options.strideH, options.strideW)
        act = relu6 if spec else g.schema.ActivationFunctionType.NONE
        if kind not in _CONVS[name] or bias is None or options.fusedActivationFunction != act \
                or (spec and (options.padding != same or stride != (spec.stride,) * 2)) \
                or (kind == "pointwise" and kernel.shape[1:3] != (1, 1)) \
                or (kind != "pointwise" and kernel.shape[1:3] != (3, 3)):
            raise ValueError(f"{path} is not a MobileNet V1 TFLite model: convolution {index} "
                             f"({name}, stride {stride[0]}) is not slim's {layer} ({kind}, "
                             f"stride {spec.stride if spec else 1}, SAME padding, "
                             f"{'ReLU6' if spec else 'no activation'})")
        if kind == "depthwise":
            kernel = kernel[0][..., None]  # (1, h, w, c) -> Keras (h, w, c, 1)
            path_kernel, path_bias = f"{layer}/depthwise/kernel", f"{layer}/depthwise/bias"
        else:
            kernel = kernel.transpose(1, 2, 3, 0)  # OHWI -> Keras HWIO
            path_kernel, path_bias = (f"{layer}/kernel", f"{layer}/bias") if not spec \
                else (f"{layer}/conv/kernel", f"{layer}/conv/bias")
            widths.append(kernel.shape[-1])
        for key, value, tensor in ((path_kernel, kernel, op.inputs[1]),
                                   (path_bias, bias, op.inputs[2])):
            problem = tensor_problem(value)
            if problem:
                raise ValueError(f"{path}: {g.tensor(tensor).name.decode(errors='replace')} "
                                 f"{problem}")
            weights[key] = value
            names[key] = g.tensor(tensor).name.decode(errors="replace")
        scope = f"{SCOPE}/{layer}" if spec else f"{SCOPE}/Logits/Conv2d_1c_1x1"
        for suffix, tensor in (("weights_quant", op.inputs[1]), ("act_quant", op.outputs[0])):
            r = g.act_range(tensor)
            if r is not None:
                ranges[f"{scope}/{suffix}"] = r
    has_head = len(convs) == len(specs) + 1
    backbone_widths = widths[:-1] if has_head else widths
    try:
        multiplier, min_depth = infer_depth_multiplier(backbone_widths)
    except ValueError as e:
        raise ValueError(f"{path} is not a MobileNet V1 TFLite model: {e}") from None
    num_labels = int(weights[f"{LOGITS_NAME}/kernel"].shape[-1]) if has_head else 0
    fields = {"depth_multiplier": multiplier, "min_depth": min_depth,
              "num_channels": int(in_shape[3]), "image_size": int(in_shape[1]),
              "num_labels": num_labels}
    labels = packed_labels(path, num_labels) if num_labels else None
    if labels:
        fields["id2label"] = dict(enumerate(labels))
    elif num_labels:
        fields["id2label"] = default_id2label(num_labels)
    config = MobileNetV1Config(**fields)
    source = WeightSource(config, weights, path, names=names, folded=True, quant_ranges=ranges,
                          image_processor=_processor(buf, config.image_size))
    _check_shapes(source, path)
    return source


def _check_shapes(src: WeightSource, path: str) -> None:
    from ..architecture import model_weight_shapes

    expected = model_weight_shapes(src.config, head=bool(src.config.num_labels), folded=True)
    for key, shape in expected.items():
        got = src.weights.get(key)
        if got is None or tuple(got.shape) != shape:
            raise ValueError(f"{path} is not a MobileNet V1 TFLite model: {key} has shape "
                             f"{None if got is None else tuple(got.shape)}, the "
                             f"{src.config.variant} architecture needs {shape}")


def _processor(buf: bytes, size: int) -> dict | None:
    """The processor the metadata's normalization options describe (mean and std in pixel
    units, as the Task Library applies them), or ``None`` (the default, [-1, 1])."""
    from tf_mobilenet_v1.converters.tflite_metadata import read_metadata

    from ..preprocessing import MobileNetV1ImageProcessor

    try:
        meta = read_metadata(buf)
        norm = (meta or {}).get("inputs", [{}])[0].get("normalization") or {}
        mean, std = list(norm["mean"]), list(norm["std"])
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return None  # no usable metadata: the default processor
    if len(mean) not in (1, 3) or len(std) != len(mean) or not all(
            np.isfinite(v) and 0 <= v <= 255 for v in mean) or not all(
            np.isfinite(v) and 0 < v <= 255 for v in std):
        return None
    processor = MobileNetV1ImageProcessor.for_variant(size).to_dict()
    processor["image_mean"] = [float(m) / 255 for m in (mean * 3)[:3]]
    processor["image_std"] = [float(v) / 255 for v in (std * 3)[:3]]
    return processor


def packed_labels(path: str, count: int) -> list[str] | None:
    """The label names in the model's metadata (the zip after the flatbuffer that the Android
    Task Library reads): its first text file with one line per class."""
    try:
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                if info.filename.endswith(".txt") and info.file_size <= MAX_JSON_BYTES:
                    names = z.read(info).decode("utf-8").splitlines()
                    if len(names) == count:
                        return names
    except (zipfile.BadZipFile, OSError, UnicodeDecodeError, RuntimeError):
        pass  # no metadata: the labels are unknown, not an error
    return None


def tflite_source(path: str, use_ema: bool, overrides: dict) -> WeightSource:
    """The ``.tflite`` form's reader (``formats``)."""
    return read_tflite(path)
