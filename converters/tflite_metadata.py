"""TFLite model metadata (the ``M001`` flatbuffer the Android Task Library and MediaPipe read).

Written with the ``flatbuffers`` runtime by the table layout of tflite-support's published
``metadata_schema.fbs`` (schema 1.x): no maintained writer installs next to TF 2.21. The
packed model is what tflite-support's ``MetadataPopulator`` produces:

* the metadata bytes in a new model buffer, named by a ``metadata`` entry ``TFLITE_METADATA``;
* the associated files (``labels.txt``) in an uncompressed zip appended to the flatbuffer,
  its offsets counted from the start of the file (the model stays a valid flatbuffer, and
  the file is also a valid zip).

:func:`read_metadata` parses it back (for tests and ``tflite_summary``).
"""

from __future__ import annotations

import dataclasses
import io
import zipfile

import flatbuffers
import numpy as np
from flatbuffers import number_types as N
from flatbuffers.table import Table

METADATA_NAME = "TFLITE_METADATA"
FILE_IDENTIFIER = b"M001"
# Every field we write exists since schema 1.0.0 (tensor groups, ranges and the other later
# additions are not used), so a 1.0 parser reads all of it.
MIN_PARSER_VERSION = "1.0.0"

# Enum values from metadata_schema.fbs.
COLOR_RGB = 1
CONTENT_FEATURE, CONTENT_IMAGE = 1, 2  # ContentProperties union
PROCESS_NORMALIZATION = 1  # ProcessUnitOptions union
FILE_TENSOR_AXIS_LABELS = 2  # AssociatedFileType
_CONTENT_NAMES = {CONTENT_FEATURE: "FeatureProperties", CONTENT_IMAGE: "ImageProperties"}
_FILE_TYPES = {0: "UNKNOWN", 1: "DESCRIPTIONS", 2: "TENSOR_AXIS_LABELS",
               3: "TENSOR_VALUE_LABELS", 4: "TENSOR_AXIS_SCORE_CALIBRATION", 5: "VOCABULARY"}
_COLOR_NAMES = {0: "UNKNOWN", 1: "RGB", 2: "GRAYSCALE"}


@dataclasses.dataclass
class AssociatedFile:
    name: str
    description: str = ""
    type: str = "TENSOR_AXIS_LABELS"


@dataclasses.dataclass
class TensorMeta:
    """One input or output tensor: ``content`` is ``"image"`` (RGB) or ``"feature"``."""

    name: str
    description: str = ""
    content: str = "feature"
    image_size: tuple[int, int] | None = None  # (width, height) for images
    mean: list[float] | None = None  # NormalizationOptions; None: no process unit
    std: list[float] | None = None
    stats_min: list[float] | None = None
    stats_max: list[float] | None = None
    files: list[AssociatedFile] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class ModelMeta:
    name: str
    description: str = ""
    version: str = ""
    author: str = ""
    license: str = ""
    inputs: list[TensorMeta] = dataclasses.field(default_factory=list)
    outputs: list[TensorMeta] = dataclasses.field(default_factory=list)
    min_parser_version: str = MIN_PARSER_VERSION


# ----- writing -----

def _string(b: flatbuffers.Builder, s: str | None):
    return None if not s else b.CreateString(s)


def _table(b: flatbuffers.Builder, fields: dict):
    """Build a table from ``{slot: (kind, value)}``; kind: "off" (offset), "u8", "u32".

    Children (strings, vectors, tables) must be built already, as flatbuffers requires.
    """
    b.StartObject(max(fields) + 1 if fields else 0)
    for slot, (kind, value) in fields.items():
        if value is None:
            continue
        if kind == "off":
            b.PrependUOffsetTRelativeSlot(slot, value, 0)
        elif kind == "u8":
            b.PrependUint8Slot(slot, value, 0)
        elif kind == "u32":
            b.PrependUint32Slot(slot, value, 0)
    return b.EndObject()


def _vector(b: flatbuffers.Builder, offsets: list):
    if not offsets:
        return None
    b.StartVector(4, len(offsets), 4)
    for off in reversed(offsets):
        b.PrependUOffsetTRelative(off)
    return b.EndVector()


def _floats(b: flatbuffers.Builder, values):
    return None if values is None else b.CreateNumpyVector(np.asarray(values, np.float32))


def _file(b, f: AssociatedFile):
    types = {v: k for k, v in _FILE_TYPES.items()}
    name, desc = _string(b, f.name), _string(b, f.description)
    # AssociatedFile: name 0, description 1, type 2, locale 3
    return _table(b, {0: ("off", name), 1: ("off", desc), 2: ("u8", types[f.type])})


def _tensor(b, t: TensorMeta):
    name, desc = _string(b, t.name), _string(b, t.description)
    if t.content == "image":
        size = None
        if t.image_size:
            size = _table(b, {0: ("u32", t.image_size[0]), 1: ("u32", t.image_size[1])})
        # ImageProperties: color_space 0, default_size 1
        props, kind = _table(b, {0: ("u8", COLOR_RGB), 1: ("off", size)}), CONTENT_IMAGE
    elif t.content == "feature":
        props, kind = _table(b, {}), CONTENT_FEATURE
    else:
        raise ValueError(f"unknown tensor content {t.content!r}")
    # Content: content_properties_type 0, content_properties 1, range 2
    content = _table(b, {0: ("u8", kind), 1: ("off", props)})
    units = None
    if t.mean is not None:
        mean, std = _floats(b, t.mean), _floats(b, t.std)
        norm = _table(b, {0: ("off", mean), 1: ("off", std)})  # NormalizationOptions
        # ProcessUnit: options_type 0, options 1
        units = _vector(b, [_table(b, {0: ("u8", PROCESS_NORMALIZATION), 1: ("off", norm)})])
    stats = None
    if t.stats_min is not None or t.stats_max is not None:
        smax, smin = _floats(b, t.stats_max), _floats(b, t.stats_min)
        stats = _table(b, {0: ("off", smax), 1: ("off", smin)})  # Stats: max 0, min 1
    files = _vector(b, [_file(b, f) for f in t.files])
    # TensorMetadata: name 0, description 1, dimension_names 2, content 3, process_units 4,
    # stats 5, associated_files 6
    return _table(b, {0: ("off", name), 1: ("off", desc), 3: ("off", content),
                      4: ("off", units), 5: ("off", stats), 6: ("off", files)})


def build_metadata(meta: ModelMeta) -> bytes:
    """The ``M001`` metadata flatbuffer for ``meta`` (one subgraph)."""
    b = flatbuffers.Builder(1024)
    inputs = _vector(b, [_tensor(b, t) for t in meta.inputs])
    outputs = _vector(b, [_tensor(b, t) for t in meta.outputs])
    # SubGraphMetadata: name 0, description 1, input_tensor_metadata 2, output_tensor_metadata 3
    subgraph = _table(b, {2: ("off", inputs), 3: ("off", outputs)})
    subgraphs = _vector(b, [subgraph])
    strings = {k: _string(b, getattr(meta, k)) for k in
               ("name", "description", "version", "author", "license", "min_parser_version")}
    # ModelMetadata: name 0, description 1, version 2, subgraph_metadata 3, author 4,
    # license 5, associated_files 6, min_parser_version 7
    root = _table(b, {0: ("off", strings["name"]), 1: ("off", strings["description"]),
                      2: ("off", strings["version"]), 3: ("off", subgraphs),
                      4: ("off", strings["author"]), 5: ("off", strings["license"]),
                      7: ("off", strings["min_parser_version"])})
    b.Finish(root, file_identifier=FILE_IDENTIFIER)
    return bytes(b.Output())


def populate(model: bytes, metadata: bytes, files: dict[str, bytes]) -> bytes:
    """``model`` with ``metadata`` as its ``TFLITE_METADATA`` buffer and ``files`` zipped after.

    Any earlier ``TFLITE_METADATA`` entry is replaced (its old buffer is left empty).
    """
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    m = schema.ModelT.InitFromPackedBuf(bytearray(model), 0)
    m.metadata = [e for e in (m.metadata or []) if _name(e.name) != METADATA_NAME]
    buf = schema.BufferT()
    buf.data = np.frombuffer(metadata, np.uint8)
    m.buffers.append(buf)
    entry = schema.MetadataT()
    entry.name, entry.buffer = METADATA_NAME, len(m.buffers) - 1
    m.metadata.append(entry)
    packed = bytes(flatbuffer_utils.convert_object_to_bytearray(m))
    if not files:
        return packed
    out = io.BytesIO()
    out.write(packed)
    # Stored, not deflated: the Task Library and MediaPipe read the files in place.
    with zipfile.ZipFile(out, "a", compression=zipfile.ZIP_STORED) as z:
        for name, data in files.items():
            z.writestr(zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0)), data)
    return out.getvalue()


def _name(n) -> str:
    return n.decode() if isinstance(n, bytes) else (n or "")


# ----- reading -----

class _T:
    """A table of the metadata flatbuffer, read field by slot."""

    def __init__(self, buf, pos):
        self.t = Table(buf, pos)

    def _off(self, slot):
        return self.t.Offset(4 + 2 * slot)

    def str(self, slot):
        o = self._off(slot)
        return self.t.String(o + self.t.Pos).decode("utf-8") if o else None

    def u8(self, slot):
        o = self._off(slot)
        return self.t.Get(N.Uint8Flags, o + self.t.Pos) if o else 0

    def u32(self, slot):
        o = self._off(slot)
        return self.t.Get(N.Uint32Flags, o + self.t.Pos) if o else 0

    def table(self, slot):
        o = self._off(slot)
        return _T(self.t.Bytes, self.t.Indirect(o + self.t.Pos)) if o else None

    def tables(self, slot):
        o = self._off(slot)
        if not o:
            return []
        start, n = self.t.Vector(o), self.t.VectorLen(o)
        return [_T(self.t.Bytes, self.t.Indirect(start + 4 * i)) for i in range(n)]

    def floats(self, slot):
        o = self._off(slot)
        if not o:
            return None
        return [float(v) for v in self.t.GetVectorAsNumpy(N.Float32Flags, o)]


def _read_tensor(t: _T) -> dict:
    out = {"name": t.str(0), "description": t.str(1)}
    content = t.table(3)
    if content is not None:
        kind = content.u8(0)
        out["content"] = _CONTENT_NAMES.get(kind, str(kind))
        props = content.table(1)
        if kind == CONTENT_IMAGE and props is not None:
            out["color_space"] = _COLOR_NAMES.get(props.u8(0), str(props.u8(0)))
            size = props.table(1)
            if size is not None:
                out["default_size"] = (size.u32(0), size.u32(1))
    for unit in t.tables(4):
        if unit.u8(0) == PROCESS_NORMALIZATION:
            norm = unit.table(1)
            out["normalization"] = {"mean": norm.floats(0), "std": norm.floats(1)}
    stats = t.table(5)
    if stats is not None:
        out["stats"] = {"max": stats.floats(0), "min": stats.floats(1)}
    out["associated_files"] = [{"name": f.str(0), "description": f.str(1),
                                "type": _FILE_TYPES.get(f.u8(2), str(f.u8(2)))}
                               for f in t.tables(6)]
    return out


def metadata_buffer(model: bytes) -> bytes | None:
    """The raw ``TFLITE_METADATA`` bytes of a ``.tflite`` (None if it has none)."""
    from tensorflow.lite.python import schema_py_generated as schema

    m = schema.Model.GetRootAs(model, 0)
    for i in range(m.MetadataLength()):
        entry = m.Metadata(i)
        if _name(entry.Name()) == METADATA_NAME:
            b = m.Buffers(entry.Buffer())
            if b.Offset():  # stored after the flatbuffer (models over 2 GB)
                return bytes(model[b.Offset():b.Offset() + b.Size()])
            return b.DataAsNumpy().tobytes()
    return None


def _model_bytes(model) -> bytes:
    """A ``.tflite`` given as a path or as bytes, as bytes."""
    if isinstance(model, (bytes, bytearray, memoryview)):
        return bytes(model)
    with open(model, "rb") as f:
        return f.read()


def read_metadata(model) -> dict | None:
    """Metadata of a ``.tflite`` (path or bytes) as a dict, plus ``packed_files``: the names
    in its appended zip. None when the model has no metadata."""
    model = _model_bytes(model)
    raw = metadata_buffer(model)
    if raw is None:
        return None
    if not flatbuffers.util.BufferHasIdentifier(raw, 0, FILE_IDENTIFIER):
        raise ValueError("TFLITE_METADATA is not an M001 metadata flatbuffer")
    root = _T(raw, flatbuffers.encode.Get(N.UOffsetTFlags.packer_type, raw, 0))
    subgraphs = root.tables(3)
    out = {k: root.str(i) for i, k in enumerate(
        ("name", "description", "version", None, "author", "license")) if k}
    out["min_parser_version"] = root.str(7)
    out["inputs"] = [_read_tensor(t) for t in subgraphs[0].tables(2)] if subgraphs else []
    out["outputs"] = [_read_tensor(t) for t in subgraphs[0].tables(3)] if subgraphs else []
    out["packed_files"] = packed_files(model)
    return out


def packed_files(model: bytes) -> dict[str, bytes]:
    """The associated files zipped after the flatbuffer (empty if none)."""
    try:
        with zipfile.ZipFile(io.BytesIO(model)) as z:
            return {i.filename: z.read(i) for i in z.infolist()}
    except zipfile.BadZipFile:
        return {}


def validate(model) -> dict:
    """Read the metadata and check what clients rely on; returns it, raises ValueError."""
    from tensorflow.lite.python import schema_py_generated as schema

    model = _model_bytes(model)
    meta = read_metadata(model)
    if meta is None:
        raise ValueError("the model has no TFLITE_METADATA")
    sg = schema.Model.GetRootAs(model, 0).Subgraphs(0)
    if (len(meta["inputs"]), len(meta["outputs"])) != (sg.InputsLength(), sg.OutputsLength()):
        raise ValueError("metadata tensor counts differ from the model's inputs / outputs")
    files = meta["packed_files"]
    for t in meta["inputs"] + meta["outputs"]:
        for f in t["associated_files"]:
            if f["name"] not in files:
                raise ValueError(f"associated file {f['name']} is not packed in the model")
    for t in meta["inputs"]:
        norm = t.get("normalization")
        if norm and len(norm["mean"]) != len(norm["std"]):
            raise ValueError(f"input {t['name']}: mean and std differ in length")
    return meta
