"""Reading model outputs (numpy only): logits from an export's probabilities, top-k decoding."""

from __future__ import annotations

import numpy as np


def logits_from_probabilities(probs) -> np.ndarray:
    """``log(p)``: softmax(log p) = p for rows that sum to 1; a zero (a quantized model's
    smallest step) becomes -inf, i.e. probability 0."""
    with np.errstate(divide="ignore"):
        return np.log(np.asarray(probs, np.float32))


def decode_predictions(logits, top_k: int = 5, id2label: dict[int, str] | None = None):
    """Top-k ``(index, label, probability)`` per row of (B, num_labels) logits."""
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
