"""Reading model outputs (numpy only): the logits of an output, and top-k decoding."""

from __future__ import annotations

import numpy as np


def logits_of(output):
    """The logits of a classifier output: the output itself, or the ``logits`` entry of the
    dict that ``output_hidden_states=True`` gives. Tensors pass through unconverted."""
    if isinstance(output, dict):
        if "logits" not in output:
            raise ValueError("the model has no classification head (a backbone); load weights "
                             "with a Logits layer to classify images")
        return output["logits"]
    return output


def decode_predictions(logits, top_k: int = 5, id2label: dict[int, str] | None = None):
    """Top-k ``(index, label, probability)`` per row of (B, num_labels) logits."""
    logits = logits_of(logits)
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
    logits = np.asarray(logits, np.float64)
    if logits.ndim != 2:
        raise ValueError(f"expected (batch, num_labels) logits, got shape {logits.shape}")
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    id2label = id2label or {}
    top_k = min(top_k, logits.shape[1])
    result = []
    for row in probs:
        idx = np.argsort(-row, kind="stable")[:top_k]
        result.append([(int(i), id2label.get(int(i), str(int(i))), float(row[i])) for i in idx])
    return result
