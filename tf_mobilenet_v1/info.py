"""A variant's summary: config, parameters and MACs, all derived from the architecture table."""

from __future__ import annotations

import os

from .architecture import count_macs, count_params, layer_specs
from .config import MobileNetV1Config


def describe(variant: str | MobileNetV1Config) -> str:
    """Summary of a variant name such as ``mobilenet_v1_0.75_192``, or of a weights path."""
    if isinstance(variant, MobileNetV1Config):
        cfg = variant
    elif os.path.exists(variant) or os.path.exists(f"{variant}.index"):
        from .loaders.dispatch import load_any

        cfg = load_any(variant).config  # the weights' own config, not a guess from the name
    else:
        cfg = MobileNetV1Config.from_variant(variant)
    specs = layer_specs(cfg)
    fields = {k: v for k, v in cfg.to_dict().items() if k not in ("id2label", "label2id")}
    lines = [cfg.variant]
    lines += [f"  {k:<24}{v}" for k, v in fields.items()]
    base_macs = count_macs(specs, cfg.image_size, tf_padding=cfg.tf_padding)
    lines += [
        f"  {'layers':<24}{len(specs)} (stem + 13 depthwise/pointwise pairs)",
        f"  {'parameters':<24}{count_params(specs, cfg.num_labels):,} "
        f"(backbone {count_params(specs, None):,})",
        f"  {'MACs':<24}{count_macs(specs, cfg.image_size, cfg.num_labels, cfg.tf_padding):,} "
        f"(backbone {base_macs:,})",
    ]
    return "\n".join(lines)
