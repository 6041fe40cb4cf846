"""keras.applications' MobileNet as weights: a live model, a .keras file or a legacy .h5,
with or without its top, read into our model with its outputs."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import cli

from tf_mobilenet_v1 import MobileNetV1ForImageClassification, MobileNetV1Model, imagenet_labels
from tf_mobilenet_v1.loaders.dispatch import load_any


def _theirs(alpha: float, size: int, **kwargs):
    """keras.applications.MobileNet with random weights (batch norm statistics included) and
    logits out, so the comparison is not flattened by a softmax."""
    import keras

    model = keras.applications.MobileNet(alpha=alpha, input_shape=(size, size, 3), weights=None,
                                         classifier_activation=None, **kwargs)
    rng = np.random.default_rng(int(alpha * 100) + size)
    for v in model.weights:
        value = rng.normal(0, 0.1, v.shape).astype(np.float32)
        if v.path.endswith(("gamma", "moving_variance")):
            value = np.abs(value) + 0.5
        v.assign(value)
    return model


def _check(ours, theirs, size: int) -> float:
    x = np.random.default_rng(1).uniform(-1, 1, (2, size, size, 3)).astype(np.float32)
    want = np.asarray(theirs(x, training=False))
    got = ours(x, training=False)
    got = np.asarray(got["last_hidden_state"] if isinstance(got, dict) else got)
    np.testing.assert_allclose(got, want, atol=1e-5)
    return float(np.abs(got - want).max())


@pytest.mark.parametrize("alpha, size", [
    (0.25, 128),
    *[pytest.param(a, s, marks=pytest.mark.slow)
      for a in (0.25, 0.5, 1.0) for s in (128, 160, 224) if (a, s) != (0.25, 128)]])
def test_a_live_applications_model_gives_its_outputs(alpha, size):
    """``from_pretrained(model)`` / ``load_any(model)``: the variant from the tensors, 1000
    classes stay 1000 with ImageNet's names (no background row), outputs within 1e-5
    (measured at most 9.6e-7, at alpha 1.0)."""
    theirs = _theirs(alpha, size)
    ours = load_any(theirs)
    assert isinstance(ours, MobileNetV1ForImageClassification)
    config = ours.config
    assert (config.depth_multiplier, config.image_size, config.num_labels) == (alpha, size, 1000)
    assert config.id2label[0] == imagenet_labels()[1] and len(config.id2label) == 1000
    assert config.tf_padding and config.global_pool
    _check(ours, theirs, size)
    _check(MobileNetV1ForImageClassification.from_pretrained(theirs), theirs, size)


@pytest.mark.slow
def test_files_and_backbones(tmp_path):
    """A .keras and a legacy .h5 of the model, its backbone (include_top=False) and a
    fine-tuned 10-class head; convert to a Hugging Face directory from the CLI."""
    theirs = _theirs(0.25, 128, classes=10)
    theirs.save(tmp_path / "m.keras")
    theirs.save(tmp_path / "m.h5")
    for name in ("m.keras", "m.h5"):
        ours = load_any(str(tmp_path / name))
        assert ours.config.num_labels == 10
        _check(ours, theirs, 128)
    backbone = _theirs(0.25, 128, include_top=False)
    ours = MobileNetV1Model.from_pretrained(backbone)
    _check(ours, backbone, 128)
    run = cli("convert", str(tmp_path / "m.h5"), str(tmp_path / "hf"))
    assert run.returncode == 0, run.stderr
    _check(load_any(str(tmp_path / "hf")), theirs, 128)


def test_other_keras_models_are_refused(tmp_path):
    """MobileNetV2 (it has a conv1 too) and an edited MobileNet: one line saying what is
    wrong; nothing built from them."""
    import keras

    v2 = keras.applications.MobileNetV2(alpha=0.35, input_shape=(96, 96, 3), weights=None)
    v2.save(tmp_path / "v2.h5")
    with pytest.raises(ValueError, match="not keras.applications' MobileNet"):
        load_any(str(tmp_path / "v2.h5"))
    with pytest.raises(ValueError, match="not keras.applications' MobileNet"):
        load_any(v2)
    edited = _theirs(0.25, 128, include_top=False)
    extra = keras.Model(edited.input, keras.layers.Conv2D(4, 1, name="conv_extra")(
        edited.output))
    with pytest.raises(ValueError, match="has conv_extra/bias, which MobileNet V1 has not"):
        load_any(extra)
