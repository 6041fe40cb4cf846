"""MobileNetV1Config: defaults, validation, dict/JSON and Hugging Face config.json compatibility."""

import json

import pytest

from tf_mobilenet_v1 import MobileNetV1Config


def test_defaults_follow_hugging_face():
    c = MobileNetV1Config()
    assert (c.num_channels, c.image_size, c.depth_multiplier, c.min_depth) == (3, 224, 1.0, 8)
    assert (c.hidden_act, c.tf_padding, c.initializer_range, c.layer_norm_eps) == (
        "relu6", True, 0.02, 0.001)
    assert c.classifier_dropout_prob == 0.001
    assert c.num_labels == 1001 and c.id2label[0] == "background"
    assert c.id2label[934] == "cheeseburger" and c.label2id["cheeseburger"] == 934
    assert c.output_stride is None and c.global_pool and not c.output_hidden_states


def test_json_round_trip(tmp_path):
    c = MobileNetV1Config(depth_multiplier=0.5, image_size=160, output_stride=16,
                          global_pool=False, num_labels=3, id2label={0: "a", 1: "b", 2: "c"})
    p = tmp_path / "config.json"
    p.write_text(c.to_json_string())
    assert MobileNetV1Config.from_json_file(p) == c
    assert MobileNetV1Config.from_dict(c.to_dict()) == c


def test_reads_hugging_face_config_json(tmp_path, recwarn):
    hf = {
        "architectures": ["MobileNetV1ForImageClassification"], "model_type": "mobilenet_v1",
        "torch_dtype": "float32", "transformers_version": "4.30.0",
        "classifier_dropout_prob": 0.001, "depth_multiplier": 0.75, "hidden_act": "relu6",
        "image_size": 192, "initializer_range": 0.02, "layer_norm_eps": 0.001, "min_depth": 8,
        "num_channels": 3, "tf_padding": True,
        "id2label": {str(i): f"c{i}" for i in range(1001)},
        "label2id": {f"c{i}": i for i in range(1001)},
    }
    c = MobileNetV1Config.from_dict(hf)
    assert c.depth_multiplier == 0.75 and c.image_size == 192 and c.num_labels == 1001
    assert c.id2label[5] == "c5"
    assert not [w for w in recwarn if "unknown keys" in str(w.message)]


def test_old_hf_dropout_default_warns():
    with pytest.warns(UserWarning, match="keep probability"):
        MobileNetV1Config(classifier_dropout_prob=0.999)


@pytest.mark.parametrize("kwargs,match", [
    ({"depth_multiplier": 0}, "depth_multiplier"),
    ({"depth_multiplier": -1.0}, "depth_multiplier"),
    ({"depth_multiplier": 1e9}, "depth_multiplier"),
    ({"output_stride": 4}, "output_stride"),
    ({"min_depth": 0}, "min_depth"),
    ({"hidden_act": "mish"}, "hidden_act"),
    ({"image_size": 16}, "image_size"),
    ({"image_size": -224}, "image_size"),
    ({"num_labels": -1}, "num_labels"),
])
def test_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MobileNetV1Config(**kwargs)


def test_num_labels_override_resets_names():
    c = MobileNetV1Config().replace(num_labels=10)
    assert c.num_labels == 10 and c.id2label[9] == "LABEL_9"


def test_variant_names():
    c = MobileNetV1Config.from_variant("mobilenet_v1_0.75_192_quant")
    assert (c.depth_multiplier, c.image_size) == (0.75, 192)
    assert MobileNetV1Config().variant == "mobilenet_v1_1.0_224"
    with pytest.raises(ValueError, match="unknown variant"):
        MobileNetV1Config.from_variant("resnet_50")
    json.dumps(c.to_dict())


def test_label2id_follows_id2label():
    c = MobileNetV1Config(num_labels=2, id2label={0: "cat", 1: "dog"})
    assert c.replace(id2label={0: "a", 1: "b"}).label2id == {"a": 0, "b": 1}
    foreign = MobileNetV1Config(num_labels=2, id2label={0: "cat", 1: "dog"},
                                label2id={"x": 0, "y": 1})
    assert foreign.label2id == {"cat": 0, "dog": 1}
