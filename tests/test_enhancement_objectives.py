"""Every loss term reaches the U-Net's weights; term values go the right way; LPIPS failure handling."""

import warnings

import pytest
import torch
from torch import nn

import enhancement.objectives as objectives
from attiqa_loss import AttiqaLoss, create_attiqa_net
from enhancement.objectives import (
    EnhancementObjective,
    LpipsUnavailable,
    charbonnier_loss,
    exposure_control_loss,
    resolve_lpips,
    total_variation_loss,
)
from enhancement.unet import create_unet


class FakeLpips(nn.Module):
    """Stands in for lpips.LPIPS (whose backbone cannot be downloaded here): same call signature."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.requires_grad_(False)

    def forward(self, a, b, normalize=False):
        if normalize:
            a, b = 2 * a - 1, 2 * b - 1
        return ((self.conv(a) - self.conv(b)) ** 2).mean(dim=(1, 2, 3), keepdim=True)


@pytest.fixture(scope="module")
def quality():
    torch.manual_seed(0)
    return AttiqaLoss(checkpoint=create_attiqa_net("test_resnet"))


def _objective(term, quality, **kwargs):
    return EnhancementObjective({term: 1.0}, lpips_model=FakeLpips(), attiqa=quality, **kwargs)


def _params_without_gradient(net):
    return [
        name
        for name, p in net.named_parameters()
        if p.grad is None or not torch.isfinite(p.grad).all() or p.grad.abs().sum() == 0
    ]


@pytest.mark.parametrize("term,fidelity", [
    ("fidelity", "l1"), ("fidelity", "charbonnier"), ("ssim", "l1"), ("lpips", "l1"),
    ("attiqa", "l1"), ("exposure", "l1"), ("tv", "l1"),
])
def test_every_term_sends_gradient_to_every_unet_weight(term, fidelity, quality):
    torch.manual_seed(0)
    net = create_unet(width=4, depth=2, blocks=1)
    x, y = torch.rand(2, 3, 40, 40), torch.rand(2, 3, 40, 40)
    total, terms = _objective(term, quality, fidelity=fidelity)(net(x), y)
    assert set(terms) == {term} and total.requires_grad
    total.backward()
    assert _params_without_gradient(net) == []


def test_gradient_check_catches_a_detached_term(quality, monkeypatch):
    # The check above must be able to fail: a term that silently detaches leaves no gradient.
    # "+ 0 * o.sum()" keeps the graph alive, so backward runs but every gradient is zero.
    detached = lambda self, name, o, t, *rest: (o.detach() - t).abs().mean() + 0 * o.sum()  # noqa: E731
    monkeypatch.setattr(EnhancementObjective, "_term", detached)
    net = create_unet(width=4, depth=1, blocks=1)
    total, _ = _objective("fidelity", quality)(net(torch.rand(1, 3, 32, 32)), torch.rand(1, 3, 32, 32))
    total.backward()
    assert len(_params_without_gradient(net)) == len(list(net.parameters()))


def test_total_is_the_weighted_sum(quality):
    obj = EnhancementObjective({"fidelity": 2.0, "tv": 0.5, "ssim": 0.0}, attiqa=quality)
    out, y = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    total, terms = obj(out, y)
    assert set(terms) == {"fidelity", "tv"}  # zero weight = off
    assert torch.allclose(total, 2 * terms["fidelity"] + 0.5 * terms["tv"])


def test_term_values_go_the_right_way():
    x = torch.rand(2, 3, 32, 32)
    assert torch.allclose(charbonnier_loss(x, x, eps=1e-3), torch.tensor(1e-3))
    assert torch.allclose(charbonnier_loss(x + 0.5, x, eps=1e-6), torch.tensor(0.5), atol=1e-5)
    assert float(total_variation_loss(torch.full((1, 3, 32, 32), 0.3))) == 0.0
    assert total_variation_loss(x) > total_variation_loss(x * 0.5)
    well_exposed = torch.full((1, 3, 32, 32), 0.6)
    assert float(exposure_control_loss(well_exposed, 0.6)) == pytest.approx(0.0, abs=1e-6)
    assert exposure_control_loss(well_exposed * 0.2, 0.6) > exposure_control_loss(well_exposed * 0.8, 0.6)
    obj = EnhancementObjective({"ssim": 1.0})
    assert float(obj(x, x)[0]) == pytest.approx(0.0, abs=1e-4)
    assert float(obj(x, torch.rand(2, 3, 32, 32))[0]) > 0.5


def test_reference_terms_need_a_target(quality):
    obj = EnhancementObjective({"fidelity": 1.0, "attiqa": 1.0}, attiqa=quality)
    with pytest.raises(ValueError, match=r"loss terms \['fidelity'\] compare with a target"):
        obj(torch.rand(1, 3, 32, 32))
    unpaired = EnhancementObjective({"attiqa": 1.0, "exposure": 1.0, "tv": 1.0}, attiqa=quality)
    total, terms = unpaired(torch.rand(1, 3, 32, 32))
    assert set(terms) == {"attiqa", "exposure", "tv"}


def test_objective_argument_errors(quality):
    with pytest.raises(ValueError, match=r"unknown loss term\(s\) \['perceptual'\]"):
        EnhancementObjective({"perceptual": 1.0})
    with pytest.raises(ValueError, match="at least one loss term needs a positive weight"):
        EnhancementObjective({"fidelity": 0.0})
    with pytest.raises(ValueError, match="lpips term has a positive weight but no LPIPS model"):
        EnhancementObjective({"lpips": 1.0})
    with pytest.raises(ValueError, match="attiqa term has a positive weight but no AttiqaLoss"):
        EnhancementObjective({"attiqa": 1.0})
    with pytest.raises(ValueError, match="weights must be >= 0"):
        EnhancementObjective({"tv": -1.0})


def _lpips_fails(monkeypatch):
    import lpips

    def fail(*args, **kwargs):
        raise OSError("simulated: the backbone weights cannot be fetched offline")

    monkeypatch.setattr(lpips, "LPIPS", fail)


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty torch hub cache (``TORCH_HOME``): a machine that never fetched an LPIPS backbone.
    Returns its ``checkpoints`` folder (not created)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch" / "hub" / "checkpoints"


def _cached(hub_cache, name):
    hub_cache.mkdir(parents=True, exist_ok=True)
    (hub_cache / name).write_bytes(b"")  # never read: lpips.LPIPS is a stand-in in these tests


def test_missing_lpips_is_an_error_unless_allowed(hub_cache, monkeypatch, capsys):
    _cached(hub_cache, "alexnet-owt-7be5be79.pth")  # on the machine, yet lpips fails to load it
    _lpips_fails(monkeypatch)
    with pytest.raises(LpipsUnavailable, match="set loss.lpips_allow_missing=true"):
        resolve_lpips("alex", weight=0.1, allow_missing=False, for_metrics=False)
    assert resolve_lpips("alex", weight=0.1, allow_missing=True, for_metrics=True) is None
    err = capsys.readouterr().err
    assert "LPIPS (alex) is unavailable: OSError" in err and "the LPIPS loss term and metric are disabled" in err
    assert resolve_lpips("alex", weight=0.0, allow_missing=False, for_metrics=True) is None
    assert "the LPIPS metric is disabled" in capsys.readouterr().err


def test_lpips_downloads_nothing_unless_asked_for(hub_cache, monkeypatch, capsys):
    # #37: without its backbone weights on the machine, LPIPS is off (one line), not fetched,
    # unless the config asks for it: loss.lpips_weight > 0 with loss.lpips_allow_missing false.
    import lpips

    calls = []
    monkeypatch.setattr(lpips, "LPIPS", lambda net, verbose: calls.append(net) or FakeLpips())
    assert objectives.lpips_backbone_file("alex") == hub_cache / "alexnet-owt-7be5be79.pth"
    # configs/enhance_lowlight.yaml: lpips_weight 0.1, lpips_allow_missing true, val.lpips true
    assert resolve_lpips("alex", weight=0.1, allow_missing=True, for_metrics=True) is None
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("attiqa-enhance: the LPIPS loss term and metric are off: ")
    assert f"({hub_cache / 'alexnet-owt-7be5be79.pth'})" in err and "loss.lpips_allow_missing=false" in err
    assert resolve_lpips("vgg", weight=0.0, allow_missing=False, for_metrics=True) is None  # val.lpips alone
    assert capsys.readouterr().err.startswith("attiqa-enhance: the LPIPS metric is off: ")
    assert resolve_lpips("alex", weight=0.1, allow_missing=True, for_metrics=False, say=False) is None  # rank > 0
    assert capsys.readouterr().err == "" and calls == []
    # Asked for: lpips may fetch its backbone (the stand-in is what it would build).
    assert isinstance(resolve_lpips("alex", weight=0.1, allow_missing=False, for_metrics=True), FakeLpips)
    # On the machine already: used, nothing to fetch.
    _cached(hub_cache, "vgg16-397923af.pth")
    assert isinstance(resolve_lpips("vgg", weight=0.0, allow_missing=False, for_metrics=True), FakeLpips)
    assert calls == ["alex", "vgg"] and capsys.readouterr().err == ""


def test_loading_lpips_shows_no_torchvision_deprecation_warnings(monkeypatch):
    # #37: lpips passes torchvision the deprecated pretrained=; a normal run must not show that.
    import lpips

    real = lpips.LPIPS
    # A random trunk (pnet_rand): nothing is fetched, and torchvision still gets pretrained=.
    monkeypatch.setattr(lpips, "LPIPS", lambda net, verbose: real(net=net, verbose=verbose, pnet_rand=True))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        real(net="squeeze", verbose=False, pnet_rand=True)
        assert any("'pretrained' is deprecated" in str(w.message) for w in caught)  # the noise in question
        caught.clear()
        model = objectives.load_lpips("squeeze")
        assert [str(w.message) for w in caught] == []
    assert not model.training
    filters = list(warnings.filters)
    objectives.load_lpips("squeeze")
    assert warnings.filters == filters  # silenced at the call only: no filter is left behind


def test_lpips_not_loaded_when_unused(monkeypatch):
    monkeypatch.setattr(objectives, "load_lpips", lambda net: pytest.fail("LPIPS must not be loaded"))
    assert resolve_lpips("alex", weight=0.0, allow_missing=False, for_metrics=False) is None


def test_loaded_lpips_is_frozen_and_stays_in_eval(monkeypatch):
    import lpips

    monkeypatch.setattr(lpips, "LPIPS", lambda net, verbose: FakeLpips().train())
    model = objectives.load_lpips("vgg")
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    obj = EnhancementObjective({"lpips": 1.0}, lpips_model=model).train()
    assert not obj.lpips_model.training


# -- Zero-DCE's non-reference losses, against values worked out by hand --------------------


def _flat(r, g, b, h=8, w=8):
    return torch.tensor([r, g, b]).view(1, 3, 1, 1).expand(1, 3, h, w).contiguous()


def test_colour_constancy_by_hand():
    from enhancement.objectives import colour_constancy_loss

    assert float(colour_constancy_loss(_flat(0.2, 0.4, 0.6))) == pytest.approx(0.04 + 0.16 + 0.04)
    assert float(colour_constancy_loss(_flat(0.3, 0.3, 0.3))) == 0.0


def test_spatial_consistency_by_hand_and_its_invariance_to_a_brightness_shift():
    from enhancement.objectives import spatial_consistency_loss

    inputs = torch.zeros(1, 3, 4, 8)
    inputs[..., 4:] = 0.2  # two 4x4 blocks: means 0.0 and 0.2
    doubled = inputs * 2  # block contrast 0.4 instead of 0.2
    # K = 2 blocks, one neighbouring pair counted from both sides: 2 * (0.4 - 0.2)^2 / 2
    assert float(spatial_consistency_loss(doubled, inputs)) == pytest.approx(0.04)
    assert float(spatial_consistency_loss(inputs + 0.3, inputs)) == pytest.approx(0.0, abs=1e-12)
    assert float(spatial_consistency_loss(inputs, inputs)) == 0.0


def test_illumination_smoothness_by_hand():
    from enhancement.objectives import illumination_smoothness_loss

    maps = torch.zeros(1, 6, 2, 2)  # two iterations of R, G, B maps
    maps[0, 0] = torch.tensor([[0.0, 1.0], [0.0, 1.0]])  # one horizontal step in one map
    # (|dx| + |dy|)^2 = 1 at the one pixel with both neighbours; summed over channels, / 2 iterations
    assert float(illumination_smoothness_loss(maps)) == pytest.approx(0.5)
    assert float(illumination_smoothness_loss(torch.full((1, 3, 5, 5), 0.7))) == 0.0


def test_zero_dce_terms_need_their_inputs_and_reach_the_network():
    objective = EnhancementObjective({"spatial": 1.0, "color": 0.5, "smooth": 20.0, "exposure": 1.0})
    net = create_unet(width=4, depth=1, blocks=1, output="curves", curve_iterations=2)
    x = torch.rand(2, 3, 16, 16) * 0.3
    out, maps = net(x, return_maps=True)
    assert maps.shape == (2, 6, 16, 16)
    with pytest.raises(ValueError, match="the spatial term compares with the input, but no inputs were given"):
        objective(out, maps=maps)
    with pytest.raises(ValueError, match="the smooth term needs the network's output maps, but no maps were given"):
        objective(out, inputs=x)
    total, terms = objective(out, inputs=x, maps=maps)
    assert set(terms) == {"spatial", "color", "smooth", "exposure"}
    total.backward()
    assert float(net.head.weight.grad.abs().sum()) > 0
