"""Shared test helpers: the fixtures folder, optional modules, and the tiny-model factory."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from tf_mobilenet_v1.random_weights import randomize  # noqa: F401 (re-exported for tests)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# predict's cached TFLite models (tf_mobilenet_v1.fast_predict) go to a per-user temp dir, not
# the user's ~/.cache; child processes the tests start inherit it, so one build serves them all.
os.environ.setdefault("MOBILENET_V1_CACHE", os.path.join(
    tempfile.gettempdir(), f"tf_mobilenet_v1_test_cache_{os.getuid()}"))

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"


def tiny_model(cls=None, seed: int = 0, **fields):
    """A small random model for fast tests: 0.25x, 32 px and 1001 classes unless ``fields`` say
    otherwise, with non-trivial batch-norm statistics (``randomize``) so that folding, export and
    conversion bugs show up in the outputs."""
    from tf_mobilenet_v1 import MobileNetV1ForImageClassification

    cls = cls or MobileNetV1ForImageClassification
    return randomize(cls(**{"depth_multiplier": 0.25, "image_size": 32, **fields}), seed)


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
                        "(pip install -e '.[test,interop,backends,beam]')")
        pytest.skip(f"{name} is not installed")
