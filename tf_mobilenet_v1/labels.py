"""The 1001 ImageNet class names used by the official MobileNet V1 checkpoints (0 = background)."""

from __future__ import annotations

import functools
from importlib import resources


@functools.lru_cache(maxsize=1)
def imagenet_labels() -> tuple[str, ...]:
    """Return the 1001 label names shipped with the package; index 0 is ``background``."""
    text = resources.files(__package__).joinpath("imagenet_labels.txt").read_text("utf-8")
    labels = tuple(line.strip() for line in text.splitlines() if line.strip())
    if len(labels) != 1001:
        raise RuntimeError(f"imagenet_labels.txt has {len(labels)} names, expected 1001")
    return labels


def default_id2label(num_labels: int) -> dict[int, str]:
    """ImageNet names for 1001 labels (and 1000, without background), ``LABEL_i`` otherwise."""
    if num_labels == 1001:
        return dict(enumerate(imagenet_labels()))
    if num_labels == 1000:
        return dict(enumerate(imagenet_labels()[1:]))
    return {i: f"LABEL_{i}" for i in range(num_labels)}
