"""Against the real ``transformers`` MobileNetV1 on CPU torch: same numbers, both directions.

Needs torch and transformers: skipped locally when they are missing, a failure under CI.
Our inputs are NHWC, HF's NCHW, so inputs and hidden states are transposed for comparison.
"""

from __future__ import annotations

import fractions
import os

import numpy as np
import pytest
from conftest import cli, fixture_path, randomize, require_module
from tf_mobilenet_v1.converters import hf

from tf_mobilenet_v1 import MobileNetV1ForImageClassification, MobileNetV1Model
from tf_mobilenet_v1.loaders import hf as hf_loader

pytestmark = pytest.mark.interop
ATOL = 1e-4
HF_DROPOUT_WARNING = "ignore:classifier_dropout_prob=0.999"


@pytest.fixture(scope="module")
def torch():
    return require_module("torch")


@pytest.fixture(scope="module")
def transformers(torch):
    mod = require_module("transformers")
    mod.logging.set_verbosity_error()
    mod.utils.logging.disable_progress_bar()
    return mod


def _inputs(size: int, seed: int = 0, batch: int = 2) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1, 1, (batch, size, size, 3)).astype(np.float32)


def _nchw(torch, x):
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def _randomize_torch(torch, model, seed: int):
    """Non-trivial values for every parameter and batch-norm statistic of an HF model."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("normalization.weight"):
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)
            elif name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
            else:  # He-normal on the fan-in of one output (grouped convs: the kernel area)
                fan_in = int(np.prod(p.shape[1:]))
                p.copy_(torch.randn(p.shape, generator=g) * np.sqrt(2.0 / fan_in))
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) * 1.5 + 0.5)
    return model.eval()


def _run_hf(torch, model, x):
    with torch.no_grad():
        return model(pixel_values=_nchw(torch, x), output_hidden_states=True)


def _compare(torch, ours, hf_model, x, head=True) -> dict[str, float]:
    """Max abs differences of logits (or backbone outputs) and of all 26 hidden states."""
    theirs = _run_hf(torch, hf_model, x)
    diffs = {}
    if head:  # the classifier gives logits; its hidden states come from its backbone
        logits = np.asarray(ours(x, training=False))
        mine = ours.backbone(x, training=False)
        assert logits.shape == tuple(theirs.logits.shape)
        diffs["logits"] = float(np.abs(logits - theirs.logits.numpy()).max())
        # A near-constant network would hide layout errors: logits must spread and follow x.
        assert logits.std() > 0.05 and np.abs(logits[0] - logits[1]).max() > 1e-3
    else:
        mine = ours(x, training=False)
        last = np.asarray(mine["last_hidden_state"]).transpose(0, 3, 1, 2)
        diffs["last_hidden_state"] = float(np.abs(last - theirs.last_hidden_state.numpy()).max())
        pooled = np.asarray(mine["pooler_output"])
        diffs["pooler_output"] = float(np.abs(pooled - theirs.pooler_output.numpy()).max())
    assert len(mine["hidden_states"]) == len(theirs.hidden_states) == 26
    worst = 0.0
    for i, (a, b) in enumerate(zip(mine["hidden_states"], theirs.hidden_states, strict=True)):
        a = np.asarray(a).transpose(0, 3, 1, 2)
        assert a.shape == tuple(b.shape), f"hidden state {i}: {a.shape} vs {tuple(b.shape)}"
        d = float(np.abs(a - b.numpy()).max())
        assert d <= ATOL, f"hidden state {i} differs by {d}"
        worst = max(worst, d)
    diffs["hidden_states"] = worst
    for name, d in diffs.items():
        assert d <= ATOL, f"{name} differs by {d}"
    print(" ".join(f"{k}={v:.2e}" for k, v in diffs.items()), end=" ")
    return diffs


def _from_pretrained(transformers, cls_name: str, path):
    model, info = getattr(transformers, cls_name).from_pretrained(str(path),
                                                                  output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert not info["mismatched_keys"] and not info["error_msgs"], info
    return model.eval()


def _same_weights(a, b):
    wb = {w.path: np.asarray(w.numpy()) for w in b.weights}
    assert {w.path for w in a.weights} == wb.keys()
    for w in a.weights:
        assert np.array_equal(np.asarray(w.numpy()), wb[w.path]), w.path


# ----- ours -> HF directory -> transformers: depth multipliers x sizes x paddings -----
def _matrix():
    for depth in (0.25, 0.75, 1.0):
        for size in (224, 225, 97, 32):
            for tf_padding in (True, False):
                slow = depth == 1.0 or size >= 224
                yield pytest.param(depth, size, tf_padding,
                                   marks=[pytest.mark.slow] if slow else [],
                                   id=f"d{depth}-{size}px-{'tfpad' if tf_padding else 'sym'}")


@pytest.mark.parametrize("depth,size,tf_padding", list(_matrix()))
def test_ours_to_transformers_matrix(tmp_path, torch, transformers, depth, size, tf_padding):
    ours = randomize(MobileNetV1ForImageClassification(
        depth_multiplier=depth, tf_padding=tf_padding, num_labels=10,
        output_hidden_states=True), seed=int(depth * 100) + size)
    hf.save_hf(ours, tmp_path / "hf")
    theirs = _from_pretrained(transformers, "MobileNetV1ForImageClassification", tmp_path / "hf")
    assert theirs.config.tf_padding is tf_padding and theirs.config.depth_multiplier == depth
    _compare(torch, ours, theirs, _inputs(size))


def test_ours_backbone_to_transformers(tmp_path, torch, transformers):
    ours = randomize(MobileNetV1Model(depth_multiplier=0.5, output_hidden_states=True), seed=3)
    hf.save_hf(ours, tmp_path / "hf")
    theirs = _from_pretrained(transformers, "MobileNetV1Model", tmp_path / "hf")
    _compare(torch, ours, theirs, _inputs(65), head=False)


# ----- transformers random init -> save_pretrained -> our import -----
@pytest.mark.filterwarnings(HF_DROPOUT_WARNING)
@pytest.mark.parametrize("depth,size,tf_padding", [
    (0.25, 97, True), (0.25, 97, False), (0.75, 33, True),
    pytest.param(1.0, 224, True, marks=pytest.mark.slow),
    pytest.param(1.0, 225, False, marks=pytest.mark.slow),
])
def test_transformers_to_ours(tmp_path, torch, transformers, depth, size, tf_padding):
    cfg = transformers.MobileNetV1Config(depth_multiplier=depth, tf_padding=tf_padding,
                                         num_labels=7)
    theirs = _randomize_torch(torch, transformers.MobileNetV1ForImageClassification(cfg), 5)
    theirs.save_pretrained(tmp_path / "hf")
    ours = hf_loader.load_hf(tmp_path / "hf", output_hidden_states=True)
    assert ours.config.tf_padding is tf_padding and ours.config.num_labels == 7
    _compare(torch, ours, theirs, _inputs(size, seed=1))


@pytest.mark.filterwarnings(HF_DROPOUT_WARNING)
def test_transformers_backbone_to_ours(tmp_path, torch, transformers):
    cfg = transformers.MobileNetV1Config(depth_multiplier=0.25, tf_padding=False)
    theirs = _randomize_torch(torch, transformers.MobileNetV1Model(cfg), 6)
    theirs.save_pretrained(tmp_path / "hf")
    ours = hf_loader.load_hf(tmp_path / "hf", cls=MobileNetV1Model, output_hidden_states=True)
    _compare(torch, ours, theirs, _inputs(64), head=False)
    # The same bare state dict in memory also fills our classifier's backbone: asked for by
    # num_labels (the one head policy), never silently.
    with pytest.raises(ValueError, match="pass num_labels=N to start a new head"):
        hf_loader.load_hf(theirs.state_dict(), cls=MobileNetV1ForImageClassification)
    with pytest.warns(UserWarning, match="1001-class Logits head starts from random weights"):
        clf = hf_loader.load_hf(theirs.state_dict(), cls=MobileNetV1ForImageClassification,
                                num_labels=1001, tf_padding=False, output_hidden_states=True)
    x = _inputs(64)
    mine = clf.backbone(x, training=False)["hidden_states"][-1]
    ref = _run_hf(torch, theirs, x).last_hidden_state.numpy()
    assert np.abs(np.asarray(mine).transpose(0, 3, 1, 2) - ref).max() <= ATOL


def test_in_memory_torch_state_dict(tmp_path, torch, transformers):
    cfg = transformers.MobileNetV1Config(depth_multiplier=0.25, num_labels=4,
                                         classifier_dropout_prob=0.001)
    theirs = _randomize_torch(torch, transformers.MobileNetV1ForImageClassification(cfg), 7)
    ours = hf_loader.load_hf(theirs.state_dict(), output_hidden_states=True)  # config from shapes
    assert ours.config.depth_multiplier == 0.25 and ours.config.num_labels == 4
    _compare(torch, ours, theirs, _inputs(40))
    # bfloat16 tensors widen exactly to float32.
    half = {k: v.to(torch.bfloat16) if v.is_floating_point() else v
            for k, v in theirs.state_dict().items()}
    from safetensors.torch import save_file

    save_file(half, str(tmp_path / "half.safetensors"))
    for source in (half, tmp_path / "half.safetensors"):
        widened = hf.keras_to_state_dict(hf_loader.load_hf(source))
        for key, value in half.items():
            assert np.array_equal(widened[key], value.float().numpy()), key


# ----- PyTorch .bin files -----
def test_bin_files_both_ways(tmp_path, torch, transformers):
    ours = randomize(MobileNetV1ForImageClassification(depth_multiplier=0.25, num_labels=6,
                                                       tf_padding=False), seed=8)
    expected = hf.keras_to_state_dict(ours)
    hf.save_hf(ours, tmp_path / "w.bin")
    sd = torch.load(tmp_path / "w.bin", map_location="cpu", weights_only=True)
    assert sd.keys() == expected.keys()
    for k, v in sd.items():
        assert np.array_equal(v.numpy(), expected[k]) and v.numpy().dtype == expected[k].dtype
    assert sd["classifier.weight"].shape == (6, 256)
    assert sd["mobilenet_v1.layer.0.normalization.num_batches_tracked"].dtype == torch.int64
    cfg = transformers.MobileNetV1Config(depth_multiplier=0.25, num_labels=6, tf_padding=False)
    model = transformers.MobileNetV1ForImageClassification(cfg)
    model.load_state_dict(sd, strict=True)
    _same_weights(ours, hf_loader.load_hf(tmp_path / "w.bin", tf_padding=False))

    hf.save_hf(ours, tmp_path / "hf", pytorch_bin=True)
    assert sorted(os.listdir(tmp_path / "hf")) == [
        "config.json", "model.safetensors", "preprocessor_config.json", "pytorch_model.bin"]
    os.remove(tmp_path / "hf" / "model.safetensors")  # force the .bin path
    _same_weights(ours, hf_loader.load_hf(tmp_path / "hf"))

    torch.save(model.state_dict(), tmp_path / "from_torch.bin")
    _same_weights(ours, hf_loader.load_hf(tmp_path / "from_torch.bin", tf_padding=False))


def test_bin_with_python_objects_is_refused(tmp_path, torch):
    torch.save({"conv_stem.convolution.weight": torch.zeros(8, 3, 3, 3),
                "note": fractions.Fraction(1, 3)}, tmp_path / "odd.bin")
    with pytest.raises(ValueError, match="not a plain PyTorch state dict"):
        hf_loader.load_hf(tmp_path / "odd.bin")


# ----- round trips through transformers -----
def test_keras_hf_keras_bit_exact_through_transformers(tmp_path, torch, transformers):
    ours = randomize(MobileNetV1ForImageClassification(depth_multiplier=0.75, num_labels=9,
                                                       tf_padding=False), seed=9)
    hf.save_hf(ours, tmp_path / "a")
    theirs = _from_pretrained(transformers, "MobileNetV1ForImageClassification", tmp_path / "a")
    theirs.save_pretrained(tmp_path / "b")
    back = hf_loader.load_hf(tmp_path / "b")
    _same_weights(ours, back)
    for field in ("depth_multiplier", "tf_padding", "num_labels", "id2label", "min_depth",
                  "classifier_dropout_prob", "layer_norm_eps", "hidden_act", "image_size"):
        assert getattr(back.config, field) == getattr(ours.config, field), field


def test_image_processor_loads(tmp_path, transformers):
    from PIL import Image

    model = MobileNetV1ForImageClassification(depth_multiplier=0.25, image_size=128)
    hf.save_hf(model, tmp_path / "hf")
    processor = transformers.AutoImageProcessor.from_pretrained(str(tmp_path / "hf"))
    assert type(processor).__name__.startswith("MobileNetV1ImageProcessor")
    assert processor.size["shortest_edge"] == 160
    assert processor.crop_size["height"] == processor.crop_size["width"] == 128
    image = Image.new("RGB", (300, 200), (255, 0, 128))
    pixels = np.asarray(processor(image, return_tensors="np")["pixel_values"])
    assert pixels.shape == (1, 3, 128, 128)
    # do_rescale 1/255 then normalize with mean = std = 0.5: the [-1, 1] range slim trained on.
    assert np.allclose(pixels[0, :, 64, 64], [1.0, -1.0, 128 / 127.5 - 1], atol=1e-6)
    cfg = transformers.AutoConfig.from_pretrained(str(tmp_path / "hf"))
    assert cfg.id2label[0] == "background" and cfg.num_labels == 1001


# ----- the official weights -----
def _reference(name):
    ref = np.load(fixture_path("official", name, "reference_logits.npz"))
    return ref["inputs"], ref["logits"]


def _slim_variables(prefix):
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(prefix))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


def test_official_slim_keras_hf_keras_slim_chain(tmp_path, torch, transformers):
    from tf_mobilenet_v1.converters.slim import save_slim_checkpoint

    src = fixture_path("official", "mobilenet_v1_0.25_128")
    inputs, logits = _reference("mobilenet_v1_0.25_128")
    model = MobileNetV1ForImageClassification.from_pretrained(str(src))
    hf.save_hf(model, tmp_path / "hf")
    theirs = _from_pretrained(transformers, "MobileNetV1ForImageClassification", tmp_path / "hf")
    with torch.no_grad():
        got = theirs(pixel_values=_nchw(torch, inputs)).logits.numpy()
    diff = float(np.abs(got - logits).max())
    print(f"transformers vs frozen graph: {diff:.2e}", end=" ")
    assert diff <= ATOL

    back = hf_loader.load_hf(tmp_path / "hf")
    _same_weights(model, back)
    save_slim_checkpoint(back, str(tmp_path / "out.ckpt"))
    original = _slim_variables(src / "mobilenet_v1_0.25_128.ckpt")
    written = _slim_variables(tmp_path / "out.ckpt")
    original.pop("global_step", None)
    written.pop("global_step", None)
    assert written.keys() == original.keys()
    for name, value in original.items():
        assert written[name].dtype == value.dtype and np.array_equal(written[name], value), name


@pytest.mark.slow
def test_cli_convert_frozen_tarball_to_hf_dir(tmp_path, torch, transformers):

    tgz = fixture_path("official", "mobilenet_v1_0.25_128_frozen.tgz")
    inputs, logits = _reference("mobilenet_v1_0.25_128")
    assert cli("convert", str(tgz), str(tmp_path / "hf_dir") + os.sep).returncode == 0
    theirs = _from_pretrained(transformers, "MobileNetV1ForImageClassification",
                              tmp_path / "hf_dir")
    with torch.no_grad():
        got = theirs(pixel_values=_nchw(torch, inputs)).logits.numpy()
    diff = float(np.abs(got - logits).max())
    print(f"tgz -> HF dir -> transformers vs frozen graph: {diff:.2e}", end=" ")
    assert diff <= ATOL
