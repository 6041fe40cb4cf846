"""Shared test helpers: the fixtures folder and small random models with non-trivial BN stats."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"


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


def randomize(model, seed: int = 0):
    """Give every weight (BN statistics included) random, non-trivial values, in place."""
    rng = np.random.default_rng(seed)
    for w in model.weights:
        shape = tuple(w.shape)
        name = w.path
        if name.endswith("moving_variance"):
            value = rng.uniform(0.5, 2.0, shape)
        elif name.endswith("gamma"):
            value = rng.uniform(0.5, 1.5, shape)
        elif name.endswith(("beta", "moving_mean", "bias")):
            value = rng.normal(0, 0.2, shape)
        else:
            fan_in = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
            if "depthwise" in name:
                fan_in = shape[0] * shape[1]
            value = rng.normal(0, np.sqrt(2.0 / fan_in), shape)
        w.assign(value.astype(np.float32))
    return model


def require_module(name: str):
    """Import an optional dependency: skip locally when absent, fail under CI (it installs it)."""
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is required in CI (pip install -e '.[test,interop]')")
        pytest.skip(f"{name} is not installed")
