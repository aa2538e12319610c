"""The robustness report (`attiqa-pretrain robustness`) and the hardening terms of training."""

from __future__ import annotations

import csv
import math

import pytest
import torch

from attiqa_loss import ATTRIBUTES, AttiqaNet
from pretrain.diagnostics.robustness_anchors import ANCHOR_RULES, anchor_images, check_anchors
from pretrain.diagnostics.robustness_attacks import attack_rows, bounded_attack, high_frequency_fraction
from pretrain.diagnostics.robustness_generator import TinyGenerator, generator_probe
from pretrain.training.hardening_anchors import BRIGHT, SATURATED, sample_anchors, sample_edge_pairs
from pretrain.training.hardening_terms import (clipped_fix, craft_adversarial, edge_invariance_loss, edge_ranking_loss,
                                               first_order_gain, frozen_batchnorm, no_gain_loss)

from helpers import build_tiny_net, make_texture

A = {a: i for i, a in enumerate(ATTRIBUTES)}


class _Constant(AttiqaNet):
    """An AttiqaNet whose scores are a fixed value for every image (tests the rule logic)."""

    def __init__(self, value: float) -> None:
        super().__init__("test_resnet")
        self.value = value

    def forward(self, images, *, check=True):
        return torch.full((len(images), len(ATTRIBUTES)), self.value) + 0 * images.mean()


def test_anchor_images_are_what_their_names_say():
    anchors = anchor_images(64, seed=1)
    for name in ("flat colour", "black", "white", "grey"):
        x = anchors[name]
        assert x.shape[1:] == (3, 64, 64)
        assert (x - x[..., :1, :1]).abs().max() == 0, name  # every pixel the same colour
    assert anchors["black"].max() == 0 and anchors["white"].min() == 1
    assert (anchors["grey"] == 0.5).all()
    assert anchors["noise field"].flatten(1).std(1).min() > 0.1
    step = anchors["step edge"]
    # Two tones per image, and the blurred copy has smaller pixel-to-pixel jumps.
    assert all(len(torch.unique(s.flatten(1), dim=1).T) == 2 for s in step)
    jump = lambda x: (x[..., 1:] - x[..., :-1]).abs().amax() + (x[..., 1:, :] - x[..., :-1, :]).abs().amax()
    assert jump(anchors["blurred step edge"]) < 0.5 * jump(step)


def test_check_anchors_applies_each_rule():
    low = check_anchors(_Constant(0.05), sizes=(64,))
    assert len(low) == len(ANCHOR_RULES)
    assert all(r["passed"] for r in low if r["rule"].startswith("<="))
    # A constant score never ranks a step edge above its blurred copy (margin 0).
    step = [r for r in low if r["rule"].startswith(">")]
    assert step and not any(r["passed"] for r in step) and step[0]["worst"] == 0
    high = check_anchors(_Constant(0.5), sizes=(64, 96))
    assert len(high) == 2 * len(ANCHOR_RULES)
    assert not any(r["passed"] for r in high)
    assert {r["size"] for r in high} == {64, 96}


def test_bounded_attack_stays_in_the_ball_raises_the_score_and_keeps_global_rng():
    net = build_tiny_net(0)
    x = torch.stack([make_texture(48, 48, seed=i) for i in range(2)])
    eps = 4 / 255
    torch.manual_seed(123)
    before_state = torch.get_rng_state()
    adv = bounded_attack(net, x, "contrast", eps, steps=8, views=2)
    assert torch.equal(torch.get_rng_state(), before_state)
    assert (adv - x).abs().max() <= eps + 1e-6
    assert adv.min() >= 0 and adv.max() <= 1
    with torch.no_grad():
        gain = net(adv)[:, A["contrast"]] - net(x)[:, A["contrast"]]
    assert gain.mean() > 0
    # Reproducible: the same seed gives the same result, views included.
    assert torch.equal(adv, bounded_attack(net, x, "contrast", eps, steps=8, views=2))


def test_attack_rows_compare_with_the_real_fix():
    net = build_tiny_net(0)
    x = torch.stack([make_texture(48, 48, seed=i) for i in range(2)])
    rows, strips = attack_rows(net, x, eps_list=(2 / 255, 8 / 255), steps=3, attributes=("brightness", "noisiness"))
    assert [(r["attribute"], r["eps_255"]) for r in rows] == [("brightness", 2), ("brightness", 8),
                                                             ("noisiness", 2), ("noisiness", 8)]
    for r in rows:
        if not math.isnan(r["gain_vs_fix"]):
            assert r["gain_vs_fix"] == pytest.approx(r["score_gain"] / r["fix_gain"])
        assert r["psnr_db"] > 30
        assert -1 <= r["clip_fix_vs_fix"] <= 2 or math.isnan(r["clip_fix_vs_fix"])
    assert set(strips) == {"brightness", "noisiness"} and strips["brightness"].shape == (4, 3, 48, 48)


def test_clipped_fix_is_the_real_fix_cut_to_the_ball():
    clean = torch.stack([make_texture(32, 32, seed=i) for i in range(2)])
    degraded = (clean * 0.5).clamp(0, 1)
    eps = 4 / 255
    part = clipped_fix(degraded, clean, eps)
    assert (part - degraded).abs().max() <= eps + 1e-7
    # Every pixel moves towards the clean one, by the whole way where that is within eps.
    step = part - degraded
    need = clean - degraded
    assert torch.all(step * need >= 0)
    near = need.abs() <= eps
    assert torch.allclose(part[near], clean[near])
    assert torch.equal(clipped_fix(degraded, clean, 1.0), clean)


def test_high_frequency_fraction_separates_patterns():
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    checker = 0.01 * ((xx + yy) % 2 * 2 - 1)[None, None].expand(1, 3, 64, 64)
    smooth = 0.01 * torch.sin(xx / 20)[None, None].expand(1, 3, 64, 64)
    assert high_frequency_fraction(checker) > 0.9
    assert high_frequency_fraction(smooth) < 0.1


def test_tiny_generator_starts_as_identity_and_probe_reports_each_mode():
    x = torch.stack([make_texture(40, 40, seed=i) for i in range(5)])
    assert torch.equal(TinyGenerator()(x), x)
    rows, grid = generator_probe(build_tiny_net(0), x, steps=2, modes=("loss", "l1"))
    assert [r["mode"] for r in rows] == ["loss", "l1"]
    assert grid.shape == (5, 4, 3, 40, 40)  # degraded | loss | l1 | clean
    assert torch.equal(grid[:, -1], x)
    with pytest.raises(ValueError, match="mode must be"):
        generator_probe(build_tiny_net(0), x, steps=1, modes=("gan",))


def test_robustness_cli_on_a_tiny_model(tiny_checkpoint_path, write_png, tmp_path):
    from pretrain.cli import main

    for i in range(5):
        write_png(tmp_path / "photos" / f"p{i}.png", 72, 80, seed=i)
    out = tmp_path / "report"
    args = ["robustness", "--checkpoint", str(tiny_checkpoint_path), "--images", str(tmp_path / "photos"),
            "--all-images", "--crop", "48", "--views", "0", "--eps", "4", "--steps", "2", "--generator-steps", "2",
            "--anchor-sizes", "48", "--out", str(out)]
    assert main(args) == 0
    rows = list(csv.DictReader(open(out / "robustness.csv")))
    assert {r["section"] for r in rows} == {"anchor", "attack", "generator"}
    assert sum(r["section"] == "attack" for r in rows) == len(ATTRIBUTES)
    md = (out / "robustness.md").read_text()
    assert "4/255 attacks, views 0" in md and "loss-only generator" in md
    for name in ("anchors.png", "attacks_views0.png", "generator_views0.png"):
        assert (out / name).stat().st_size > 1000


@pytest.mark.parametrize("flag, value, message", [
    ("--crop", "16", "--crop must be >= 32 (the model's minimum side), got 16"),
    ("--eps", "0", "--eps must all be in (0, 255], got [0.0]"),
    ("--steps", "0", "--steps must be >= 1, got 0"),
    ("--holdout-every", "0", "--holdout-every must be >= 1, got 0"),
    ("--checkpoint", "missing.safetensors", "--checkpoint missing.safetensors: "),
])
def test_robustness_cli_rejects_bad_values(tiny_checkpoint_path, tmp_path, flag, value, message, capsys):
    """One line naming the option and the value, exit status 2, nothing written."""
    from pretrain.cli import main

    with pytest.raises(SystemExit) as info:
        main(["robustness", "--checkpoint", str(tiny_checkpoint_path), "--images", str(tmp_path),
              flag, value, "--out", str(tmp_path / "o")])
    assert info.value.code == 2 and str(info.value).startswith(f"attiqa-pretrain robustness: {message}")
    err = capsys.readouterr().err.strip()
    assert err == str(info.value) and "\n" not in err and not (tmp_path / "o").exists()


# -- hardening ------------------------------------------------------------------------------


def test_anchors_carry_their_physical_labels():
    g = torch.Generator().manual_seed(0)
    x, y = sample_anchors(200, 32, g)
    assert x.shape == (200, 3, 32, 32) and y.shape == (200, 5)
    assert x.min() >= 0 and x.max() <= 1
    flat = (x - x[..., :1, :1]).flatten(1).abs().amax(1) == 0
    noisy = y[:, A["noisiness"]] == 0
    assert flat.sum() > 30 and noisy.sum() > 30
    # Flat fields: no detail, no contrast, noise-free.
    assert (y[flat][:, [A["sharpness"], A["contrast"]]] == 0).all()
    assert (y[flat][:, A["noisiness"]] == 1).all()
    # Dark flat fields are labelled dark, grey ones colourless, and only those.
    colour = x[flat][:, :, 0, 0]
    dark = colour.amax(1) < 0.06
    grey = (colour.amax(1) - colour.amin(1)) < 0.02
    assert dark.any() and grey.any()
    assert torch.equal(y[flat][:, A["brightness"]] == 0, dark)
    assert torch.equal(y[flat][:, A["colorfulness"]] == 0, grey)
    # Noise fields are noisy, and have no sharpness or contrast label.
    assert x[noisy].flatten(1).std(1).min() > 0.05
    assert torch.isnan(y[noisy][:, [A["sharpness"], A["contrast"]]]).all()
    # Reproducible from the generator.
    x2, y2 = sample_anchors(200, 32, torch.Generator().manual_seed(0))
    assert torch.equal(x, x2) and torch.equal(torch.nan_to_num(y, 7), torch.nan_to_num(y2, 7))


def test_anchors_without_smooth_noise_free_leave_noisiness_to_the_noise_fields():
    x, y = sample_anchors(120, 16, torch.Generator().manual_seed(0))
    x2, y2 = sample_anchors(120, 16, torch.Generator().manual_seed(0), smooth_noise_free=False)
    assert torch.equal(x, x2)  # the same images, only the labels differ
    noise_free = y[:, A["noisiness"]] == 1
    assert noise_free.sum() > 30
    assert torch.isnan(y2[noise_free][:, A["noisiness"]]).all()
    assert torch.equal(y2[:, A["noisiness"]] == 0, y[:, A["noisiness"]] == 0)
    others = [i for i in range(5) if i != A["noisiness"]]
    assert torch.equal(torch.nan_to_num(y[:, others], 7), torch.nan_to_num(y2[:, others], 7))


def test_full_labels_add_bright_and_saturated_flat_fields_and_change_nothing_else():
    def draw(**kw):
        g = torch.Generator().manual_seed(5)
        x, y = sample_anchors(300, 16, g, smooth_noise_free=False, ramp_contrast=True, **kw)
        return x, y, torch.rand(4, generator=g)  # what the caller draws next

    x0, y0, next0 = draw()  # the flag absent: the anchors as they always were
    xf, yf, nextf = draw(full_labels=False)
    x1, y1, next1 = draw(full_labels=True)
    same = lambda a, b: torch.equal(torch.nan_to_num(a, 7), torch.nan_to_num(b, 7))
    assert torch.equal(x0, xf) and same(y0, yf) and torch.equal(next0, nextf)
    assert torch.equal(x0, x1) and torch.equal(next0, next1)  # no extra draws, the same images
    assert not (y0[:, [A["brightness"], A["colorfulness"]]] == 1).any()  # never without the flag
    # With it, only flat fields gain labels: brightness 1 from BRIGHT, colourfulness 1 from SATURATED.
    changed = ~((y0 == y1) | (torch.isnan(y0) & torch.isnan(y1)))
    assert changed[:, [A["sharpness"], A["contrast"], A["noisiness"]]].sum() == 0
    flat = (x1 - x1[..., :1, :1]).flatten(1).abs().amax(1) == 0
    colour = x1[:, :, 0, 0]
    lum = 0.299 * colour[:, 0] + 0.587 * colour[:, 1] + 0.114 * colour[:, 2]
    bright, saturated = flat & (lum >= BRIGHT), flat & (colour.amax(1) - colour.amin(1) >= SATURATED)
    assert bright.sum() > 10 and saturated.sum() > 10 and (flat & ~bright).sum() > 10
    assert torch.equal(y1[:, A["brightness"]] == 1, bright)
    assert torch.equal(y1[:, A["colorfulness"]] == 1, saturated)
    assert torch.equal(changed.any(1), bright | saturated)
    # Dark (brightness 0) and grey (colourfulness 0) fields keep their labels.
    assert torch.equal(y1[:, A["brightness"]] == 0, y0[:, A["brightness"]] == 0)
    assert torch.equal(y1[:, A["colorfulness"]] == 0, y0[:, A["colorfulness"]] == 0)


def test_frozen_batchnorm_uses_running_statistics_and_restores_the_modes():
    net = build_tiny_net(0).train()
    net.heads.eval()  # a layer already in eval mode stays so
    bns = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert bns
    modes = {name: m.training for name, m in net.named_modules()}
    buffers = [b.clone() for b in net.buffers()]
    x = torch.rand(2, 3, 64, 64)
    with frozen_batchnorm(net):
        assert not any(m.training for m in bns)
        assert all(m.training == modes[n] for n, m in net.named_modules()
                   if not isinstance(m, torch.nn.modules.batchnorm._BatchNorm))
        inside = net.forward_head(net.forward_features(x))
    assert all(torch.equal(a, b) for a, b in zip(buffers, net.buffers()))  # nothing updated
    assert {name: m.training for name, m in net.named_modules()} == modes
    with torch.no_grad():  # the running statistics, as in eval mode
        net.eval()
        assert torch.allclose(inside, net.forward_head(net.forward_features(x)), atol=1e-6)
    net.train()
    net.heads.eval()
    with pytest.raises(RuntimeError, match="boom"):
        with frozen_batchnorm(net):
            raise RuntimeError("boom")
    assert {name: m.training for name, m in net.named_modules()} == modes


def test_edge_pairs_are_two_tone_edges_and_their_blurred_copies():
    x = sample_edge_pairs(5, 32, torch.Generator().manual_seed(0))
    sharp, blurred = x[:5], x[5:]
    assert x.shape == (10, 3, 32, 32) and x.min() >= 0 and x.max() <= 1
    for s_img in sharp:  # exactly two colours
        assert len(torch.unique(s_img.flatten(1).T, dim=0)) == 2
    grad = lambda t: (t[..., 1:, :] - t[..., :-1, :]).abs().amax((1, 2, 3)) + (t[..., 1:] - t[..., :-1]).abs().amax((1, 2, 3))
    assert (grad(blurred) < 0.6 * grad(sharp)).all()  # the same edges, softened
    assert torch.allclose(sharp.mean((2, 3)), blurred.mean((2, 3)), atol=0.02)
    assert torch.equal(x, sample_edge_pairs(5, 32, torch.Generator().manual_seed(0)))
    # The hinge on logits: zero once each edge's logit beats its blurred copy's by the margin.
    assert float(edge_ranking_loss(torch.tensor([3.0, -5.0, 1.0, -5.5]), 1.0)) == pytest.approx(0.25)
    assert float(edge_ranking_loss(torch.tensor([3.0, -4.0, 1.0, -5.0]), 1.0)) == 0.0


def test_ramp_contrast_labels_wide_ramps_contrasty_and_nothing_else_changes():
    x, y = sample_anchors(300, 16, torch.Generator().manual_seed(3), ramp_contrast=True)
    lum = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    span = lum.flatten(1).amax(1) - lum.flatten(1).amin(1)
    ramp = (y[:, A["sharpness"]] == 0) & (span > 0) & (y[:, A["noisiness"]] == 1)
    contrasty = y[:, A["contrast"]] == 1
    assert contrasty.sum() > 20
    assert (span[contrasty] >= 0.5).all() and ramp[contrasty].all()  # only wide ramps
    assert torch.isnan(y[ramp & (span < 0.5)][:, A["contrast"]]).all()
    # Flat fields keep contrast 0; without the option no ramp is labelled for contrast.
    _, y0 = sample_anchors(300, 16, torch.Generator().manual_seed(3))
    assert not (y0[:, A["contrast"]] == 1).any()


def test_edge_invariance_compares_the_other_four_scores_of_each_pair():
    s = torch.tensor([[0.9, 0.5, 0.5, 0.5, 0.5], [0.1, 0.7, 0.5, 0.5, 0.9]])
    assert float(edge_invariance_loss(s)) == pytest.approx((0.2 + 0.4) / 4)
    s[1, 1:] = s[0, 1:]
    assert float(edge_invariance_loss(s)) == 0.0  # sharpness alone may differ


def test_adversarial_twins_stay_in_the_ball_raise_their_logit_and_touch_nothing_else():
    from pretrain.training.step import Logits as _Logits

    net = build_tiny_net(0).train()
    logits = _Logits(net)
    x = torch.stack([make_texture(40, 40, seed=i) for i in range(6)])
    attr = torch.tensor([0, 1, 2, 3, 4, 0])
    eps = torch.tensor([2, 4, 8, 8, 4, 2]) / 255
    buffers = [b.clone() for b in net.buffers()]
    adv = craft_adversarial(logits, x, attr, eps, torch.Generator().manual_seed(1), steps=3)
    assert ((adv - x).abs().flatten(1).amax(1) <= eps + 1e-6).all()
    assert adv.min() >= 0 and adv.max() <= 1
    assert all(torch.equal(a, b) for a, b in zip(buffers, net.buffers()))
    assert all(p.grad is None for p in net.parameters())
    with torch.no_grad():
        net.eval()
        gain = (logits(adv) - logits(x)).gather(1, attr[:, None])
    assert gain.mean() > 0


def test_clipped_fix_with_one_radius_per_image_moves_at_most_eps_towards_the_better_image():
    from pretrain.training.hardening_terms import clipped_fix

    degraded = torch.full((2, 3, 4, 4), 0.5)
    better = degraded.clone()
    better[0, 0, 0, 0], better[0, 1, 0, 0], better[1, 2, 1, 1] = 0.9, 0.49, 0.1
    out = clipped_fix(degraded, better, torch.tensor([0.02, 0.5]))
    assert out[0, 0, 0, 0] == pytest.approx(0.52) and out[0, 1, 0, 0] == pytest.approx(0.49)
    assert out[1, 2, 1, 1] == pytest.approx(0.1)  # within the radius: the whole way
    assert torch.equal(out[0, 2], degraded[0, 2])  # where nothing differs, nothing moves


class Linear(torch.nn.Module):
    """A linear 'network': every logit is ``w . x`` (the alignment tests' model)."""

    def __init__(self, w):
        super().__init__()
        self.w = torch.nn.Parameter(w)

    def forward(self, x):
        return (x.flatten(1) * self.w).sum(1, keepdim=True).expand(-1, 5)


def test_alignment_loss_is_one_minus_the_honest_share_of_the_first_order_attack():
    """On a linear 'network' (logit = w . x) the term is exactly ``1 - (w . d) / (eps ||w||_1)``
    with ``d`` the clipped move towards the group's first level: 0 when the weights point
    where the fix goes, 2 when against it, and scale-free (10 w and 100 w give the same
    value, up to the denominator's padding)."""
    from pretrain.training.hardening import HardeningConfig
    from pretrain.training.hardening_terms import alignment_loss

    x = torch.full((2, 3, 2, 2), 0.5)
    x[0] += 0.1  # the group's first (least degraded) level is brighter than level 1
    h = HardeningConfig(alignment=1, alignment_eps=4.0)
    t = torch.zeros(2, dtype=torch.long)
    args = (x, t, [1], 2, torch.Generator().manual_seed(0), torch.device("cpu"))
    up = torch.ones(12)
    # (to within the 1e-3 the denominator is padded by: the first-order attack here is 12 eps)
    assert alignment_loss(Linear(up), h, *args).item() == pytest.approx(0.0, abs=0.01)
    assert alignment_loss(Linear(-up), h, *args).item() == pytest.approx(2.0, abs=0.01)
    mixed = torch.tensor([1.0] * 6 + [-1.0] * 6)  # half for, half against: r = 0
    assert alignment_loss(Linear(mixed), h, *args).item() == pytest.approx(1.0, abs=0.01)
    half = torch.tensor([1.0] * 6 + [0.0] * 6)  # every weight along the fix: r = 1
    assert alignment_loss(Linear(10 * half), h, *args).item() == pytest.approx(
        alignment_loss(Linear(100 * half), h, *args).item(), abs=2e-3)
    net = Linear(mixed.clone())
    alignment_loss(net, h, *args).backward()  # the parameters get a gradient (double backward)
    assert net.w.grad is not None and net.w.grad.abs().sum() > 0


def test_no_gain_loss_only_punishes_rises():
    start = torch.tensor([[0.5, 0.5, 0.5, 0.5, 0.5]], requires_grad=True)
    assert no_gain_loss(start.detach() - 0.1, start) == 0
    adv = (start.detach() + torch.tensor([[0.5, 0, 0, 0, 0]])).requires_grad_(True)
    loss = no_gain_loss(adv, start)
    assert loss.item() == pytest.approx(0.1)
    loss.backward()
    assert start.grad is None and adv.grad is not None
    assert no_gain_loss(torch.empty(0, 5), torch.empty(0, 5)) == 0
    # Attacked attribute only: a rise elsewhere is free.
    both = start.detach() + torch.tensor([[0.5, 0.2, 0, 0, 0]])
    assert no_gain_loss(both, start, torch.tensor([1])).item() == pytest.approx(0.2)
    assert no_gain_loss(both, start, torch.tensor([2])).item() == 0


def test_first_order_gain_is_what_a_small_sign_attack_earns_and_training_it_down_works():
    """``eps * ||grad||_1`` equals the gain of the one-step sign attack at a tiny radius
    (the definition), on the logits and on the scores, and a few optimiser steps on the
    logits' gain make a real 4/255 sign attack earn less: the penalty is differentiable in
    the parameters (double backward)."""
    from pretrain.training.step import Logits as _Logits

    net = build_tiny_net(0).eval()
    logits = _Logits(net)
    x = torch.stack([make_texture(40, 40, seed=i) for i in range(4)]).double().clamp(0.05, 0.95)
    logits.double()
    attr = torch.tensor([0, 1, 3, 4])

    def sign_attack_gain(eps, f=lambda t: t):
        xr = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(f(logits(xr)).gather(1, attr[:, None]).sum(), xr)
        with torch.no_grad():
            return (f(logits(x + eps * grad.sign())) - f(logits(x))).gather(1, attr[:, None])[:, 0]

    eps = 1e-7  # small enough that no ReLU changes side
    for on_scores, f in ((False, lambda t: t), (True, torch.sigmoid)):
        predicted = first_order_gain(logits, x, attr, eps, on_scores=on_scores)
        assert predicted.shape == (4,) and (predicted > 0).all()
        assert torch.allclose(predicted.detach(), sign_attack_gain(eps, f), rtol=1e-3)
    before = sign_attack_gain(4 / 255)
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    for _ in range(20):
        opt.zero_grad()
        first_order_gain(logits, x, attr, 4 / 255).mean().backward()
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
        opt.step()
    assert sign_attack_gain(4 / 255).mean() < 0.5 * before.mean()


def test_colour_cast_is_zero_for_grey_and_grows_with_a_tint():
    from attiqa_loss.measures import colour_cast

    grey = torch.full((1, 3, 8, 8), 0.4)
    tinted = grey + torch.tensor([0.1, 0.1, -0.1]).view(1, 3, 1, 1)
    assert colour_cast(grey) == 0
    assert colour_cast(tinted) > colour_cast(grey + torch.tensor([0.02, 0.02, -0.02]).view(1, 3, 1, 1)) > 0


def test_remove_tone_takes_out_exposure_and_contrast_and_keeps_detail():
    """A change that is a global shift plus scaling of the image's own values (exposure,
    linear contrast) is removed entirely; what is left is orthogonal to the image and sums
    to zero per image and channel; a change already free of tone passes unchanged."""
    from pretrain.training.hardening_terms import remove_tone

    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 16, 16, generator=g)
    tone = 0.05 + 0.3 * (x - 0.5)  # a + b x
    assert remove_tone(tone, x).abs().max() < 1e-6
    detail = torch.randn(2, 3, 16, 16, generator=g)
    left = remove_tone(detail + tone, x)
    assert left.sum((-2, -1)).abs().max() < 1e-4
    assert (left * x).sum((-2, -1)).abs().max() < 1e-3
    free = remove_tone(detail, x)
    assert torch.allclose(remove_tone(free, x), free, atol=1e-5)


def test_alignment_tone_free_ignores_the_tone_part_of_sharpness_and_noise_fixes_only():
    """With ``alignment_tone_free`` a sharpness group whose fix is a pure brightening has
    nothing left to align with (r = 0 whatever the gradient), while a brightness group's
    identical fix still counts in full: the option touches sharpness and noisiness only."""
    from pretrain.training.hardening import HardeningConfig
    from pretrain.training.hardening_terms import alignment_loss

    x = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(1)) * 0.5 + 0.25
    x[0] = x[1] * 1.2  # level 0 is level 1 brighter: a pure tone change
    up = torch.ones(48)  # every weight along the fix
    for attribute, expected in (("sharpness", 1.0), ("noisiness", 1.0), ("brightness", 0.0)):
        t = torch.full((2,), ATTRIBUTES.index(attribute), dtype=torch.long)
        args = (x, t, [1], 2, torch.Generator().manual_seed(0), torch.device("cpu"))
        plain = alignment_loss(Linear(up), HardeningConfig(alignment=1), *args).item()
        free = alignment_loss(Linear(up), HardeningConfig(alignment=1, alignment_tone_free=True), *args).item()
        assert plain == pytest.approx(0.0, abs=0.02), attribute
        assert free == pytest.approx(expected, abs=0.02), attribute
