"""AttiqaNet: the attribute-aware IQA network (docs/method.md, section 5) on a tiny random backbone."""

from __future__ import annotations

import math

import pytest
import torch

from attiqa_loss import ATTRIBUTES, AttiqaNet, create_attiqa_net
from attiqa_loss.network import IMAGENET_MEAN, IMAGENET_STD


@pytest.mark.parametrize("hw", [(32, 32), (32, 47), (97, 64)])
def test_scores_shape_and_range(tiny_net, image_batch, hw):
    out = tiny_net(image_batch(3, *hw))
    assert out.shape == (3, len(ATTRIBUTES))
    assert out.dtype == torch.float32
    assert torch.all((out >= 0) & (out <= 1))


def test_forward_is_sigmoid_of_head_of_features(tiny_net, image_batch):
    x = image_batch(2)
    feats = tiny_net.forward_features(x)
    assert feats.shape == (2, tiny_net.num_features)
    logits = tiny_net.forward_head(feats)
    assert logits.shape == (2, 5)
    torch.testing.assert_close(tiny_net(x), torch.sigmoid(logits))


def test_heads_follow_attribute_order(tiny_net, image_batch):
    x = image_batch(2)
    before = tiny_net(x)
    with torch.no_grad():
        tiny_net.heads["brightness"].bias += 3.0
    after = tiny_net(x)
    changed = (after - before).abs().amax(dim=0) > 1e-4
    assert changed.tolist() == [name == "brightness" for name in ATTRIBUTES]


def test_normalisation_happens_inside(tiny_net, image_batch):
    x = image_batch(2)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    by_hand = tiny_net.forward_head(tiny_net.backbone((x - mean) / std))
    torch.testing.assert_close(tiny_net(x), torch.sigmoid(by_hand))


def test_eval_mode_is_batch_independent(tiny_net, image_batch):
    x = image_batch(3)
    torch.testing.assert_close(tiny_net(x)[1:2], tiny_net(x[1:2]), rtol=1e-5, atol=1e-6)


def test_config_rebuilds_the_same_architecture(tiny_net):
    cfg = tiny_net.config()
    assert cfg["backbone"] == "test_resnet"
    assert cfg["attributes"] == list(ATTRIBUTES)
    assert cfg["mean"] == pytest.approx(IMAGENET_MEAN) and cfg["std"] == pytest.approx(IMAGENET_STD)
    rebuilt = AttiqaNet(cfg["backbone"], cfg["attributes"], cfg["mean"], cfg["std"], backbone_kwargs=cfg["backbone_kwargs"])
    ref = tiny_net.state_dict()
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in ref.items()}
    # normalisation travels in checkpoint metadata, not in the state dict
    assert not any(k in ("mean", "std") for k in ref)


@pytest.mark.parametrize("mean, std", [((0.5, 0.5), (0.5, 0.5, 0.5)), ((0.5,) * 3, (0.5, 0.0, 0.5)), ((0.5,) * 3, (1, 1, 1, 1))])
def test_bad_normalisation(mean, std):
    with pytest.raises(ValueError, match=r"mean and std must have 3 entries with std > 0, got mean="):
        AttiqaNet("test_resnet", mean=mean, std=std)


def test_unknown_backbone_is_an_error():
    with pytest.raises(RuntimeError, match="not_a_timm_model"):
        create_attiqa_net("not_a_timm_model")


def test_forward_checks_inputs_unless_told_not_to(tiny_net):
    with pytest.raises(ValueError, match=r"\[0, 1\].*max=255"):
        tiny_net(torch.full((1, 3, 32, 32), 255.0))
    out = tiny_net(torch.full((1, 3, 32, 32), 255.0), check=False)
    assert out.shape == (1, 5)


def test_custom_attribute_subset():
    net = create_attiqa_net("test_resnet", attributes=("sharpness", "noisiness")).eval()
    assert net(torch.rand(1, 3, 32, 32)).shape == (1, 2)
    assert list(net.heads) == ["sharpness", "noisiness"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_and_device(tiny_net, device, dtype):
    net = tiny_net.to(device=device, dtype=dtype)
    out = net(torch.rand(2, 3, 40, 33, device=device, dtype=dtype))
    assert out.dtype == dtype and out.device.type == device


# -- normalize_tone: the backbone sees the image without its exposure and global contrast --


def _toned(seed: int = 0) -> AttiqaNet:
    torch.manual_seed(seed)
    return create_attiqa_net("test_resnet", normalize_tone=True).eval()


def test_tone_normalised_features_ignore_luminance_offset_and_contrast_in_the_backbone(image_batch):
    """A grey offset leaves the backbone's part of the features exactly as it was, a
    luminance contrast change nearly (the floor under the contrast is the only
    difference); the statistics move: darker reads darker, flatter reads flatter."""
    net = _toned()
    width = net.backbone.num_features
    x = image_batch(2, 48, 48).mean(1, keepdim=True).expand(-1, 3, -1, -1) * 0.8 + 0.1  # grey: chroma 0
    a = net.forward_features(x)
    assert a.shape == (2, width + 3) == (2, net.num_features)
    darker = net.forward_features(x - 0.1)
    flatter = net.forward_features((x - 0.5) * 0.6 + 0.5)
    torch.testing.assert_close(darker[:, :width], a[:, :width], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(flatter[:, :width], a[:, :width], rtol=0.02, atol=0.02)
    assert (darker[:, width] < a[:, width]).all()
    assert (flatter[:, width + 1] < a[:, width + 1]).all() and (flatter[:, width + 2] < a[:, width + 2]).all()


def test_tone_normalised_backbone_sees_chroma_at_its_absolute_size(image_batch):
    """Colour is not normalised: halving the chroma of an image (same luminance) changes
    what the backbone sees."""
    from attiqa_loss.measures import luminance

    net = _toned()
    width = net.backbone.num_features
    x = image_batch(2, 48, 48) * 0.6 + 0.2
    y = luminance(x)
    half = y + 0.5 * (x - y)
    a, b = net.forward_features(x), net.forward_features(half)
    torch.testing.assert_close(a[:, width:], b[:, width:])  # same luminance, same statistics
    assert (a[:, :width] - b[:, :width]).abs().max() > 1e-3


def test_centre_chroma_makes_a_uniform_tint_invisible_to_every_score(image_batch):
    """With centre_chroma a uniform tint (a colour cast, same luminance) changes neither
    the features nor any score, and its input gradient has no part along a uniform tint;
    a change in the spread of the colours still reaches the backbone. Without it the
    same tint moves the features (the control)."""
    from attiqa_loss.measures import luminance

    torch.manual_seed(0)
    net = create_attiqa_net("test_resnet", normalize_tone=True, centre_chroma=True).eval()
    x = image_batch(2, 48, 48) * 0.6 + 0.2
    tint = torch.tensor([0.06, -0.04, -0.02]).view(1, 3, 1, 1)
    tint = tint - luminance(tint)  # zero luminance: only the chroma moves
    tinted = x + tint
    torch.testing.assert_close(net.forward_features(tinted), net.forward_features(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(net(tinted), net(x), rtol=1e-5, atol=1e-5)
    xg = x.clone().requires_grad_(True)
    net(xg)[:, 3].sum().backward()  # colourfulness
    along = (xg.grad * tint).sum((1, 2, 3))
    assert along.abs().max() < 1e-4 * xg.grad.abs().sum((1, 2, 3)).max()
    y = luminance(x)
    half = y + 0.5 * (x - y)
    assert (net.forward_features(half) - net.forward_features(x)).abs().max() > 1e-3
    plain = _toned()
    assert (plain.forward_features(tinted) - plain.forward_features(x)).abs().max() > 1e-3
    assert net.config()["centre_chroma"] is True and plain.config()["centre_chroma"] is False
    with pytest.raises(ValueError, match="centre_chroma needs normalize_tone"):
        create_attiqa_net("test_resnet", centre_chroma=True)


def test_an_untoned_network_reads_exposure_in_its_backbone(tiny_net, image_batch):
    """The control: without normalize_tone the same change moves the backbone's features."""
    x = image_batch(2, 48, 48) * 0.5 + 0.25
    a, b = tiny_net.forward_features(x), tiny_net.forward_features((x - 0.5) * 0.6 + 0.45)
    assert (a - b).abs().max() > 0.05


def test_tone_normalised_network_on_a_flat_field_has_finite_input_gradients():
    net = _toned()
    x = torch.full((1, 3, 40, 40), 0.3, requires_grad=True)
    net(x).sum().backward()
    assert torch.isfinite(x.grad).all()


def test_tone_statistics_by_hand():
    from attiqa_loss.network import CHROMA_SCALE, TONE_FLOOR, tone_statistics

    x = torch.zeros(1, 3, 4, 4)
    x[:, :, :, :2] = 0.8  # grey: half 0.8, half 0 -> mean 0.4, std 0.4
    stats = tone_statistics(x)[0]
    c = (0.16 + TONE_FLOOR ** 2) ** 0.5
    expected = torch.tensor([(0.4 - 0.45) / CHROMA_SCALE, c / CHROMA_SCALE, math.log(c / (0.4 + TONE_FLOOR))])
    torch.testing.assert_close(stats, expected)
    # an exposure (a gain) leaves the log-ratio nearly unchanged, the mean does not
    darker = tone_statistics(x * 0.5)[0]
    assert darker[0] < stats[0] and abs(float(darker[2] - stats[2])) < 0.1


def test_config_records_normalize_tone(tiny_net):
    assert tiny_net.config()["normalize_tone"] is False
    assert _toned().config()["normalize_tone"] is True


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_tone_normalised_network_takes_other_input_dtypes(image_batch, dtype):
    """Outside autocast an input of another dtype is computed in the network's dtype,
    as without normalize_tone; the statistics are taken in float32 either way."""
    net = _toned()
    x = image_batch(2, 40, 40)
    torch.testing.assert_close(net(x.to(dtype)), net(x.to(dtype).float()), rtol=1e-5, atol=1e-5)


def test_tone_normalised_network_under_bf16_autocast(image_batch):
    net = _toned()
    x = image_batch(2, 40, 40)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(x)
    assert torch.isfinite(out).all() and (out - net(x)).abs().max() < 0.1
