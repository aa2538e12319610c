"""The ``gain_denoise`` output (enhancement/outputs.py): the ``gain`` output followed by
noise-aware luma/chroma smoothing whose weight grows with the applied gain; its config
keys and exported metadata; and the camera-like noise of the low-light synthesis
(``data.lowlight.noise_space: linear``, ``quantize_bits``)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from attiqa_loss.measures import colour_cast, noise_sigma
from attiqa_train.config import ConfigError, load_config
from enhancement.config import EnhanceConfig
from enhancement.outputs import (apply_gain, apply_gain_denoise, from_luma_chroma, guided_filter, head_channels,
                                 to_luma_chroma)
from enhancement.synthesis import (add_poisson_gaussian_noise, add_sensor_noise, linear_to_srgb, quantize,
                                   srgb_to_linear, synthesize_low_light)
from enhancement.unet import UNET_LIMITS, UNet
from enhancement.weights import load_enhancer, save_enhancer

from enhancement_helpers import REPO, smooth_texture

COLOUR = (0.030, 0.022, 0.014)  # a dark warm grey


def _noisy_flat(h=64, w=64, sigma=0.006, seed=0, colour=COLOUR):
    """A flat dark patch of ``colour`` with white Gaussian noise per channel, ``(1, 3, h, w)``."""
    g = torch.Generator().manual_seed(seed)
    base = torch.tensor(colour).view(1, 3, 1, 1).expand(1, 3, h, w)
    return (base + sigma * torch.randn(1, 3, h, w, generator=g)).clamp(0, 1)


def _head(h, w, log_gain=math.log(8.0), luma=6.0, chroma=6.0):
    """A constant head: channel 0 the log-gain, channels 1-2 the luma and chroma denoising logits."""
    head = torch.empty(1, 3, h, w)
    head[:, 0], head[:, 1], head[:, 2] = log_gain, luma, chroma
    return head


def test_luma_chroma_split_is_invertible_and_separates_brightness_from_colour():
    x = torch.rand(2, 3, 9, 11, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(from_luma_chroma(to_luma_chroma(x)), x, atol=1e-6)
    d_luma = from_luma_chroma(torch.tensor([0.1, 0.0, 0.0]).view(1, 3, 1, 1))
    assert torch.allclose(d_luma.flatten(), torch.full((3,), 0.1))  # luma alone: all channels equally
    d_chroma = from_luma_chroma(torch.tensor([0.0, 0.05, -0.03]).view(1, 3, 1, 1))
    assert float(to_luma_chroma(d_chroma)[0, 0]) == pytest.approx(0.0, abs=1e-7)  # chroma alone: luma kept


def test_zero_strength_is_the_gain_output_exactly():
    x = _noisy_flat(48, 40) + smooth_texture(48, 40, seed=1)[None] * 0.2
    head = torch.randn(1, 3, 48, 40, generator=torch.Generator().manual_seed(1))
    assert torch.equal(apply_gain_denoise(x, head, strength=0.0), apply_gain(x, head[:, :1]))
    # the network too: the gain_denoise U-Net with strength 0 and the gain U-Net with its gain channel
    torch.manual_seed(2)
    net = UNet(width=4, depth=2, blocks=1, output="gain_denoise", gain_scale=4, denoise_strength=0.0)
    with torch.no_grad():
        net.head.weight.normal_(std=0.3)
        net.head.bias.copy_(torch.tensor([1.5, 3.0, 3.0]))
    plain = UNet(width=4, depth=2, blocks=1, output="gain", gain_scale=4)
    plain.load_state_dict({k: (v[:1] if k.startswith("head.") else v) for k, v in net.state_dict().items()})
    with torch.no_grad():  # (a 3-channel convolution sums in another order than a 1-channel one: rounding only)
        assert torch.allclose(net(x), plain(x), atol=1e-6, rtol=0)
        net.denoise_strength = 1.0
        assert not torch.equal(net(x), plain(x))  # the same weights with the stage on do denoise


def test_denoising_lowers_the_noise_of_a_gained_flat_field():
    x = _noisy_flat()
    head = _head(64, 64)
    gained = apply_gain(x, head[:, :1])
    out = apply_gain_denoise(x, head)
    before, after = float(noise_sigma(gained)), float(noise_sigma(out))
    assert before > 5 * float(noise_sigma(x))  # the gain lifted the noise ...
    assert after < 0.45 * before, (before, after)  # ... and the stage takes most of it out (measured ~0.3x)
    # the chroma noise (colour speckle) too, more strongly: chroma windows are twice as wide
    speckle = lambda t: float(to_luma_chroma(t)[:, 1:].std(dim=(2, 3)).mean())  # noqa: E731
    assert speckle(out) < 0.3 * speckle(gained), (speckle(gained), speckle(out))


def test_denoising_keeps_the_mean_colour_and_exposure_of_the_gained_image():
    x = _noisy_flat(seed=3)
    head = _head(64, 64, luma=8.0, chroma=8.0)  # as strong as it goes
    gained, out = apply_gain(x, head[:, :1]), apply_gain_denoise(x, head)
    m_gained, m_out = (to_luma_chroma(t).mean(dim=(2, 3)) for t in (gained, out))
    assert float((m_out[:, 1:] - m_gained[:, 1:]).abs().max()) < 5e-4, (m_gained, m_out)  # mean chroma (~0.05)
    assert float((m_out[:, 0] - m_gained[:, 0]).abs().max()) < 5e-4  # mean luma (~0.17)
    assert float((out.mean(dim=(2, 3)) - gained.mean(dim=(2, 3))).abs().max()) < 5e-4  # each channel
    assert abs(float(colour_cast(out) - colour_cast(gained))) < 5e-4
    # and the hue of the average colour: the mean's R:G:B ratios
    ratio = lambda t: t.mean(dim=(2, 3)) / t.mean(dim=(2, 3))[:, 1:2]  # noqa: E731
    assert torch.allclose(ratio(out), ratio(gained), atol=2e-3)


def test_the_strength_follows_the_applied_gain():
    """No gain, no denoising; the weight grows with the gain (and never reaches the cap)."""
    x = _noisy_flat(32, 32)
    weights = []
    for gain in (0.5, 1.0, 2.0, 4.0, 12.0):
        out, w = apply_gain_denoise(x, _head(32, 32, log_gain=math.log(gain)), return_weights=True)
        weights.append(float(w.mean()))
        assert w.shape == (1, 2, 32, 32) and float(w.min()) >= 0 and float(w.max()) < 1
        if gain <= 1:
            assert torch.allclose(out, apply_gain(x, _head(32, 32, log_gain=math.log(gain))[:, :1]), atol=1e-6)
    assert weights[0] == weights[1] == 0 and weights[1] < weights[2] < weights[3] < weights[4]
    # the strength caps the weights
    _, half = apply_gain_denoise(x, _head(32, 32, log_gain=math.log(12.0)), strength=0.5, return_weights=True)
    assert float(half.max()) < 0.5


def test_an_edge_is_kept_while_the_flat_sides_are_smoothed():
    """Guided filters whose regularisation follows the lifted noise: a step of a few times
    the noise survives whole, the noise on each side does not."""
    x = _noisy_flat(64, 64, sigma=0.004, seed=5)
    x[..., 32:] += 0.03  # a vertical edge (0.24 after the gain; the lifted noise ~0.03)
    head = _head(64, 64)
    gained, out = apply_gain(x, head[:, :1]), apply_gain_denoise(x, head)
    step = lambda t: float(t[..., 34:].mean() - t[..., :30].mean())  # noqa: E731
    sharp = lambda t: float((t[..., 33] - t[..., 30]).mean())  # noqa: E731  the step across 3 px
    assert step(out) == pytest.approx(step(gained), rel=0.02)
    assert sharp(out) > 0.9 * sharp(gained)
    flat = lambda t: t[..., 4:26]  # noqa: E731
    assert float(noise_sigma(flat(out))) < 0.5 * float(noise_sigma(flat(gained)))


def test_guided_filter_follows_its_guide_and_averages_where_the_guide_is_flat():
    guide = torch.zeros(1, 1, 16, 16)
    guide[..., 8:] = 1.0
    source = torch.rand(1, 2, 16, 16, generator=torch.Generator().manual_seed(0))
    out = guided_filter(source, guide, 2, 1e-4)
    assert out.shape == source.shape
    # a flat guide: the source's local mean (the window means, averaged over the windows)
    flat = guided_filter(source, torch.zeros(1, 1, 16, 16), 1, 1e-4)
    box = lambda t: torch.nn.functional.avg_pool2d(t, 3, 1, 1, count_include_pad=False)  # noqa: E731
    assert torch.allclose(flat, box(box(source)), atol=1e-5)
    # a noisy step guided by itself keeps its step and loses its noise
    g = torch.Generator().manual_seed(1)
    noisy = guide + 0.05 * torch.randn(1, 1, 16, 16, generator=g)
    smooth = guided_filter(noisy, noisy, 2, 0.1 ** 2)
    assert float(smooth[..., 10:].mean() - smooth[..., :6].mean()) == pytest.approx(1.0, abs=0.05)
    assert float(smooth[..., :6].std()) < 0.5 * float(noisy[..., :6].std())
    # the source equal to its own guide passes (small eps)
    assert torch.allclose(guided_filter(guide, guide, 2, 1e-6), guide, atol=1e-3)


def test_the_gain_denoise_enhancer_stays_in_range_starts_at_the_identity_and_trains_every_channel():
    torch.manual_seed(0)
    net = UNet(width=4, depth=2, blocks=1, output="gain_denoise", gain_scale=4)
    assert net.head.out_channels == head_channels("gain_denoise") == 3
    x = (_noisy_flat(40, 48) + smooth_texture(40, 48, seed=2)[None] * 0.3).requires_grad_(True)
    y, maps = net(x, return_maps=True)
    assert y.shape == x.shape and maps.shape == (1, 1, 40, 48)
    assert float((y - x).detach().abs().max()) < 0.02  # a gain near 1: nothing to denoise yet
    with torch.no_grad():
        net.head.bias.copy_(torch.tensor([2.5, 0.0, 0.0]))  # a strong gain: the stage is on
    y = net(x)
    assert float(y.detach().min()) >= 0 and float(y.detach().max()) <= 1
    y.square().mean().backward()
    grad = net.head.weight.grad.abs().sum(dim=(1, 2, 3))
    assert bool((grad > 0).all()), grad  # gain, luma and chroma channels all hear the loss
    assert x.grad is not None and bool(torch.isfinite(x.grad).all())
    # tiny images: no noise estimate (under 3 x 3), still the same size and in range
    assert net(torch.rand(1, 3, 2, 1)).shape == (1, 3, 2, 1)


def test_a_gain_denoise_enhancer_round_trips_through_its_file(tmp_path):
    torch.manual_seed(4)
    net = UNet(width=4, depth=2, blocks=1, output="gain_denoise", gain_scale=2, denoise_strength=0.7,
               denoise_radius=3)
    with torch.no_grad():
        net.head.weight.normal_(std=0.3)
        net.head.bias.copy_(torch.tensor([1.8, 1.0, 2.0]))
    path = save_enhancer(net, tmp_path / "gd.safetensors")
    loaded = load_enhancer(path)
    assert loaded.config() == net.config()
    assert (loaded.output, loaded.denoise_strength, loaded.denoise_radius) == ("gain_denoise", 0.7, 3)
    x = _noisy_flat(33, 47)
    assert torch.equal(loaded(x), net.eval()(x))


@pytest.mark.parametrize("key,value,message", [
    ("denoise_strength", 1.5, r"unet.denoise_strength must be a number in \[0, 1\], got 1.5"),
    ("denoise_radius", 0, r"unet.denoise_radius must be an integer in \[1, 16\], got 0"),
    ("output", "denoise", r"unet.output must be one of \['residual', 'curves', 'gain', 'gain_denoise'\]"),
    ("gain_residual", 0.1, r"output 'gain_denoise' takes no residual .* gain_residual must be 0, got 0.1"),
])
def test_bad_denoise_metadata_is_refused_by_name(tmp_path, key, value, message):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    path = save_enhancer(UNet(width=4, depth=1, blocks=1, output="gain_denoise"), tmp_path / "ok.safetensors")
    with safe_open(str(path), "pt") as f:
        meta = dict(f.metadata())
    meta["unet"] = json.dumps({**json.loads(meta["unet"]), key: value})
    save_file(load_file(str(path)), str(tmp_path / "bad.safetensors"), metadata=meta)
    with pytest.raises(ValueError, match=message):
        load_enhancer(tmp_path / "bad.safetensors")
    assert {"denoise_strength", "denoise_radius"} <= set(UNET_LIMITS)


@pytest.mark.parametrize("override,message", [
    ("model.output=denoise", r"must be one of \['residual', 'curves', 'gain', 'gain_denoise'\], got 'denoise'"),
    ("model.denoise_strength=-0.1", r"model.denoise_strength must be in \[0, 1\], got -0.1"),
    ("model.denoise_radius=0", r"model.denoise_radius must be >= 1|model.denoise_radius must be an integer in \[1, 16\]"),
    ("data.lowlight.noise_space=raw", r"must be one of \['display', 'linear'\], got 'raw'"),
    ("data.lowlight.quantize_bits=17", r"lowlight.quantize_bits must be 0 \(no rounding\) or an integer in \[1, 16\], got 17"),
])
def test_bad_denoise_config_values_are_rejected_by_name(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(EnhanceConfig, None, [override])


def test_gain_denoise_refuses_a_residual_in_the_config():
    with pytest.raises(ConfigError, match=r"model.output 'gain_denoise' takes no residual .* got 0.1"):
        load_config(EnhanceConfig, None, ["model.output=gain_denoise", "model.gain_residual=0.1"])


def test_the_denoise_recipe_is_the_low_light_recipe_with_the_new_output_and_camera_noise():
    low = load_config(EnhanceConfig, REPO / "configs" / "enhance_lowlight.yaml")
    den = load_config(EnhanceConfig, REPO / "configs" / "enhance_lowlight_denoise.yaml")
    assert (den.model.output, den.model.gain_residual, den.model.denoise_strength) == ("gain_denoise", 0, 1.0)
    assert (den.data.lowlight.noise_space, den.data.lowlight.quantize_bits) == ("linear", 8)
    assert (den.data.mode, den.data.task) == ("synthetic", "lowlight")
    assert den.loss == low.loss and den.train == low.train and den.val == low.val
    for key in ("width", "depth", "blocks", "max_width", "gain_scale", "gain_max", "global_context"):
        assert getattr(den.model, key) == getattr(low.model, key), key
    UNet(**den.model.unet_kwargs())  # builds


# --- the synthesis: sensor noise in linear light, 8-bit rounding -------------------------------


def test_the_srgb_curves_invert_each_other():
    x = torch.linspace(0, 1, 1001)
    assert torch.allclose(linear_to_srgb(srgb_to_linear(x)), x, atol=1e-5)
    assert float(srgb_to_linear(torch.tensor(0.5))) == pytest.approx(0.2140, abs=1e-4)


def test_linear_light_noise_has_the_strength_a_sensor_gives_it_after_the_srgb_curve():
    """Propagated through the sRGB curve, noise of standard deviation ``s`` in linear light
    at level ``L`` becomes ``s * dsRGB/dL`` on the encoded values: a dark pixel is noisier
    than with the same model added to the encoded values (here 2.3x)."""
    g = torch.Generator().manual_seed(0)
    level = 0.1  # encoded; linear 0.010
    x = torch.full((1, 3, 128, 128), level)
    shot, read = torch.tensor([5e-4]), torch.tensor([1e-3])
    noisy = add_sensor_noise(x, shot, read, g)
    lin = float(srgb_to_linear(torch.tensor(level)))
    slope = 1.055 / 2.4 * lin ** (1 / 2.4 - 1)
    expected = slope * math.sqrt(float(shot) * lin + float(read) ** 2)
    assert float(noisy.std()) == pytest.approx(expected, rel=0.05)
    assert float(noisy.mean()) == pytest.approx(level, abs=2e-3)
    display = add_poisson_gaussian_noise(x, shot, read, torch.Generator().manual_seed(0))
    assert float(noisy.std()) > 2 * float(display.std())


def test_quantized_dark_shots_hold_8_bit_levels_and_the_first_version_is_unchanged():
    clean = torch.stack([smooth_texture(32, 40, seed=i) for i in range(3)])
    settings = dict(shot_noise=(1e-4, 2e-3), read_noise=(2e-4, 4e-3))
    low = synthesize_low_light(clean, torch.Generator().manual_seed(1), noise_space="linear", quantize_bits=8,
                               **settings)
    assert torch.equal(low, quantize(low, 8)) and torch.allclose(low * 255, (low * 255).round(), atol=1e-4)
    assert float(low.mean()) < 0.5 * float(clean.mean())  # still dark
    # the keys' defaults draw and add exactly what the first version did
    first = synthesize_low_light(clean, torch.Generator().manual_seed(1))
    assert torch.equal(first, synthesize_low_light(clean, torch.Generator().manual_seed(1), noise_space="display",
                                                   quantize_bits=0))
    assert torch.equal(quantize(clean, 0), clean)
    with pytest.raises(ValueError, match=r"noise_space must be one of \['display', 'linear'\], got 'raw'"):
        synthesize_low_light(clean, torch.Generator().manual_seed(1), noise_space="raw")


def test_the_denoise_recipe_trains_a_few_steps_and_exports_a_gain_denoise_enhancer(tmp_path):
    from enhancement import cli
    from enhancement_helpers import tiny_overrides, write_images, write_quality_model

    write_images(tmp_path / "clean", 4, size=(40, 48))
    quality = write_quality_model(tmp_path / "q.safetensors")
    out = tmp_path / "run"
    args = ["train", "--config", str(REPO / "configs" / "enhance_lowlight_denoise.yaml"), "--data",
            str(tmp_path / "clean"), "--out", str(out)]
    assert cli.main(args + tiny_overrides(quality, **{"train.steps": 2, "train.val_every": 2})) == 0
    model = load_enhancer(out)
    assert model.output == "gain_denoise" and model.head.out_channels == 3
    lowlight = model.training_info["config"]["data"]["lowlight"]
    assert (lowlight["noise_space"], lowlight["quantize_bits"]) == ("linear", 8)
    x = _noisy_flat(40, 48)
    with torch.no_grad():
        y = model(x)
    assert y.shape == x.shape and float(y.min()) >= 0 and float(y.max()) <= 1
