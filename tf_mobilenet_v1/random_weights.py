"""Random but realistic weights, for tests and benchmarks that have no checkpoint at hand."""

from __future__ import annotations

import numpy as np


def randomize(model, seed: int = 0):
    """Give every weight (BN statistics included) non-trivial random values, in place.

    He-normal kernels and BN statistics near 1 keep activations in a realistic range (no
    vanishing outputs, no denormals), so comparisons and timings mean something.
    """
    rng = np.random.default_rng(seed)
    for w in model.weights:
        shape, name = tuple(w.shape), w.path
        if name.endswith("moving_variance"):
            value = rng.uniform(0.5, 2.0, shape)
        elif name.endswith("gamma"):
            value = rng.uniform(0.5, 1.5, shape)
        elif name.endswith(("beta", "moving_mean", "bias")):
            value = rng.normal(0, 0.2, shape)
        else:
            fan_in = shape[0] * shape[1] if "depthwise" in name else int(np.prod(shape[:-1]))
            value = rng.normal(0, np.sqrt(2.0 / max(fan_in, 1)), shape)
        w.assign(value.astype(np.float32))
    return model
