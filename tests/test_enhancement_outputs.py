"""The enhancer's output formulations (enhancement/outputs.py): range, identity at the
start, known values, gradients, and what each can and cannot do to an image."""

from __future__ import annotations

import math

import pytest
import torch

from attiqa_loss.measures import laplacian_variance, luminance
from attiqa_loss.measures import colour_cast
from enhancement.outputs import (apply_curves, apply_gain, bounded_residual, exposure_curve, guided_upsample, head_channels,
                                 highpass_residual)
from enhancement.unet import UNet
from enhancement.weights import load_enhancer, save_enhancer
from helpers import make_texture


def _photo(seed=0, h=48, w=64):
    return make_texture(h, w, seed)[None] * 0.4  # a dark photo-like image


@pytest.mark.parametrize("output", ["residual", "curves", "gain", "gain_denoise"])
def test_every_output_starts_near_the_identity_stays_in_range_and_passes_gradients(output):
    torch.manual_seed(0)
    net = UNet(width=4, depth=2, blocks=1, output=output, curve_iterations=3, gain_scale=4)
    x = _photo().requires_grad_(True)
    y = net(x)
    assert y.shape == x.shape and float(y.detach().min()) >= 0 and float(y.detach().max()) <= 1
    assert float((y - x).detach().abs().max()) < 0.02  # head initialised small: close to the input
    y.mean().backward()
    assert x.grad is not None and net.head.weight.grad is not None and float(net.head.weight.grad.abs().sum()) > 0
    assert net.head.out_channels == head_channels(output, 3)


def test_curves_known_values_and_monotonic():
    x = torch.tensor([0.0, 0.25, 0.5, 1.0]).view(1, 1, 1, 4).expand(1, 3, 1, 4)
    one = torch.ones(1, 3, 1, 4)
    out = apply_curves(x, one)  # one curve with a = 1: x + x(1 - x)
    assert torch.allclose(out[0, 0, 0], torch.tensor([0.0, 0.4375, 0.75, 1.0]))
    twice = apply_curves(x, torch.cat([one, one], 1))
    assert torch.allclose(twice[0, 0, 0, 1], torch.tensor(0.4375 + 0.4375 * 0.5625))
    ramp = torch.linspace(0, 1, 101).view(1, 1, 1, -1).expand(1, 3, 1, -1)
    for a in (-1.0, -0.3, 0.7, 1.0):
        y = apply_curves(ramp, torch.full((1, 24, 1, 101), a))
        assert bool((y.diff(dim=-1) >= 0).all()) and float(y.min()) >= 0 and float(y.max()) <= 1
    with pytest.raises(ValueError, match="curve parameters need a multiple of 3 channels, got 4"):
        apply_curves(x, torch.zeros(1, 4, 1, 4))


def test_exposure_curve_is_bounded_keeps_black_and_white_and_has_slope_gain_at_black():
    x = torch.tensor([0.0, 1e-4, 0.5, 1.0])
    for g in (0.25, 1.0, 4.0, 16.0):
        y = exposure_curve(x, torch.tensor(g))
        assert float(y[0]) == 0 and float(y[3]) == pytest.approx(1.0)
        assert float(y[1]) / 1e-4 == pytest.approx(g, rel=2e-3)
    assert float(exposure_curve(torch.tensor(0.5), torch.tensor(4.0))) == pytest.approx(2 / 2.5)


def test_the_gain_output_keeps_hue_and_saturation_exactly():
    x = torch.tensor([0.02, 0.04, 0.01]).view(1, 3, 1, 1).expand(1, 3, 16, 16).contiguous()
    head = torch.full((1, 1, 16, 16), 2.0)
    for param, gain in (("log", math.exp(2.0)), ("tanh", math.exp(math.log(16.0) * math.tanh(2.0)))):
        y = apply_gain(x, head, scale=4, gain_max=16.0, gain_param=param)
        assert float(y[0, 1, 5, 5]) > 5 * float(x[0, 1, 5, 5])  # much brighter
        assert torch.allclose(x[0, :, 5, 5] / x[0, 1, 5, 5], y[0, :, 5, 5] / y[0, 1, 5, 5], rtol=1e-5)  # R:G:B kept
        # the largest channel follows the exposure curve; nothing passes 1 even at full gain
        assert float(y[0, 1, 5, 5]) == pytest.approx(float(exposure_curve(torch.tensor(0.04), torch.tensor(gain))))
    bright = apply_gain(torch.rand(1, 3, 16, 16), torch.full((1, 1, 16, 16), 9.0), scale=1)
    assert float(bright.max()) <= 1.0 + 1e-6


def test_the_log_gain_keeps_its_gradient_up_to_the_cap_where_tanh_loses_it():
    """Why ``gain_param: log``: with ``tanh`` a head pushed near the bound (tanh > 0.99)
    gets almost no gradient back (runs stuck at gain_max); the log-gain passes every
    gradient that points back inside the cap, which is ``gain_max`` for both."""
    from enhancement.outputs import log_gain

    bound = math.log(16.0)
    near = torch.tensor([0.5, 2.7, 9.0], requires_grad=True)  # below the cap (log 16 = 2.77) and past it
    log_gain(near, 16.0, "log").sum().backward()  # descent lowers all three: back inside for 9.0
    assert near.grad.tolist() == [1.0, 1.0, 1.0]  # past the cap too: nothing sticks there
    far = torch.tensor([3.0], requires_grad=True)  # tanh(3.0) = 0.995
    log_gain(far, 16.0, "tanh").sum().backward()
    assert float(far.grad) < 0.03 * bound
    assert float(log_gain(torch.tensor(50.0), 16.0, "log")) == pytest.approx(bound)
    assert float(log_gain(torch.tensor(50.0), 16.0, "tanh")) == pytest.approx(bound)
    with pytest.raises(ValueError, match=r"gain_param must be one of \['log', 'tanh'\], got 'exp'"):
        log_gain(near, 16.0, "exp")


def test_past_the_cap_the_log_gain_is_pulled_back_but_never_pushed_further_out():
    """A loss that wants more gain than the cap allows must not drive the logits further
    (the first 6000-step run's logits drifted without bound under a straight-through cap and
    its gain map went bang-bang); one that wants less must reach them."""
    from enhancement.outputs import inward_clamp

    x = torch.tensor([-9.0, -1.0, 0.0, 1.0, 9.0], requires_grad=True)
    y = inward_clamp(x, 2.0)
    assert y.tolist() == [-2.0, -1.0, 0.0, 1.0, 2.0]
    (-y.sum()).backward()  # descent raises everything: only -9 (back inside) and the inside values move
    assert x.grad.tolist() == [-1.0, -1.0, -1.0, -1.0, 0.0]
    x.grad = None
    inward_clamp(x, 2.0).sum().backward()  # descent lowers everything: 9 comes back, -9 is left alone
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0]


def test_a_gain_head_far_past_the_cap_gives_the_cap_everywhere():
    """Huge logits (all asking for more gain) are capped before the guided upsampling, so
    the map is ``gain_max`` on every pixel, whatever the input's edges, and the head hears
    no gradient asking for still more."""
    x = _photo(1) * 0.1
    head = (30 + 1000 * torch.rand(1, 1, *x.shape[-2:], generator=torch.Generator().manual_seed(3)))
    head.requires_grad_(True)
    y = apply_gain(x, head, scale=8, gain_max=16.0)
    expected = x * (16.0 / (1 + 15.0 * x.amax(dim=1, keepdim=True)))
    assert torch.allclose(y, expected, atol=1e-5)
    (-y.mean()).backward()  # wants brighter still
    assert float(head.grad.abs().max()) == 0.0


def test_a_gain_map_cannot_paint_structure_on_a_flat_field():
    """Whatever the head says, a flat input gets no texture under ``gain``: the map is
    averaged over blocks and upsampled along the input's (absent) edges, so at most a slow
    brightness drift is left; a residual head paints the head's noise into the image."""
    flat = torch.full((1, 3, 64, 64), 0.2)
    wild = torch.randn(1, 4, 64, 64, generator=torch.Generator().manual_seed(0)) * 3
    painted = bounded_residual(flat, torch.tanh(wild[:, 1:4]))
    gained = apply_gain(flat, wild[:, :1], scale=8)
    assert float(laplacian_variance(painted)) > 1000 * float(laplacian_variance(gained))


def test_guided_upsampling_follows_the_guides_edges():
    guide = torch.zeros(1, 1, 32, 32)
    guide[..., 16:] = 1.0  # a vertical edge
    source = guide.clone()  # the map to upsample changes where the guide does
    low_g, low_s = (torch.nn.functional.adaptive_avg_pool2d(t, (4, 4)) for t in (guide, source))
    up = guided_upsample(low_s, low_g, guide, eps=1e-4)
    bilinear = torch.nn.functional.interpolate(low_s, size=(32, 32), mode="bilinear", align_corners=False)
    edge_err = lambda m: float((m - source)[..., 12:20].abs().mean())  # noqa: E731
    assert edge_err(up) < 0.4 * edge_err(bilinear)  # 0.08 against 0.25


def test_a_gain_enhancer_saves_and_loads_with_its_output_settings(tmp_path):
    torch.manual_seed(1)
    net = UNet(width=4, depth=2, blocks=1, output="gain", gain_scale=2, gain_max=8.0, gain_residual=0.1)
    with torch.no_grad():
        net.head.weight.normal_(std=0.5)
    loaded = load_enhancer(save_enhancer(net, tmp_path / "g.safetensors"))
    assert loaded.config() == net.config() and loaded.output == "gain" and loaded.head.out_channels == 4
    x = _photo(2)
    assert torch.equal(loaded(x), net.eval()(x))


def test_a_gain_file_written_before_gain_param_existed_loads_with_the_tanh_parametrisation(tmp_path):
    import json

    from safetensors.torch import load_file, save_file
    from safetensors import safe_open

    torch.manual_seed(2)
    net = UNet(width=4, depth=2, blocks=1, output="gain", gain_scale=2, gain_param="tanh")
    with torch.no_grad():
        net.head.weight.normal_(std=0.5)
    path = save_enhancer(net, tmp_path / "new.safetensors")
    with safe_open(str(path), "pt") as f:
        meta = dict(f.metadata())
    unet = json.loads(meta["unet"])
    del unet["gain_param"], unet["gain_residual_highpass"]  # neither key existed then
    meta["unet"] = json.dumps(unet)
    save_file(load_file(str(path)), str(tmp_path / "old.safetensors"), metadata=meta)
    old = load_enhancer(tmp_path / "old.safetensors")
    assert old.gain_param == "tanh" and old.gain_residual_highpass == 0
    x = _photo(2)
    assert torch.equal(old(x), net.eval()(x))


def test_bad_output_settings_are_refused():
    with pytest.raises(ValueError, match=r"output must be one of \['residual', 'curves', 'gain', 'gain_denoise'\], got 'lut'"):
        UNet(output="lut")
    with pytest.raises(ValueError, match="need curve_iterations >= 1, gain_scale >= 1, gain_max > 1"):
        UNet(output="gain", gain_max=1.0)
    with pytest.raises(ValueError, match=r"gain_param must be one of \['log', 'tanh'\], got 'sigmoid'"):
        UNet(output="gain", gain_param="sigmoid")


def test_a_highpass_residual_cannot_shift_exposure_or_colour_but_passes_fine_detail():
    x = _photo(3) + 0.2  # mid-range: no clamping
    h, w = x.shape[-2:]
    # a cast (a constant per channel) or a ramp across the image adds nothing (the ramp:
    # away from the border windows, where the reflect padding folds it)
    cast = torch.tensor([0.08, -0.05, 0.03]).view(1, 3, 1, 1).expand_as(x)
    assert torch.allclose(highpass_residual(x, cast, 7), x, atol=1e-6)
    ramp = 0.1 * torch.linspace(-1, 1, w).view(1, 1, 1, w).expand_as(x)
    assert torch.allclose(highpass_residual(x, ramp, 7)[..., 3:-3, 3:-3], x[..., 3:-3, 3:-3], atol=1e-6)
    # a free residual of that cast does paint one
    assert float((bounded_residual(x, cast) - x).mean(dim=(2, 3)).abs().max()) > 0.03
    # a pixel-scale checkerboard passes (all but a 49th of it: the window's one extra cell)
    checker = 0.05 * (1 - 2 * ((torch.arange(h).view(h, 1) + torch.arange(w).view(1, w)) % 2)).float()
    delta = highpass_residual(x, checker.expand_as(x), 7) - x
    assert torch.allclose(delta[..., 3:-3, 3:-3], checker[3:-3, 3:-3] * (1 - 1 / 49), atol=1e-5)
    # a random residual leaves the image's mean colour where it was
    torch.manual_seed(0)
    r = 0.1 * torch.tanh(torch.randn_like(x) + 0.5)
    out = highpass_residual(x, r, 7)
    assert float((out - x).abs().mean()) > 0.03
    assert float((out - x).mean(dim=(2, 3)).abs().max()) < 2e-3
    assert abs(float(colour_cast(out).mean() - colour_cast(x).mean())) < 2e-3  # (x: 0.05)


def test_a_highpass_residual_stays_in_range_and_pulls_clipped_pixels_back():
    x = torch.full((1, 1, 9, 9), 0.98, requires_grad=True)
    r = torch.zeros(1, 1, 9, 9)
    r[..., 4, 4] = 0.5  # pushes the centre past 1
    r.requires_grad_(True)
    out = highpass_residual(x, r, 3)
    assert float(out.detach().max()) == 1.0 and float(out.detach().min()) >= 0
    out[..., 4, 4].sum().backward()  # a loss that wants the clipped centre lower
    assert float(r.grad[..., 4, 4]) > 0  # the descent step moves it back inside
    for window in (1, 4):
        with pytest.raises(ValueError, match=f"the high-pass window must be an odd size >= 3, got {window}"):
            highpass_residual(x, r, window)


def test_a_gain_enhancer_with_a_highpass_residual_keeps_the_gain_outputs_mean_colour(tmp_path):
    torch.manual_seed(4)
    free = UNet(width=4, depth=2, blocks=1, output="gain", gain_scale=4, gain_residual=0.1)
    with torch.no_grad():
        free.head.weight.normal_(std=0.3)
        free.head.weight[1:].normal_(std=20.0)  # a textured residual ...
        free.head.bias.copy_(torch.tensor([0.5, 2.0, -2.0, 0.0]))  # ... asking for a warm cast; gain 1.65
    hp = UNet(width=4, depth=2, blocks=1, output="gain", gain_scale=4, gain_residual=0.1, gain_residual_highpass=7)
    hp.load_state_dict(free.state_dict())
    gain_only = UNet(width=4, depth=2, blocks=1, output="gain", gain_scale=4)
    gain_only.load_state_dict({k: (v[:1] if k.startswith("head.") else v) for k, v in free.state_dict().items()})
    x = _photo(5)
    with torch.no_grad():
        base, y_free, y_hp = gain_only(x), free(x), hp(x)
    assert float((y_hp - base).abs().mean()) > 0.005  # the residual does act ...
    shift_hp = float((y_hp - base).mean(dim=(2, 3)).abs().max())  # ... but hardly on the mean colour
    shift_free = float((y_free - base).mean(dim=(2, 3)).abs().max())  # where the free one paints
    assert shift_free > 0.02 and shift_hp < shift_free / 8, (shift_hp, shift_free)
    cast_free, cast_hp = (abs(float(colour_cast(y).mean() - colour_cast(base).mean())) for y in (y_free, y_hp))
    assert cast_free > 0.005 and cast_hp < cast_free / 5, (cast_hp, cast_free)
    loaded = load_enhancer(save_enhancer(hp, tmp_path / "hp.safetensors"))
    assert loaded.gain_residual_highpass == 7 and torch.equal(loaded(x), hp.eval()(x))
    with pytest.raises(ValueError, match="gain_residual_highpass must be 0 \\(a free residual\\) or an odd size >= 3, got 6"):
        UNet(output="gain", gain_residual=0.1, gain_residual_highpass=6)


def test_luminance_guide_shape():
    assert luminance(_photo()).shape == (1, 1, 48, 64)


def test_an_enhancer_saved_before_the_output_settings_loads_as_a_residual_one(tmp_path):
    from attiqa_loss.weights_file import write_weights_file

    torch.manual_seed(2)
    net = UNet(width=4, depth=2, blocks=1)
    old = {"width": 4, "depth": 2, "blocks": 1, "max_width": 256}  # the metadata of an earlier version
    path = write_weights_file(tmp_path / "old.safetensors", net.state_dict(), format="attiqa-enhancer", version=1,
                              metadata={"unet": old, "training": {}})
    loaded = load_enhancer(path)
    assert loaded.output == "residual" and torch.equal(loaded(_photo()), net.eval()(_photo()))


def _optimise_head(output: str, image: torch.Tensor, steps: int = 60) -> torch.Tensor:
    """Adam on the head's maps alone (no network in between), asking the embedded
    AttiqaLoss for everything at once: the strongest pull a generator can exert."""
    from attiqa_loss import AttiqaLoss

    loss_fn = AttiqaLoss()
    g = torch.Generator().manual_seed(0)
    maps = (1e-3 * torch.randn(1, 3 if output == "residual" else 1, *image.shape[-2:], generator=g)).requires_grad_(True)
    opt = torch.optim.Adam([maps], lr=0.1)

    def render():
        if output == "residual":
            return bounded_residual(image, torch.tanh(maps))
        return apply_gain(image, maps, scale=8)

    for _ in range(steps):
        opt.zero_grad()
        loss_fn(render()).backward()
        opt.step()
    return render().detach()


def _local_structure(a: torch.Tensor, b: torch.Tensor, k: int = 7) -> float:
    """Mean local correlation of two images' luminance in ``k`` x ``k`` windows (SSIM's
    structure term): 1 when every window's pattern is kept, whatever its brightness."""
    import torch.nn.functional as F

    a, b = luminance(a), luminance(b)
    mu_a, mu_b = F.avg_pool2d(a, k, 1), F.avg_pool2d(b, k, 1)
    var_a, var_b = F.avg_pool2d(a * a, k, 1) - mu_a ** 2, F.avg_pool2d(b * b, k, 1) - mu_b ** 2
    cov = F.avg_pool2d(a * b, k, 1) - mu_a * mu_b
    c = 5e-5
    return float(((cov + c) / ((var_a.clamp_min(0) * var_b.clamp_min(0)).sqrt() + c)).mean())


def test_a_gain_output_keeps_the_inputs_structure_under_the_pull_of_attiqaloss():
    """What unpaired training cannot lose with a gain map: pulled by AttiqaLoss alone, the
    image gets brighter and keeps its structure (local correlation with the input, RMS
    contrast at least 0.8x the input's); a free residual under the same pull repaints it
    (measured here: local correlation 0.82 against 0.18)."""
    from attiqa_loss.measures import rms_contrast

    image = make_texture(96, 96, seed=3)[None] * 0.35
    gain, residual = _optimise_head("gain", image), _optimise_head("residual", image)
    assert float(luminance(gain).mean()) > 1.5 * float(luminance(image).mean())
    assert float(rms_contrast(gain) / rms_contrast(image)) >= 0.8
    kept, repainted = _local_structure(image, gain), _local_structure(image, residual)
    assert kept > 0.7 and repainted < 0.5, (kept, repainted)
