"""Shared test helpers: the fixtures folder, optional modules, the tiny-model factory, shared
session models, and the in-process command-line runner."""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest

from tf_mobilenet_v1.random_weights import randomize  # noqa: F401 (re-exported for tests)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# predict's cached TFLite models (tf_mobilenet_v1.fast_predict) go to a per-user temp dir, not
# the user's ~/.cache; child processes the tests start inherit it, so one build serves them all.
os.environ.setdefault("MOBILENET_V1_CACHE", os.path.join(
    tempfile.gettempdir(), f"tf_mobilenet_v1_test_cache_{os.getuid()}"))
# A fast-path failure other than "not eligible" raises in the tests instead of falling back.
os.environ.setdefault("MOBILENET_V1_FAST_STRICT", "1")

ROOT = Path(__file__).resolve().parents[1]  # the checkout
FIXTURES = ROOT.parent / "shared" / "fixtures"


def tiny_model(cls=None, seed: int = 0, **fields):
    """A small random model for fast tests: 0.25x, 32 px and 1001 classes unless ``fields`` say
    otherwise, with non-trivial batch-norm statistics (``randomize``) so that folding, export and
    conversion bugs show up in the outputs."""
    from tf_mobilenet_v1 import MobileNetV1ForImageClassification

    cls = cls or MobileNetV1ForImageClassification
    return randomize(cls(**{"depth_multiplier": 0.25, "image_size": 32, **fields}), seed)


PHOTOS = ("bird.bmp", "burger.jpg", "cat.bmp", "grace_hopper.bmp")


def photo_folder(root: Path, fake: str) -> Path:
    """``root`` filled with the fixture photos, a truncated JPEG, a text file named ``fake``
    (an image name) and ``notes.txt`` (not an image name): what a batch job meets."""
    import shutil

    for name in PHOTOS:
        shutil.copy(fixture_path("images", name), root / name)
    (root / "truncated.jpg").write_bytes((root / "burger.jpg").read_bytes()[:3000])
    (root / fake).write_text("not an image")
    (root / "notes.txt").write_text("skipped: not an image extension")
    return root


def fixture_path(*parts: str) -> Path:
    """Path under ../shared/fixtures; fails under CI when missing, skips elsewhere."""
    path = FIXTURES.joinpath(*parts)
    if not path.exists():
        msg = f"fixture {path} is missing (expected ../shared/fixtures beside the repo)"
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return path


@pytest.fixture
def fixtures() -> Path:
    return fixture_path()


def require_module(name: str):
    """Import an optional dependency: skip locally when absent, fail under CI (it installs it)."""
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is required in CI "
                        "(bash .ci/tests.sh builds the environments)")
        pytest.skip(f"{name} is not installed")


# ----------------------------------------------------------------- tiers and time limits
FAST_TEST_TIMEOUT = 60  # seconds; slow-tier tests keep pytest's ini default
# pytest-xdist's --dist loadfile hands whole files to the workers in collection order: the
# longest files go first, so that no worker sits idle at the end while one finishes them.
LONGEST_FILES = ("test_formats.py", "test_export_tflite.py", "test_keras_native.py",
                 "test_formats_untrusted.py", "test_writers.py", "test_pretrained.py")


def pytest_collection_modifyitems(config, items):
    order = {name: i for i, name in enumerate(LONGEST_FILES)}
    items.sort(key=lambda item: order.get(item.path.name, len(order)))  # stable: files whole
    for item in items:
        if item.get_closest_marker("slow") is None and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(FAST_TEST_TIMEOUT))


# ----------------------------------------------------------------- the command line, in process
# TensorFlow's start-up notices go to stderr before our code runs; they are not ours to judge.
_NATIVE_NOISE = ("WARNING: All log messages", "I0000", "W0000", "E0000", "To enable the")


@dataclass
class Run:
    """One command-line run: exit status and what it printed."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def errors(self) -> list[str]:
        """stderr lines that the program itself wrote."""
        return [line for line in self.stderr.splitlines()
                if line.strip() and not line.startswith(_NATIVE_NOISE)]

    def one_line_error(self) -> str:
        """Assert a clean failure (exit 1, no traceback, one line) and return that line."""
        assert self.returncode == 1, (self.returncode, self.stderr[-2000:])
        assert "Traceback" not in self.stderr, self.stderr[-2000:]
        assert len(self.errors) == 1, self.errors
        return self.errors[0]


@contextlib.contextmanager
def _environ(env: dict):
    saved = {k: os.environ.get(k) for k in env}
    try:
        for k, v in env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = str(v)
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def _chdir(path):
    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def cli(*args, env: dict | None = None, cwd=None, keep_warnings: bool = False) -> Run:
    """``mobilenet-v1 ARGS`` in this process: ``main([...])`` with stdout and stderr captured
    and argparse's ``SystemExit`` turned into the exit status. ``env`` sets (or, with None,
    removes) environment variables for the call; Python warnings are ignored unless
    ``keep_warnings``, as a child run with ``PYTHONWARNINGS=ignore`` would."""
    from tf_mobilenet_v1.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.ExitStack() as stack:
        stack.enter_context(contextlib.redirect_stdout(out))
        stack.enter_context(contextlib.redirect_stderr(err))
        stack.enter_context(_environ(env or {}))
        if cwd is not None:
            stack.enter_context(_chdir(cwd))
        if not keep_warnings:
            stack.enter_context(warnings.catch_warnings())
            warnings.simplefilter("ignore")
        try:
            code = main([str(a) for a in args])
        except SystemExit as e:  # argparse: --help, --version and usage errors
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    # Echoed, so that a test may read them from the Run or from pytest's capsys alike.
    sys.stdout.write(out.getvalue())
    sys.stderr.write(err.getvalue())
    return Run(code, out.getvalue(), err.getvalue())


# ----------------------------------------------------------------- what a folder holds
def snapshot(root) -> dict[str, tuple]:
    """Every path under ``root``, temporaries included: ``(sha256, mtime_ns)`` for a file,
    ``("->", target)`` for a symlink, ``("dir",)`` for a directory. Equal snapshots: nothing
    was added, removed, rewritten or touched."""
    import hashlib

    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root)
            if os.path.islink(p):
                out[rel] = ("->", os.readlink(p))
            elif os.path.isfile(p):
                with open(p, "rb") as f:
                    out[rel] = (hashlib.sha256(f.read()).hexdigest(), os.stat(p).st_mtime_ns)
            else:
                out[rel] = ("dir",)
    return out


def pytest_sessionfinish(session, exitstatus):
    """Write each tally of bad inputs (``hostile.Tally``) that counted anything."""
    import sys as _sys

    hostile = _sys.modules.get("hostile")
    for tally in getattr(hostile, "TALLIES", ()):
        if tally.tried:
            tally.write()


# ----------------------------------------------------------------- stand-ins
class QuickArchive:
    """Stands for keras' ExportArchive in tests of how a SavedModel is written (tracing, which
    takes seconds, is tested in test_export_saved_model): writes a minimal, parseable one."""

    GRAPH = b'\x12\t\n\x07"\x05serve'  # SavedModel{meta_graphs{meta_info_def{tags: serve}}}

    def write_out(self, filepath, *args, **kwargs):
        os.makedirs(os.path.join(filepath, "variables"))
        with open(os.path.join(filepath, "saved_model.pb"), "wb") as f:
            f.write(self.GRAPH)


# ----------------------------------------------------------------- shared session models
@pytest.fixture(scope="session")
def tiny_keras(tmp_path_factory):
    """``(model, path)``: a random 0.25x classifier at 32 px with the 1001 ImageNet classes,
    saved as .keras once for the whole session. Tests must not change it."""
    model = tiny_model(seed=3)
    path = tmp_path_factory.mktemp("tiny") / "tiny.keras"
    model.save(path)
    return model, str(path)


@pytest.fixture(scope="session")
def tiny64():
    """A random 0.25x classifier at 64 px (seed 0), shared by the export tests. Read-only."""
    return tiny_model(image_size=64)


@contextlib.contextmanager
def shared_dir(tmp_path_factory, name: str):
    """A folder that all pytest-xdist workers of this run share, held under a lock: a session
    fixture builds into it once (when it is empty) and the other workers read what it made."""
    import fcntl

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the run's folder, above each worker's own
    folder = root / f"shared-{name}"
    with open(root / f"shared-{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        folder.mkdir(exist_ok=True)
        yield folder


class _Exports(dict):
    """Export files by key, each made on first use, once for all workers of the run."""

    def __init__(self, factory, folder: str, jobs: dict):
        super().__init__()
        self.factory, self.folder, self.jobs = factory, folder, jobs

    def __missing__(self, key):
        name, export = self.jobs[key]
        with shared_dir(self.factory, self.folder) as root:
            if not (root / name).exists():
                export(root / name)
        self[key] = str(root / name)
        return self[key]


@pytest.fixture(scope="session")
def tiny64_tflite(tiny64, tmp_path_factory):
    """``tiny64`` exported as TFLite, each made when a test first asks: every weight mode with
    logits outputs (int8 calibrated on 16 random inputs), the default (probabilities) float32
    and int8 models, and the feature vector."""
    import functools

    import numpy as np
    from tf_mobilenet_v1.converters import tflite as tfl

    calib = np.random.default_rng(1).uniform(-1, 1, (16, 64, 64, 3)).astype(np.float32)
    jobs = {}
    for mode in ("none", "float16", "dynamic", "int8"):
        kwargs = {"quantize": mode, "calibration_images": calib if mode == "int8" else None}
        jobs[mode] = (tfl.default_tflite_name(mode, outputs="logits"), functools.partial(
            tfl.export_tflite, tiny64, outputs="logits", **kwargs))
        if mode in ("none", "int8"):
            jobs[f"{mode}_probs"] = (tfl.default_tflite_name(mode), functools.partial(
                tfl.export_tflite, tiny64, **kwargs))
    jobs["features"] = ("features.tflite", functools.partial(
        tfl.export_tflite, tiny64, task="feature-vector"))
    return _Exports(tmp_path_factory, "tiny64_tflite", jobs)
