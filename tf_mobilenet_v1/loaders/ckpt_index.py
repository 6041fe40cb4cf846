"""Validate a TF checkpoint's ``.index`` before TensorFlow reads it.

TensorFlow's bundle reader aborts the whole process (SIGABRT, no exception) on entries with a
negative dimension, an absurd rank or an unknown dtype. The ``.index`` file is a documented
LevelDB-style table (footer, index block, data blocks of prefix-compressed keys) whose values
are ``BundleEntryProto`` messages, so it can be checked in Python first: every entry must have
a known dtype, a sane shape whose byte size matches the entry's, a shard that exists and a
byte range inside it, and all entries together must fit what a MobileNet V1 can need.
"""

from __future__ import annotations

import math
import os
import struct

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48
BLOCK_TRAILER = 5  # compression type byte + crc32
MAX_RANK = 8
MAX_INDEX_BYTES = 16 << 20  # an index of a few hundred tensors is a few kB
# The largest MobileNet V1 (1.0, float32) stores about 17 MB; EMA shadows and two optimizer
# slots per variable make four times that. Anything far beyond is not a MobileNet V1.
MAX_TOTAL_BYTES = 256 << 20

# DataType enum value -> bytes per element (None: variable length, e.g. strings).
_ITEM_SIZE = {1: 4, 2: 8, 3: 4, 4: 1, 5: 2, 6: 1, 7: None, 9: 8, 10: 1, 14: 2, 17: 2, 19: 2,
              22: 4, 23: 8}


class _Bad(ValueError):
    pass


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise _Bad("a varint runs past its block")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return result, pos


def _block(data: bytes, handle: bytes) -> bytes:
    offset, pos = _varint(handle, 0)
    size, _ = _varint(handle, pos)
    if offset + size + BLOCK_TRAILER > len(data):
        raise _Bad("a block lies outside the file")
    if data[offset + size] != 0:
        raise _Compressed()
    return data[offset:offset + size]


class _Compressed(Exception):
    """A snappy-compressed block: not checked here (the caller reads it in a child process)."""


def _entries(block: bytes):
    if len(block) < 4:
        raise _Bad("a block is too short")
    restarts = struct.unpack_from("<I", block, len(block) - 4)[0]
    end = len(block) - 4 - 4 * restarts
    if restarts == 0 or end < 0:
        raise _Bad("a block has a bad restart table")
    pos, key = 0, b""
    while pos < end:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        length, pos = _varint(block, pos)
        if shared > len(key) or pos + unshared + length > end:
            raise _Bad("an entry runs past its block")
        key = key[:shared] + block[pos:pos + unshared]
        pos += unshared
        yield key, block[pos:pos + length]
        pos += length


def _read_table(path: str) -> list[tuple[bytes, bytes]]:
    size = os.path.getsize(path)
    if size < FOOTER_SIZE or size > MAX_INDEX_BYTES:
        raise _Bad(f"its size ({size:,} bytes) is not that of a checkpoint index")
    with open(path, "rb") as f:
        data = f.read(MAX_INDEX_BYTES + 1)
    footer = data[-FOOTER_SIZE:]
    if struct.unpack("<Q", footer[-8:])[0] != TABLE_MAGIC:
        raise _Bad("it does not end in the table magic number")
    _, pos = _varint(footer, 0)
    _, pos = _varint(footer, pos)  # metaindex handle: unused by TensorFlow's bundles
    index = _block(data, footer[pos:])
    entries = []
    for _, handle in _entries(index):
        entries.extend(_entries(_block(data, handle)))
    return entries


def _check_entry(name: str, entry, shards: int, shard_sizes: dict[int, int | None]) -> int:
    from tensorflow.core.framework import types_pb2

    dtype = entry.dtype
    if dtype not in _ITEM_SIZE:
        known = types_pb2.DataType.Name(dtype) if dtype in types_pb2.DataType.values() \
            else f"unknown dtype {dtype}"
        raise _Bad(f"tensor {name} has {known}, which no MobileNet V1 checkpoint holds")
    if entry.shape.unknown_rank or len(entry.shape.dim) > MAX_RANK:
        raise _Bad(f"tensor {name} has rank {len(entry.shape.dim)} (at most {MAX_RANK})")
    dims = [d.size for d in entry.shape.dim]
    if any(d < 0 for d in dims):
        raise _Bad(f"tensor {name} has a negative dimension {dims}")
    if entry.slices:
        return 0  # a partitioned variable's slices are entries of their own
    itemsize = _ITEM_SIZE[dtype]
    if itemsize is not None and math.prod(dims) * itemsize != entry.size:
        raise _Bad(f"tensor {name} of shape {dims} needs {math.prod(dims) * itemsize:,} bytes "
                   f"but its entry says {entry.size:,}")
    if not 0 <= entry.shard_id < shards:
        raise _Bad(f"tensor {name} is in shard {entry.shard_id} of {shards}")
    available = shard_sizes.get(entry.shard_id)
    if available is not None and entry.offset + entry.size > available:
        raise _Bad(f"tensor {name} lies outside its data file (bytes {entry.offset:,}+"
                   f"{entry.size:,} of {available:,}): truncated")
    return entry.size


def validate_index(prefix: str) -> bool:
    """Check ``prefix.index`` (and the sizes of its data shards); raise ``ValueError`` naming
    what is wrong. Returns False when its blocks are compressed and were not checked."""
    from tensorflow.core.protobuf import tensor_bundle_pb2

    path = prefix + ".index"
    try:
        entries = _read_table(path)
        header = tensor_bundle_pb2.BundleHeaderProto()
        if not entries or entries[0][0] != b"":
            raise _Bad("it has no bundle header")
        header.ParseFromString(entries[0][1])
        shards = header.num_shards
        if not 1 <= shards <= 1024:
            raise _Bad(f"its header declares {shards} data shards")
        sizes = {}
        for i in range(shards):
            data = f"{prefix}.data-{i:05d}-of-{shards:05d}"
            sizes[i] = os.path.getsize(data) if os.path.isfile(data) else None
        total = 0
        for key, value in entries[1:]:
            entry = tensor_bundle_pb2.BundleEntryProto()
            entry.ParseFromString(value)
            total += _check_entry(key.decode("utf-8", "replace"), entry, shards, sizes)
            if total > MAX_TOTAL_BYTES:
                raise _Bad(f"its tensors need more than {MAX_TOTAL_BYTES >> 20} MiB, far more "
                           "than any MobileNet V1")
    except _Compressed:
        return False
    except (_Bad, struct.error) as e:
        raise ValueError(f"checkpoint index {path} is truncated or corrupt (or crafted): "
                         f"{e}; pass an official or self-written checkpoint") from None
    except Exception as e:  # noqa: BLE001 - protobuf's DecodeError and friends
        raise ValueError(f"checkpoint index {path} is truncated or corrupt (or crafted): "
                         f"{type(e).__name__}: {e}") from None
    return True
