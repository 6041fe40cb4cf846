"""The architecture table and what is derived from it: layers, parameters, MACs."""

import pytest
from conftest import require_module

from tf_mobilenet_v1.architecture import (
    CONV_DEFS,
    count_macs,
    count_params,
    hidden_state_names,
    layer_specs,
)

ALPHAS = (1.0, 0.75, 0.5, 0.25)
RESOLUTIONS = (224, 192, 160, 128)


def test_table_expands_to_slim_layers():
    specs = layer_specs()
    assert len(CONV_DEFS) == 14 and len(specs) == 27
    assert specs[0].name == "Conv2d_0" and specs[0].out_channels == 32
    assert [s.name for s in specs[1:3]] == ["Conv2d_1_depthwise", "Conv2d_1_pointwise"]
    assert specs[-1].name == "Conv2d_13_pointwise" and specs[-1].out_channels == 1024
    assert len(hidden_state_names()) == 26 and "Conv2d_0" not in hidden_state_names()
    assert all(s.in_channels == s.out_channels for s in specs if s.kind == "depthwise")


def test_min_depth_and_multiplier():
    specs = layer_specs(depth_multiplier=0.25, min_depth=16)
    assert specs[0].out_channels == 16  # max(int(32 * 0.25), 16)
    assert specs[-1].out_channels == 256


@pytest.mark.parametrize("output_stride,strides,rates", [
    (None, [2, 1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1], [1] * 14),
    (16, [2, 1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 1, 1], [1] * 13 + [2]),
    (8, [2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1], [1] * 7 + [2] * 6 + [4]),
])
def test_output_stride_dilates_like_slim(output_stride, strides, rates):
    specs = [s for s in layer_specs(output_stride=output_stride) if s.kind != "pointwise"]
    assert [s.stride for s in specs] == strides
    assert [s.dilation for s in specs] == rates


def test_known_counts():
    assert count_params(layer_specs(depth_multiplier=1.0)) == 4_233_001
    assert count_params(layer_specs(depth_multiplier=0.25)) == 470_329
    assert count_macs(layer_specs(depth_multiplier=1.0), 224) == 567_716_352
    assert count_macs(layer_specs(depth_multiplier=0.75), 128) == 106_002_432


@pytest.mark.interop
def test_params_equal_transformers_for_all_official_variants():
    require_module("torch")
    transformers = require_module("transformers")
    for alpha in ALPHAS:
        for res in RESOLUTIONS:
            cfg = transformers.MobileNetV1Config(depth_multiplier=alpha, image_size=res,
                                                 num_labels=1001)
            hf = transformers.MobileNetV1ForImageClassification(cfg)
            hf_trainable = sum(p.numel() for p in hf.parameters() if p.requires_grad)
            assert count_params(layer_specs(depth_multiplier=alpha)) == hf_trainable, (alpha, res)
