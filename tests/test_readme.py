"""The code blocks of the README and of every page in docs/: each one is run here, or says
why not (``<!-- not run: ... -->``), so a documented line that breaks fails the build. Runs
are offline: a guard refuses any network connection, and the examples use the weights
bundled with the package."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import PHOTOS, fixture_path, require_module
from hostile import child_env

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
MARKER = re.compile(r"<!-- (run|not run): ?(.*?) ?-->|<!-- (run) -->")
# A sitecustomize for every Python process a block starts (Spark's and Beam's workers too):
# loopback only, which Spark's JVM and Beam's worker pools talk over.
OFFLINE = """\
import socket
_connect, _create = socket.socket.connect, socket.create_connection
def _local(address):
    if isinstance(address, tuple) and address[0] not in ("127.0.0.1", "::1", "localhost"):
        raise OSError("README examples run offline: no network connection allowed")
def _guarded_connect(self, address):
    _local(address)
    return _connect(self, address)
def _guarded_create(address, *args, **kwargs):
    _local(address)
    return _create(address, *args, **kwargs)
socket.socket.connect = _guarded_connect
socket.create_connection = _guarded_create
"""
# A block that uses an extra runs in the tier that installs it (.ci/tests.sh), marked so.
EXTRAS = {"spark": (re.compile(r"mobilenet-v1 spark|tf_mobilenet_v1\.spark"), "pyspark"),
          "beam": (re.compile(r"mobilenet-v1 beam|tf_mobilenet_v1\.beam"), "apache_beam")}
# What a block given a SparkSession (a notebook's ``spark``) starts with.
SPARK_SESSION = ("from pyspark.sql import SparkSession\n"
                 "spark = SparkSession.builder.master('local[1]').getOrCreate()\n")
QUICK_START = "path/to/image.jpg"  # the quick start's block, run by its own test


def blocks(page: Path = README) -> list[tuple[str, str, str, int]]:
    """``(language, code, marker, line)`` for every fenced block of ``page``; the marker is
    the ``<!-- run ... -->`` or ``<!-- not run: why -->`` comment just above it, or ``""``."""
    lines = page.read_text(encoding="utf-8").splitlines()
    found, i = [], 0
    while i < len(lines):
        if lines[i].startswith("```"):
            start, language = i, lines[i][3:].strip()
            end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
            above = [x for x in lines[max(0, start - 3):start] if x.startswith("<!-- ")]
            marker = next((x for x in reversed(above) if MARKER.fullmatch(x)), "")
            found.append((language, "\n".join(lines[start + 1:end]), marker, start + 1))
            i = end + 1
        else:
            i += 1
    return found


def test_every_block_is_run_or_says_why_not():
    assert [p.name for p in PAGES[1:]] == ["android.md", "architecture.md", "keras.md",
                                           "reliability.md", "scale.md", "speed.md",
                                           "weights.md"]
    found = [(page, *block) for page in PAGES for block in blocks(page)]
    assert len(found) >= 10
    for page, language, _, marker, line in found:
        where = f"{page.relative_to(ROOT)}:{line}"
        assert marker, f"{where}: a {language or 'plain'} block with no <!-- run --> " \
                       "or <!-- not run: why --> comment above it"
        if marker.startswith("<!-- not run"):
            assert len(marker) > len("<!-- not run:  -->") + 5, f"{where}: say why"


def _extras(code: str) -> list[str]:
    return [name for name, (uses, _) in EXTRAS.items() if uses.search(code)]


def _runnable(language: str) -> list:
    """The ``<!-- run -->`` blocks in ``language``, each marked slow and with its extras."""
    return [pytest.param(code, id=f"{page.stem}-line{line}", marks=[
                pytest.mark.slow, *(getattr(pytest.mark, name) for name in _extras(code))])
            for page in PAGES for lang, code, marker, line in blocks(page)
            if lang == language and marker.startswith("<!-- run") and QUICK_START not in code]


def _workspace(tmp_path: Path, code: str) -> dict:
    """``tmp_path`` as a block's working folder: the fixture photos in ``photos/``, the
    extras it uses imported (or skipped), and the environment it runs in: offline, the
    venv's commands first on PATH, caches inside ``tmp_path``."""
    for name in _extras(code):
        require_module(EXTRAS[name][1])
    (tmp_path / "photos").mkdir()
    for name in PHOTOS:
        shutil.copy(fixture_path("images", name), tmp_path / "photos" / name)
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(OFFLINE)
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    return child_env(KERAS_HOME=str(tmp_path / "keras_home"), PATH=path,
                     MOBILENET_V1_CACHE=str(tmp_path / "cache"),
                     PYTHONPATH=str(tmp_path / "site"))


@pytest.mark.parametrize("code", _runnable("python"))
def test_python_blocks_run(code, tmp_path):
    env = _workspace(tmp_path, code)
    prelude = SPARK_SESSION if "spark" in _extras(code) else ""
    proc = subprocess.run([sys.executable, "-c", prelude + code], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.parametrize("code", _runnable("bash"))
def test_bash_blocks_run(code, tmp_path):
    """Each line in ``photos/`` (the fixture photos); ``pip install`` lines are what CI's
    venvs did (.ci/tests.sh), so they are not run. Every ``--output`` is written."""
    env = _workspace(tmp_path, code)
    script = "\n".join(x for x in code.splitlines() if not x.startswith("pip install"))
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for output in re.findall(r"--output (\S+)", code):
        assert list(tmp_path.glob(output.rstrip("/") + "*")), f"{output} was not written"


@pytest.mark.slow
def test_the_quick_start_command_runs(tmp_path):
    """The quick start's ``mobilenet-v1 predict path/to/image.jpg`` (the install before the
    ``&&`` is what CI's quick-start venv does), the console script itself, offline."""
    (command,) = [code for language, code, marker, _ in blocks()
                  if language == "bash" and QUICK_START in code]
    predict = command.split("&&", 1)[1].strip()
    assert predict == "mobilenet-v1 predict path/to/image.jpg"
    script = Path(sys.executable).with_name("mobilenet-v1")
    photo = os.fspath(fixture_path("images", "burger.jpg"))
    args = [os.fspath(script), *predict.split()[1:-1], "--json", photo]
    env = child_env(MOBILENET_V1_CACHE=str(tmp_path / "cache"))
    proc = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (result,) = json.loads(proc.stdout)
    assert result["predictions"][0]["label"] == "cheeseburger"
