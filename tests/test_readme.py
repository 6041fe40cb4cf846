"""The code blocks of the README and of every page in docs/: each one is run here, or says
why not (``<!-- not run: ... -->``), so a documented line that breaks fails the build. Runs
are offline: a guard refuses any network connection, and the examples use the weights
bundled with the package."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import fixture_path
from hostile import child_env

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
MARKER = re.compile(r"<!-- (run|not run): ?(.*?) ?-->|<!-- (run) -->")
OFFLINE = """\
import socket
def _refuse(*args, **kwargs):
    raise OSError("README examples run offline: no network connection allowed")
socket.socket.connect = _refuse
socket.create_connection = _refuse
"""


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


PYTHON = [pytest.param(code, id=f"{page.stem}-line{line}") for page in PAGES
          for language, code, marker, line in blocks(page)
          if language == "python" and marker.startswith("<!-- run")]


@pytest.mark.slow
@pytest.mark.parametrize("code", PYTHON)
def test_python_blocks_run(code, tmp_path):
    env = child_env(KERAS_HOME=str(tmp_path / "keras_home"),
                    MOBILENET_V1_CACHE=str(tmp_path / "cache"))
    proc = subprocess.run([sys.executable, "-c", OFFLINE + code], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.slow
def test_the_quick_start_command_runs(tmp_path):
    """The quick start's ``mobilenet-v1 predict path/to/image.jpg`` (the install before the
    ``&&`` is what CI's quick-start venv does), the console script itself, offline."""
    (command,) = [code for language, code, marker, _ in blocks()
                  if language == "bash" and marker.startswith("<!-- run")]
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
