"""Safe output: write to a temporary sibling, then rename, so no partial file is ever left."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import sys
import tempfile
import time
from collections.abc import Iterator

from .errors import first_line

# The largest real MobileNet V1 (1.0_224) holds about 17 MB of float32 weights, 70 MB with
# optimizer slots and moving averages. Readers refuse to allocate more than this in total, so a
# few hundred crafted bytes that declare huge tensors cannot take gigabytes of memory.
MAX_WEIGHTS_BYTES = 256 << 20
# JSON files (config.json, preprocessor_config.json, shard indexes) and labels.txt are a few
# KB (ImageNet's 1001 names: 21 KB).
MAX_JSON_BYTES = 16 << 20

# Temporary outputs being written, so that a signal can remove them and end the process at
# once: an exception raised by a signal handler inside TensorFlow's C++ code comes out mangled
# (an empty TypeError, a SystemError) or not at all, so the CLI does not raise one.
_PENDING: dict[str, list[str]] = {}  # temporary directory -> parent directories made for it
_shield = {"depth": 0, "deferred": None}

_KINDS = ((stat.S_ISFIFO, "named pipe (FIFO)"), (stat.S_ISCHR, "character device"),
          (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket"), (stat.S_ISDIR, "directory"))


def check_regular_file(path: str | os.PathLike, what: str = "file",
                       max_bytes: int | None = None) -> int:
    """Return the size of ``path`` if it is a regular file (a symlink to one is fine).

    A pipe or device would block a reader forever or stream without end, and a dangling link
    is an error rather than "no file here", so each is refused with the reason.
    """
    path = os.fspath(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise FileNotFoundError(f"{what} {path} is a symbolic link to "
                                    f"{os.readlink(path)}, which does not exist") from None
        raise FileNotFoundError(f"no such file: {path}") from None
    if not stat.S_ISREG(st.st_mode):
        kind = next((name for test, name in _KINDS if test(st.st_mode)), "special file")
        raise ValueError(f"{what} {path} is a {kind}, not a regular file; pass the file itself")
    if max_bytes is not None and st.st_size > max_bytes:
        raise ValueError(f"{what} {path} is {st.st_size:,} bytes, more than any MobileNet V1 "
                         f"{what} (at most {max_bytes:,}); it is not one of ours, or is corrupt")
    return st.st_size


# What our directory outputs (HF model directories, SavedModels) hold. ``--force`` replaces a
# directory only when everything in it is one of these: it must never delete a user's folder
# that happens to be named like an output.
OUTPUT_DIR_ENTRIES = frozenset({
    "config.json", "preprocessor_config.json", "model.safetensors", "pytorch_model.bin",
    "model.safetensors.index.json", "pytorch_model.bin.index.json", "saved_model.pb",
    "saved_model.pbtxt", "fingerprint.pb", "variables", "assets", "assets.extra", "labels.txt",
    "fast.tflite", "fast.json",  # the bundled weights' shipped fast model (converters/bundle.py)
})


# What our directory outputs hold below their top level (a SavedModel's variables and
# assets.extra); a user's file anywhere in the tree makes the directory not ours.
_NESTED_ENTRIES = {
    "variables": re.compile(r"variables\.(index|data-\d{5}-of-\d{5})"),
    "assets": re.compile(r"(?!)"),  # our exports put nothing there
    "assets.extra": re.compile(r"labels\.txt|preprocessor_config\.json"),
}


def _foreign_entry(folder: str) -> str | None:
    """The first entry, at any depth, that none of our directory outputs writes, or ``None``."""
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if name not in OUTPUT_DIR_ENTRIES or os.path.islink(path):
            return name
        if os.path.isdir(path):
            pattern = _NESTED_ENTRIES.get(name)
            if pattern is None:
                return name + os.sep
            for inner in sorted(os.listdir(path)):
                inner_path = os.path.join(path, inner)
                if not pattern.fullmatch(inner) or os.path.islink(inner_path) \
                        or not os.path.isfile(inner_path):
                    return os.path.join(name, inner)
        elif name in _NESTED_ENTRIES:
            return name  # a file where our outputs have a directory
    return None


def check_archive_sizes(path: str) -> None:
    """Refuse, before anything is decompressed, a ``.keras`` archive whose members declare
    more than any MobileNet V1 (a model of a user's own included): weights over the 256 MiB
    cap, a config over 16 MiB (a million labels), or more than a few hundred members."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as zf:
            members = zf.infolist()
    except (zipfile.BadZipFile, EOFError, OSError) as e:
        raise ValueError(f"{path} is a corrupt .keras archive ({first_line(e)})") from None
    limits = {"model.weights.h5": MAX_WEIGHTS_BYTES, "config.json": MAX_JSON_BYTES,
              "metadata.json": MAX_JSON_BYTES}
    total = sum(m.file_size for m in members)
    for m in members:
        limit = limits.get(m.filename, MAX_WEIGHTS_BYTES)
        if m.file_size > limit:
            raise ValueError(f"{path}: its {m.filename} declares {m.file_size:,} bytes, more "
                             f"than any MobileNet V1 needs (at most {limit:,}); the file is "
                             "corrupt or crafted")
    if len(members) > 1000 or total > 2 * MAX_WEIGHTS_BYTES:
        raise ValueError(f"{path} declares {len(members)} members and {total:,} bytes in all, "
                         "more than any MobileNet V1 .keras; the file is corrupt or crafted")


def check_writable(dst: str | os.PathLike, force: bool = False) -> str:
    """Refuse to replace an existing output unless ``force``; return ``dst`` as a string.

    Nothing is created here (a failed run must not leave new empty directories behind):
    ``atomic_output`` makes missing parents and removes them again if the write fails.
    """
    dst = os.fspath(dst)
    if not dst.strip():
        raise ValueError("the output path is empty; name a file or directory to write")
    if os.path.lexists(dst) and not force:
        raise FileExistsError(f"{dst} already exists; pass force=True (CLI: --force) to replace it")
    if os.path.exists(dst) and not (os.path.isfile(dst) or os.path.isdir(dst)):
        # --force replaces outputs, never a device, pipe or socket (think /dev/null as root).
        raise FileExistsError(f"{dst} is not a regular file or directory; write elsewhere")
    if os.path.isdir(dst) and not os.path.islink(dst):
        foreign = _foreign_entry(dst)
        if foreign:
            raise FileExistsError(
                f"{dst} is a directory that holds {foreign!r}, which none of our outputs "
                "does; --force replaces only our own outputs, so remove it yourself or write "
                "elsewhere")
    ancestor = os.path.dirname(os.path.abspath(dst))
    while not os.path.exists(ancestor):
        ancestor = os.path.dirname(ancestor)
    if not os.path.isdir(ancestor):
        raise NotADirectoryError(f"cannot write {dst}: {ancestor} is not a directory")
    return dst


def _make_parents(parent: str) -> list[str]:
    """Create ``parent`` and its missing ancestors; return those created, deepest first."""
    created = []
    path = parent
    while not os.path.exists(path):
        created.append(path)
        path = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    return created


def _remove_empty(dirs: list[str]) -> None:
    for d in dirs:
        try:
            os.rmdir(d)
        except OSError:
            break  # not empty (something else wrote there meanwhile): keep it and its parents


def _apply_umask(path: str) -> None:
    """Give a finished output the usual permissions (``mkdtemp`` and some writers use 0700 or
    0600, which a server running as another user could not read)."""
    mask = os.umask(0)
    os.umask(mask)
    if os.path.isfile(path):
        os.chmod(path, 0o666 & ~mask)
    elif os.path.isdir(path):
        # Every file of a directory output too (safetensors writes its file as 0600).
        for root, _dirs, files in os.walk(path):
            os.chmod(root, 0o777 & ~mask)
            for name in files:
                if not os.path.islink(os.path.join(root, name)):
                    os.chmod(os.path.join(root, name), 0o666 & ~mask)


# How a full disk, a quota or a read-only file system shows through the writers we call:
# OSError from Python, but TensorFlow, h5py and safetensors raise their own types and bury
# the cause in a long message.
_DISK_FAILURES = ("No space left on device", "File too large", "Disk quota exceeded",
                  "Read-only file system")


def _is_disk_error(err: Exception) -> bool:
    if isinstance(err, OSError):
        return not str(err).startswith("cannot write")  # already ours
    return any(m.lower() in str(err).lower() for m in _DISK_FAILURES)


def _write_error(dst: str, err: Exception) -> OSError:
    reason = first_line(err)
    if not isinstance(err, OSError):
        reason = next(m for m in _DISK_FAILURES if m.lower() in str(err).lower())
    return OSError(f"cannot write {dst}: {reason}; nothing was written (check free space and "
                   "permissions)")


def _commit(tmp: str, dst: str, force: bool) -> None:
    """Move a finished ``tmp`` onto ``dst``: without ``force`` it never replaces something that
    appeared meanwhile (another run writing the same output)."""
    if not force:
        if os.path.isdir(tmp):
            if os.path.lexists(dst):
                raise FileExistsError(f"{dst} was created by another process while this one "
                                      "was writing it; pass --force to replace it")
            os.rename(tmp, dst)
            return
        try:
            os.link(tmp, dst)  # fails atomically if dst exists
        except FileExistsError:
            raise FileExistsError(f"{dst} was created by another process while this one was "
                                  "writing it; pass --force to replace it") from None
        except OSError:  # a file system without hard links
            if os.path.lexists(dst):
                raise FileExistsError(f"{dst} already exists; pass --force to replace it") \
                    from None
            os.replace(tmp, dst)
        return
    if os.path.isdir(dst) and not os.path.islink(dst):
        # A directory cannot be atomically replaced: move the old one aside first.
        parent = os.path.dirname(os.path.abspath(dst))
        old = tempfile.mkdtemp(prefix=f".{os.path.basename(dst)}.", suffix=".old", dir=parent)
        os.rmdir(old)
        os.replace(dst, old)
        try:
            os.replace(tmp, dst)
        except BaseException:
            os.replace(old, dst)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, dst)


@contextlib.contextmanager
def _shielded() -> Iterator[None]:
    """Hold off ``end_process`` while temporary outputs are registered or moved into place, so
    a signal never leaves an output half-replaced."""
    _shield["depth"] += 1
    try:
        yield
    finally:
        _shield["depth"] -= 1
        deferred = _shield["deferred"]
        if not _shield["depth"] and deferred:
            end_process(*deferred)


def end_process(code: int, message: str) -> None:
    """Remove this process's temporary outputs, print ``message`` and exit with ``code`` now
    (the CLI's SIGTERM / Ctrl-C handler); existing outputs are left as they were."""
    if _shield["depth"]:
        _shield["deferred"] = (code, message)
        return
    for tmp_dir, created in list(_PENDING.items()):
        shutil.rmtree(tmp_dir, ignore_errors=True)
        _remove_empty(created)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError, RuntimeError):
            stream.flush()
    with contextlib.suppress(OSError, ValueError, RuntimeError):
        print(message, file=sys.stderr, flush=True)
    os._exit(code)


@contextlib.contextmanager
def scratch_directory(prefix: str) -> Iterator[str]:
    """A private temporary directory, removed afterwards (and by ``end_process``)."""
    with _shielded():
        tmp = tempfile.mkdtemp(prefix=prefix)
        _PENDING[tmp] = []
    try:
        yield tmp
    finally:
        with _shielded():
            shutil.rmtree(tmp, ignore_errors=True)
            _PENDING.pop(tmp, None)


STALE_SECONDS = 600  # a temporary untouched this long belongs to a run that was killed


def remove_stale_temporaries(folder: str, base: str) -> None:
    """Remove what a killed (SIGKILL) write of ``base`` (a regular expression for the output's
    name) left in ``folder``: directories named exactly as ``atomic_output`` names its
    temporaries (``.<base>.<8 characters>.tmp``), this user's, untouched for 10 minutes (a run
    writing now keeps its own). Nothing else."""
    pattern = re.compile(rf"\.{base}\.[a-z0-9_]{{8}}\.tmp")
    try:
        names = os.listdir(folder)
    except OSError:
        return
    now = time.time()
    for name in names:
        if not pattern.fullmatch(name):
            continue
        path = os.path.join(folder, name)
        with contextlib.suppress(OSError):
            st = os.lstat(path)
            if stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() \
                    and now - st.st_mtime > STALE_SECONDS:
                shutil.rmtree(path)


@contextlib.contextmanager
def atomic_output(dst: str | os.PathLike, force: bool = False, directory: bool = False,
                  suffix: str = "") -> Iterator[str]:
    """Yield a temporary path next to ``dst``; on success move it onto ``dst``.

    On any error (a full disk included, or SIGTERM / Ctrl-C in the CLI) the temporary file or
    directory and any parent directories made for it are removed, and an existing ``dst`` is
    left untouched. ``suffix`` keeps an extension that a writer insists on (e.g. ``.keras``).
    """
    with atomic_outputs([dst], force, directory=directory, suffixes=[suffix]) as (tmp,):
        yield tmp


@contextlib.contextmanager
def atomic_outputs(dsts, force: bool = False, directory: bool = False,
                   suffixes=None) -> Iterator[list[str]]:
    """``atomic_output`` for outputs that belong together (a checkpoint's ``.index`` and
    ``.data``): all are written in one temporary directory and replace the old ones as a unit;
    if any move fails, the ones already moved are put back."""
    dsts = [check_writable(d, force) for d in dsts]
    if directory and len(dsts) != 1:
        raise ValueError("a directory output is written alone")
    suffixes = suffixes or [""] * len(dsts)
    for dst in dsts:
        if not directory and os.path.isdir(dst) and not os.path.islink(dst):
            raise IsADirectoryError(f"{dst} is a directory; a file cannot replace it, even with "
                                    "--force (remove it first, or write elsewhere)")
    parent = os.path.dirname(os.path.abspath(dsts[0]))
    base = os.path.basename(dsts[0].rstrip(os.sep)) or "output"
    try:
        with _shielded():
            created = _make_parents(parent)
            remove_stale_temporaries(parent, re.escape(base))
            tmp_dir = tempfile.mkdtemp(prefix=f".{base}.", suffix=".tmp", dir=parent)
            _PENDING[tmp_dir] = created
    except OSError as e:
        raise OSError(e.errno, f"cannot write {dsts[0]}: {e.strerror} in {parent}") from None
    tmps = [tmp_dir] if directory else [os.path.join(tmp_dir, f"out{i}{sfx}")
                                        for i, sfx in enumerate(suffixes)]
    committed = False
    try:
        try:
            yield tmps
            for tmp in tmps:
                _apply_umask(tmp)
        except Exception as e:
            if _is_disk_error(e):
                raise _write_error(dsts[0], e) from None
            raise
        with _shielded():
            if len(dsts) == 1:
                _commit(tmps[0], dsts[0], force)
            else:
                _commit_all(tmps, dsts, force, tmp_dir)
            committed = True
    finally:
        with _shielded():
            shutil.rmtree(tmp_dir, ignore_errors=True)
            _PENDING.pop(tmp_dir, None)
            if not committed:
                _remove_empty(created)


def _commit_all(tmps: list[str], dsts: list[str], force: bool, tmp_dir: str) -> None:
    """Move each old output into ``tmp_dir`` as a backup, then each new one into place; on a
    failure undo every move, so old and new files are never mixed."""
    backups, placed = [], []
    try:
        for i, dst in enumerate(dsts):
            if os.path.lexists(dst):
                if not force:
                    raise FileExistsError(f"{dst} already exists; pass --force to replace it")
                backup = os.path.join(tmp_dir, f"old{i}")
                os.replace(dst, backup)
                backups.append((backup, dst))
        for tmp, dst in zip(tmps, dsts, strict=True):
            os.replace(tmp, dst)
            placed.append(dst)
    except BaseException:
        for dst in placed:
            with contextlib.suppress(OSError):
                os.remove(dst)
        for backup, dst in backups:
            os.replace(backup, dst)
        raise


def read_json_object(path: str | os.PathLike, what: str = "config") -> dict:
    """Read a JSON file that must hold an object; any problem is one ``ValueError`` naming it."""
    import json

    try:
        check_regular_file(path, what, MAX_JSON_BYTES)
    except FileNotFoundError as e:
        raise ValueError(f"cannot read {what} {path}: {e}") from None
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read {what} {path}: {e}") from None
    except RecursionError:
        raise ValueError(f"cannot read {what} {path}: its JSON nests too deeply; it is not a "
                         "config file") from None
    except ValueError as e:  # Python refuses integers of more than 4300 digits
        raise ValueError(f"cannot read {what} {path}: it holds a number too large to be a "
                         f"setting ({first_line(e).split(':')[0]})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{what} {path} must hold a JSON object")
    return data


def write_text(path: str | os.PathLike, text: str) -> None:
    """Replace ``path`` with ``text`` atomically (a config file saved again is the usual case)."""
    with atomic_output(path, force=True) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)


class SavesPretrained:
    """HF's ``to_json_file`` and ``save_pretrained`` for a class with ``to_json_string`` and
    a ``FILE_NAME`` (``config.json``, ``preprocessor_config.json``)."""

    FILE_NAME = ""

    def to_json_file(self, path: str | os.PathLike) -> None:
        """Write ``to_json_string()`` to ``path`` (atomically; an existing file is replaced)."""
        write_text(path, self.to_json_string())

    def save_pretrained(self, directory: str | os.PathLike) -> str:
        """Write ``FILE_NAME`` into ``directory`` (created if needed), as HF does; return it."""
        path = os.path.join(os.fspath(directory), self.FILE_NAME)
        self.to_json_file(path)
        return path
