"""Release tarballs read directly: 2018 ``<name>.tgz`` (``.ckpt.*``, ``_frozen.pb``, ``.tflite``)
and 2017 ``<name>_frozen.tgz`` (``<name>/frozen_graph.pb``, ``quantized_graph.pb``).

A checkpoint is preferred over a frozen graph (it also holds moving averages and quantization
ranges). Its two files are copied under their base names into a temporary directory, the only
place anything is written; frozen graphs are parsed from memory.
"""

from __future__ import annotations

import os
import posixpath
import tarfile
import zlib

import numpy as np

from ..errors import first_line
from ..fileio import MAX_WEIGHTS_BYTES, check_regular_file, scratch_directory
from ..variants import release_stem

_TAR_ERRORS = (tarfile.TarError, EOFError, OSError, zlib.error)
# The 2018 release tarballs are under 100 MB and hold a dozen files. Both caps bound what a
# small, highly compressed archive can make us decompress, list or hold in memory.
MAX_ARCHIVE_BYTES = 1 << 30
MAX_MEMBERS = 1000


def _fail(path: str, err: Exception):
    first = first_line(err)
    raise ValueError(
        f"cannot read {path} as a tar archive ({first}); it is truncated or corrupt, so "
        "download it again"
    ) from None


def find_model_members(names: list[str], tar_path: str) -> tuple[str, str]:
    """``("checkpoint", prefix)`` or ``("graph", member)``: the model a tarball holds."""
    indexes = [n[: -len(".index")] for n in names if n.endswith(".index")]
    indexes = [p for p in indexes if any(n.startswith(p + ".data-") for n in names)]
    if indexes:
        if len(indexes) > 1:
            named = [p for p in indexes if posixpath.basename(p).split(".ckpt")[0]
                     == release_stem(tar_path)]
            if len(named) != 1:
                raise ValueError(f"{tar_path} holds several checkpoints "
                                 f"({', '.join(indexes)}); extract it and pass one prefix")
            indexes = named
        return "checkpoint", indexes[0]
    graphs = [n for n in names if posixpath.basename(n) == "frozen_graph.pb"
              or n.endswith("_frozen.pb")]
    if len(graphs) == 1:
        return "graph", graphs[0]
    found = ", ".join(posixpath.basename(n) for n in names[:6]) or "nothing"
    what = "several frozen graphs" if graphs else "no MobileNet V1 checkpoint (.ckpt.index + " \
        ".data) or frozen graph (frozen_graph.pb, *_frozen.pb)"
    raise ValueError(f"{tar_path} holds {what} (found {found}); pass a release tarball, "
                     "checkpoint or frozen graph")


def _members(tar: tarfile.TarFile, path: str) -> dict[str, tarfile.TarInfo]:
    """The archive's regular files, read one header at a time so that the caps apply early."""
    members, total = {}, 0
    for m in tar:
        if len(tar.members) > MAX_MEMBERS:
            raise ValueError(f"{path} lists more than {MAX_MEMBERS} members; a MobileNet V1 "
                             "release holds a dozen, so it is not one")
        total += m.size
        if total > MAX_ARCHIVE_BYTES:
            raise ValueError(f"{path} unpacks to more than {MAX_ARCHIVE_BYTES:,} bytes; a "
                             "MobileNet V1 release is under 100 MB, so it is corrupt or crafted")
        if m.isfile():
            members[m.name] = m
    return members


def read_tarball(path: str) -> tuple[dict[str, np.ndarray], int | None, str]:
    """All tensors of the model in a release tarball, a resolution hint and a description."""
    from .frozen_graph import read_frozen_graph
    from .tf_checkpoint import read_checkpoint

    check_regular_file(path, "tarball", MAX_ARCHIVE_BYTES)
    try:
        with tarfile.open(path, "r:*") as tar:
            members = _members(tar, path)
            kind, name = find_model_members(sorted(members), path)
            desc = f"{path}:{name}"
            wanted = [m for n, m in members.items() if n == name or n == name + ".index"
                      or n.startswith(name + ".data-")]
            claimed = sum(m.size for m in wanted)
            if claimed > MAX_WEIGHTS_BYTES:
                raise ValueError(f"{path}: the model's members claim {claimed:,} bytes, more "
                                 f"than any MobileNet V1 (at most {MAX_WEIGHTS_BYTES:,}); the "
                                 "archive is corrupt or crafted")
            if kind == "graph":
                tensors, resolution = read_frozen_graph(tar.extractfile(members[name]).read(),
                                                        desc)
                return tensors, resolution, desc
            parts = [m for n, m in members.items()
                     if n == name + ".index" or n.startswith(name + ".data-")]
            with scratch_directory("mobilenet_v1_tgz_") as tmp:
                for m in parts:
                    # Base names only: nothing in the archive chooses where files land.
                    with open(os.path.join(tmp, posixpath.basename(m.name)), "wb") as out:
                        out.write(tar.extractfile(m).read())
                prefix = os.path.join(tmp, posixpath.basename(name))
                try:
                    tensors = read_checkpoint(prefix)
                except ValueError:
                    raise ValueError(f"the checkpoint {name} inside {path} is corrupt; "
                                     "download the tarball again") from None
            return tensors, None, desc
    except _TAR_ERRORS as e:
        _fail(path, e)
