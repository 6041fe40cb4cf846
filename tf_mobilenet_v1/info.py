"""A variant's summary: config, parameters and MACs, all derived from the architecture table."""

from __future__ import annotations

import os

from . import registry
from .architecture import count_macs, count_params, layer_specs
from .config import MobileNetV1Config


def _entry(name: str):
    """The registry entry of ``name``; anything else is an unknown variant."""
    try:
        return registry.get(name)
    except ValueError as e:
        hint = str(e).split("; ", 1)[-1]
        raise ValueError(f"unknown variant {name!r}: not one of the "
                         f"{len(registry.CHECKPOINTS)} published checkpoints; {hint}") from None


def _state(entry) -> str:
    where = registry.cached_path(entry.name)
    if where is None:
        size = f", {entry.checksum[2] / 1e6:.0f} MB" if entry.checksum else ""
        return f"not downloaded yet (fetched on first use{size})"
    if registry.bundled_path(entry.name) == where:
        return f"bundled with the package ({where})"
    return f"cached ({where})"


def list_variants() -> str:
    """Every registry name, one line each: published top-1 and where its weights are."""
    entries = [registry.get(name) for name in registry.names()]
    width = max(len(e.name) for e in entries)
    return "\n".join(f"{e.name:<{width}}  top-1 {e.top1:4.1f}%  {_state(e)}" for e in entries)


def _published(entry) -> list[str]:
    state = _state(entry)
    kind = "8-bit, quantization-aware trained" if entry.quantized else "float32"
    return [f"  {'weights':<24}{kind}",
            f"  {'ImageNet top-1 / top-5':<24}{entry.top1:.1f}% / {entry.top5:.1f}% (published)",
            f"  {'url':<24}{entry.url}",
            f"  {'on this machine':<24}{state}"]


def describe(variant: str | MobileNetV1Config) -> str:
    """Summary of a registry name such as ``mobilenet_v1_0.75_192[_quant]`` (with its published
    accuracy, URL and cache state), of a weights path, or of a config."""
    entry = None
    if isinstance(variant, MobileNetV1Config):
        cfg = variant
    elif os.path.exists(variant) or os.path.exists(f"{variant}.index"):
        from .loaders.dispatch import load_any

        cfg = load_any(variant).config  # the weights' own config, not a guess from the name
    else:
        entry = _entry(variant)
        cfg = MobileNetV1Config.from_variant(entry.name)
    specs = layer_specs(cfg)
    fields = {k: v for k, v in cfg.to_dict().items() if k not in ("id2label", "label2id")}
    lines = [entry.name if entry else cfg.variant]
    lines += [f"  {k:<24}{v}" for k, v in fields.items()]
    base_macs = count_macs(specs, cfg.image_size, tf_padding=cfg.tf_padding)
    lines += [
        f"  {'layers':<24}{len(specs)} (stem + 13 depthwise/pointwise pairs)",
        f"  {'parameters':<24}{count_params(specs, cfg.num_labels):,} "
        f"(backbone {count_params(specs, None):,})",
        f"  {'MACs':<24}{count_macs(specs, cfg.image_size, cfg.num_labels, cfg.tf_padding):,} "
        f"(backbone {base_macs:,})",
    ]
    if entry is not None:
        lines += _published(entry)
    return "\n".join(lines)
