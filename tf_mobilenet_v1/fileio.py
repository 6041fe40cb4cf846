"""Safe output: write to a temporary sibling, then rename, so no partial file is ever left."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator


def check_writable(dst: str | os.PathLike, force: bool = False) -> str:
    """Refuse to replace an existing output unless ``force``; return ``dst`` as a string."""
    dst = os.fspath(dst)
    if not dst.strip():
        raise ValueError("the output path is empty; name a file or directory to write")
    if os.path.lexists(dst) and not force:
        raise FileExistsError(f"{dst} already exists; pass force=True (CLI: --force) to replace it")
    if os.path.exists(dst) and not (os.path.isfile(dst) or os.path.isdir(dst)):
        # --force replaces outputs, never a device, pipe or socket (think /dev/null as root).
        raise FileExistsError(f"{dst} is not a regular file or directory; write elsewhere")
    parent = os.path.dirname(os.path.abspath(dst))
    os.makedirs(parent, exist_ok=True)
    return dst


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


@contextlib.contextmanager
def atomic_output(dst: str | os.PathLike, force: bool = False, directory: bool = False,
                  suffix: str = "") -> Iterator[str]:
    """Yield a temporary path next to ``dst``; on success move it onto ``dst``.

    On any error the temporary file or directory is removed and an existing ``dst`` is left
    untouched. ``suffix`` keeps an extension that a writer insists on (e.g. ``.keras``).
    """
    dst = check_writable(dst, force)
    if not directory and os.path.isdir(dst) and not os.path.islink(dst):
        raise IsADirectoryError(f"{dst} is a directory; a file cannot replace it, even with "
                                "--force (remove it first, or write elsewhere)")
    parent = os.path.dirname(os.path.abspath(dst))
    base = os.path.basename(dst.rstrip(os.sep)) or "output"
    try:
        tmp_dir = tempfile.mkdtemp(prefix=f".{base}.", suffix=".tmp", dir=parent)
    except OSError as e:
        raise OSError(e.errno, f"cannot write {dst}: {e.strerror} in {parent}") from None
    tmp = tmp_dir if directory else os.path.join(tmp_dir, "out" + suffix)
    try:
        yield tmp
        _apply_umask(tmp)
        if os.path.isdir(dst) and not os.path.islink(dst):
            # A directory cannot be atomically replaced: move the old one aside first.
            old = tempfile.mkdtemp(prefix=f".{base}.", suffix=".old", dir=parent)
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
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def read_json_object(path: str | os.PathLike, what: str = "config") -> dict:
    """Read a JSON file that must hold an object; any problem is one ``ValueError`` naming it."""
    import json

    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read {what} {path}: {e}") from None
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
