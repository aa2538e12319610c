"""AttiqaLoss / attiqa_loss / attribute_distance (docs/method.md, section 8) on a tiny random network.

Direction checks (darker -> lower brightness) need a trained model and live with it; a
random network can only show the wrapper's mechanics, which is what is tested here.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from attiqa_loss import (
    ATTRIBUTES,
    AttiqaLoss,
    AttiqaNet,
    attiqa_loss,
    attribute_distance,
    create_attiqa_net,
    default_checkpoint_path,
    load_attiqa,
    random_view,
)


def _assert_frozen(net: AttiqaNet) -> None:
    for name, p in net.named_parameters():
        assert not p.requires_grad, f"{name} requires grad"
        assert p.grad is None, f"{name} received a gradient"


def _assert_eval(net: nn.Module) -> None:
    stray = [name for name, m in net.named_modules() if m.training]
    assert not stray, f"modules left in training mode: {stray}"


class Enhancer(nn.Module):
    """A stand-in for a user's model that owns the loss as a submodule."""

    def __init__(self, loss: AttiqaLoss) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.norm = nn.BatchNorm2d(3)
        self.loss = loss

    def forward(self, x):
        return torch.sigmoid(self.norm(self.conv(x)))


@pytest.fixture
def loss_fn(tiny_net) -> AttiqaLoss:
    return AttiqaLoss(checkpoint=tiny_net)


# --------------------------------------------------------------------------- attribute_distance


class TestAttributeDistance:
    scores = torch.tensor([[0.2, 0.4, 0.6, 0.8, 1.0], [1.0, 1.0, 1.0, 1.0, 1.0]])
    weights = torch.tensor([1.0, 2.0, 0.0, 1.0, 0.0])
    targets = torch.tensor([1.0, 0.5, 0.3, 1.0, 1.0])

    def test_known_values(self):
        # image 0: (1*0.8 + 2*0.1 + 0 + 1*0.2 + 0) / 4 = 0.3 ; image 1: (2*0.5) / 4 = 0.25
        per_image = attribute_distance(self.scores, self.weights, self.targets, "none")
        torch.testing.assert_close(per_image, torch.tensor([0.3, 0.25]))
        torch.testing.assert_close(attribute_distance(self.scores, self.weights, self.targets), torch.tensor(0.275))
        torch.testing.assert_close(attribute_distance(self.scores, self.weights, self.targets, "sum"), torch.tensor(0.55))

    def test_weights_are_normalised(self):
        a = attribute_distance(self.scores, self.weights, self.targets, "none")
        b = attribute_distance(self.scores, 7.5 * self.weights, self.targets, "none")
        torch.testing.assert_close(a, b)

    def test_zero_when_scores_hit_targets(self):
        out = attribute_distance(self.targets.expand(3, 5), self.weights, self.targets, "none")
        assert torch.equal(out, torch.zeros(3))

    def test_bad_reduction(self):
        with pytest.raises(ValueError, match=r"reduction must be one of \['mean', 'sum', 'none'\], got 'max'"):
            attribute_distance(self.scores, self.weights, self.targets, "max")

    @pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
    def test_low_precision_scores_are_upcast(self, dtype):
        out = attribute_distance(self.scores.to(dtype), self.weights, self.targets)
        assert out.dtype == torch.float32
        torch.testing.assert_close(out, torch.tensor(0.275), atol=1e-2, rtol=0)

    def test_float64_is_kept(self):
        out = attribute_distance(self.scores.double(), self.weights.double(), self.targets.double())
        assert out.dtype == torch.float64

    def test_gradcheck(self):
        scores = torch.rand(3, 5, dtype=torch.float64).mul(0.8).add(0.1).requires_grad_()
        targets = torch.tensor([1.0, 0.05, 0.95, 1.0, 0.0], dtype=torch.float64)
        weights = torch.tensor([1.0, 2.0, 0.5, 0.0, 1.0], dtype=torch.float64)
        assert torch.autograd.gradcheck(lambda s: attribute_distance(s, weights, targets), (scores,))


# --------------------------------------------------------------------------- construction errors


class TestConstructionErrors:
    def test_unknown_weight_name(self, tiny_net):
        with pytest.raises(ValueError, match=r"unknown attribute name\(s\) in weights: \['blur'\]"):
            AttiqaLoss(weights={"blur": 1.0}, checkpoint=tiny_net)

    def test_unknown_target_name(self, tiny_net):
        with pytest.raises(ValueError, match=r"unknown attribute name\(s\) in targets: \['Brightness'\]"):
            AttiqaLoss(targets={"Brightness": 0.7}, checkpoint=tiny_net)

    def test_negative_weight(self, tiny_net):
        with pytest.raises(ValueError, match=r"weights\['noisiness'\] must be a finite number >= 0.0, got -1.0"):
            AttiqaLoss(weights={"noisiness": -1.0}, checkpoint=tiny_net)

    def test_infinite_weight(self, tiny_net):
        with pytest.raises(ValueError, match=r"weights\['noisiness'\] must be a finite number >= 0.0, got inf"):
            AttiqaLoss(weights={"noisiness": float("inf")}, checkpoint=tiny_net)

    def test_all_zero_weights(self, tiny_net):
        with pytest.raises(ValueError, match=r"at least one weight must be positive, got weights=\{'sharpness': 0.0"):
            AttiqaLoss(weights={name: 0.0 for name in ATTRIBUTES}, checkpoint=tiny_net)

    @pytest.mark.parametrize("bad", [1.2, -0.1])
    def test_target_outside_unit_interval(self, tiny_net, bad):
        with pytest.raises(ValueError, match=rf"targets\['brightness'\] must be a finite number in \[0.0, 1.0\], got {bad}"):
            AttiqaLoss(targets={"brightness": bad}, checkpoint=tiny_net)

    @pytest.mark.parametrize("bad", [[1.0] * 5, (1.0,) * 5, 2.0])
    def test_non_mapping_weights(self, tiny_net, bad):
        with pytest.raises(TypeError, match=rf"weights must be a mapping from attribute name to float, got {type(bad).__name__}"):
            AttiqaLoss(weights=bad, checkpoint=tiny_net)

    def test_non_mapping_targets(self, tiny_net):
        with pytest.raises(TypeError, match=r"targets must be a mapping.*got list"):
            AttiqaLoss(targets=[0.5] * 5, checkpoint=tiny_net)

    def test_bad_reduction(self, tiny_net):
        with pytest.raises(ValueError, match=r"reduction must be one of \['mean', 'sum', 'none'\], got 'avg'"):
            AttiqaLoss(checkpoint=tiny_net, reduction="avg")

    def test_bad_checkpoint_type(self):
        with pytest.raises(TypeError, match="checkpoint must be None, a path or an AttiqaNet, got Linear"):
            AttiqaLoss(checkpoint=nn.Linear(2, 2))

    def test_missing_checkpoint_file(self, tmp_path):
        with pytest.raises(FileNotFoundError, match="checkpoint not found: .*nope.safetensors"):
            AttiqaLoss(checkpoint=tmp_path / "nope.safetensors")

    def test_functional_validates_too(self, tiny_net, image_batch):
        with pytest.raises(ValueError, match=r"targets\['contrast'\]"):
            attiqa_loss(image_batch(1), tiny_net, targets={"contrast": 2.0})
        with pytest.raises(ValueError, match="reduction must be one of"):
            attiqa_loss(image_batch(1), tiny_net, reduction="median")


# --------------------------------------------------------------------------- image errors


BAD_IMAGES = [
    pytest.param(lambda: [[0.5]], TypeError, r"images must be a torch.Tensor.*got list", id="non-tensor"),
    pytest.param(lambda: torch.rand(3, 32, 32), ValueError, r"4 dimensions.*got shape \(3, 32, 32\)", id="rank3"),
    pytest.param(lambda: torch.rand(1, 1, 32, 32), ValueError, r"3 \(RGB\) channels.*\(1, 1, 32, 32\)", id="grey"),
    pytest.param(lambda: torch.zeros(1, 3, 32, 32, dtype=torch.uint8), TypeError, r"floating-point.*torch.uint8", id="uint8"),
    pytest.param(lambda: torch.full((1, 3, 32, 32), float("nan")), ValueError, r"finite.*min=nan", id="nan"),
    pytest.param(lambda: torch.full((1, 3, 32, 32), float("inf")), ValueError, r"finite.*max=inf", id="inf"),
    pytest.param(lambda: torch.linspace(-1, 1, 3 * 32 * 32).view(1, 3, 32, 32), ValueError, r"\[0, 1\].*min=-1, max=1", id="minus1to1"),
    pytest.param(lambda: torch.linspace(0, 255, 3 * 32 * 32).view(1, 3, 32, 32), ValueError, r"\[0, 1\].*min=0, max=255", id="0to255"),
    pytest.param(lambda: torch.rand(1, 3, 31, 40), ValueError, r"at least 32x32 pixels, got H=31, W=40", id="small"),
]


@pytest.mark.parametrize("make, exc, match", BAD_IMAGES)
def test_forward_rejects_bad_images(loss_fn, make, exc, match):
    with pytest.raises(exc, match=match):
        loss_fn(make())


@pytest.mark.parametrize("make, exc, match", BAD_IMAGES)
def test_scores_rejects_bad_images(loss_fn, make, exc, match):
    with pytest.raises(exc, match=match):
        loss_fn.scores(make())


@pytest.mark.parametrize("make, exc, match", BAD_IMAGES[:4] + BAD_IMAGES[-1:])
def test_functional_rejects_bad_images(tiny_net, make, exc, match):
    with pytest.raises(exc, match=match):
        attiqa_loss(make(), tiny_net)


def test_check_inputs_false_skips_the_range_check(tiny_net):
    loss_fn = AttiqaLoss(checkpoint=tiny_net, check_inputs=False)
    assert torch.isfinite(loss_fn(torch.full((1, 3, 32, 32), 2.0)))


# --------------------------------------------------------------------------- behaviour


def test_smoke_and_range(loss_fn, image_batch):
    out = loss_fn(image_batch(2))
    assert out.shape == () and out.dtype == torch.float32
    assert 0.0 <= out.item() <= 1.0
    assert AttiqaLoss.higher_is_better is False and AttiqaLoss.is_differentiable is True


def test_scores_dict(loss_fn, image_batch):
    x = image_batch(3)
    scores = loss_fn.scores(x)
    assert list(scores) == list(ATTRIBUTES)
    for name, s in scores.items():
        assert s.shape == (3,) and torch.all((s >= 0) & (s <= 1)), name
    torch.testing.assert_close(torch.stack(list(scores.values()), dim=1), loss_fn.network(x))


def test_loss_equals_mean_distance_to_one_by_default(loss_fn, image_batch):
    x = image_batch(2)
    s = loss_fn.network(x)
    torch.testing.assert_close(loss_fn(x), (1 - s).mean())


@pytest.mark.parametrize("hw", [(32, 32), (32, 47), (97, 64), (64, 33)])
def test_any_size_at_least_32(loss_fn, image_batch, hw):
    out = loss_fn(image_batch(2, *hw))
    assert torch.isfinite(out)


def test_reduction_shapes_and_relation(tiny_net, image_batch):
    x = image_batch(3)
    w, t = {"contrast": 2.0}, {"brightness": 0.6}
    none = AttiqaLoss(w, t, checkpoint=tiny_net, reduction="none")(x)
    mean = AttiqaLoss(w, t, checkpoint=tiny_net, reduction="mean")(x)
    total = AttiqaLoss(w, t, checkpoint=tiny_net, reduction="sum")(x)
    assert none.shape == (3,) and mean.shape == () and total.shape == ()
    torch.testing.assert_close(mean, none.mean())
    torch.testing.assert_close(total, none.sum())
    torch.testing.assert_close(total, 3 * mean)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_function_equals_module(tiny_net, image_batch, reduction):
    x = image_batch(2, 40, 36)
    w, t = {"sharpness": 0.5, "noisiness": 3.0, "colorfulness": 0.0}, {"brightness": 0.7, "contrast": 0.2}
    module = AttiqaLoss(w, t, checkpoint=tiny_net, reduction=reduction)
    torch.testing.assert_close(attiqa_loss(x, tiny_net, w, t, reduction), module(x), rtol=0, atol=0)


def test_weighted_loss_by_hand(tiny_net, image_batch):
    x = image_batch(2)
    w = {"sharpness": 2.0, "contrast": 0.0, "brightness": 1.0, "colorfulness": 0.5, "noisiness": 0.0}
    t = {"brightness": 0.7, "colorfulness": 0.4}
    s = tiny_net(x)
    wv = torch.tensor([2.0, 0.0, 1.0, 0.5, 0.0])
    tv = torch.tensor([1.0, 1.0, 0.7, 0.4, 1.0])
    expected = ((s - tv).abs() * wv).sum(1) / 3.5
    torch.testing.assert_close(AttiqaLoss(w, t, checkpoint=tiny_net, reduction="none")(x), expected)


def test_zero_weight_removes_an_attribute(tiny_net, image_batch):
    x = image_batch(2)
    without = AttiqaLoss(weights={"contrast": 0.0}, checkpoint=tiny_net)
    with_it = AttiqaLoss(checkpoint=copy.deepcopy(tiny_net))
    before_without, before_with = without(x), with_it(x)
    for loss_fn in (without, with_it):
        with torch.no_grad():
            loss_fn.network.heads["contrast"].bias -= 4.0  # moves only the contrast score
    torch.testing.assert_close(without(x), before_without, rtol=0, atol=0)
    assert (with_it(x) - before_with).abs() > 1e-3


def test_target_equal_to_score_gives_zero_loss(tiny_net, image_batch):
    x = image_batch(1)
    scores = AttiqaLoss(checkpoint=tiny_net).scores(x)
    targets = {name: float(s) for name, s in scores.items()}
    assert AttiqaLoss(targets=targets, checkpoint=tiny_net)(x).item() == pytest.approx(0.0, abs=1e-7)


def test_only_the_target_side_of_a_score_is_penalised(tiny_net, image_batch):
    # |s - t|: a score above a target below 1 is penalised too ("enough, not more")
    x = image_batch(1)
    s = float(AttiqaLoss(checkpoint=tiny_net).scores(x)["brightness"])
    only_brightness = {name: float(name == "brightness") for name in ATTRIBUTES}
    above = AttiqaLoss(only_brightness, {"brightness": max(s - 0.1, 0.0)}, checkpoint=tiny_net)(x)
    below = AttiqaLoss(only_brightness, {"brightness": min(s + 0.1, 1.0)}, checkpoint=tiny_net)(x)
    assert above.item() == pytest.approx(s - max(s - 0.1, 0.0), abs=1e-6)
    assert below.item() == pytest.approx(min(s + 0.1, 1.0) - s, abs=1e-6)


def test_repr_names_weights_and_targets(tiny_net):
    text = repr(AttiqaLoss({"noisiness": 2.0}, {"brightness": 0.7}, checkpoint=tiny_net))
    assert "backbone='test_resnet'" in text and "'noisiness': 2.0" in text and "'brightness': 0.7" in text


# --------------------------------------------------------------------------- random views


def _dihedral(x):
    """The eight flips/transposes of a (..., H, W) tensor."""
    out = []
    for t in (x, x.transpose(-1, -2)):
        out += [t, t.flip(-1), t.flip(-2), t.flip(-1).flip(-2)]
    return out


def test_random_view_is_a_flipped_window_of_the_batch():
    x = torch.arange(2 * 3 * 50 * 44, dtype=torch.float32).view(2, 3, 50, 44)
    g = torch.Generator().manual_seed(0)
    seen_shapes, seen_offsets = set(), set()
    for _ in range(60):
        v = random_view(x, max_shift=8, generator=g)
        seen_shapes.add(tuple(v.shape))
        # undo the flip/transpose: some element of the group maps v back onto a window of x
        matches = [
            (dy, dx)
            for u in _dihedral(v)
            if u.shape[-2:] == (42, 36)
            for dy in range(9)
            for dx in range(9)
            if torch.equal(u, x[..., dy : dy + 42, dx : dx + 36])
        ]
        assert len(matches) == 1
        seen_offsets.add(matches[0])
    assert seen_shapes == {(2, 3, 42, 36), (2, 3, 36, 42)}
    assert len(seen_offsets) > 20  # the window moves


def test_random_view_never_goes_below_the_minimum_size():
    x = torch.rand(1, 3, 35, 90)
    for seed in range(10):
        v = random_view(x, max_shift=8, generator=torch.Generator().manual_seed(seed))
        assert sorted(v.shape[-2:]) == [32, 87]
    assert sorted(random_view(torch.rand(1, 3, 32, 32)).shape[-2:]) == [32, 32]
    with pytest.raises(ValueError, match="max_shift must be >= 0, got -1"):
        random_view(x, max_shift=-1)


@pytest.mark.parametrize("views", [-1, 1.5, True, "2"])
def test_views_must_be_a_non_negative_integer(tiny_net, views):
    with pytest.raises(ValueError, match=r"views must be an integer >= 0, got"):
        AttiqaLoss(checkpoint=tiny_net, views=views)


def test_views_average_random_views_and_keep_scores_deterministic(tiny_net, image_batch):
    x = image_batch(2, 64, 56)
    plain = AttiqaLoss(checkpoint=tiny_net, reduction="none")
    viewed = AttiqaLoss(checkpoint=tiny_net, reduction="none", views=3)
    assert "views=3" in repr(viewed) and "views" not in repr(plain)
    torch.manual_seed(0)
    a = viewed(x)
    torch.manual_seed(0)
    assert torch.equal(viewed(x), a)  # reproducible from the global seed
    torch.manual_seed(1)
    assert not torch.equal(viewed(x), a)  # fresh views every call
    assert not torch.equal(a, plain(x))
    # by hand: the mean of three views' scores, drawn from the same seed
    torch.manual_seed(0)
    by_hand = torch.stack([tiny_net(random_view(x)) for _ in range(3)]).mean(0)
    torch.testing.assert_close(a, (1 - by_hand).mean(1))
    # scores() and a views=0 loss ignore the random views
    assert torch.equal(viewed.scores(x)["brightness"], plain.scores(x)["brightness"])


def test_gradient_reaches_input_through_random_views(tiny_net, image_batch):
    x = image_batch(2, 48, 48).requires_grad_()
    AttiqaLoss(checkpoint=tiny_net, views=2)(x).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    _assert_frozen(tiny_net)


# --------------------------------------------------------------------------- gradients and freezing


def test_gradient_reaches_input_not_the_network(loss_fn, image_batch):
    x = image_batch(2).requires_grad_()
    loss_fn(x).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert x.grad.abs().sum() > 0
    _assert_frozen(loss_fn.network)


@pytest.mark.parametrize("value", [0.0, 0.5, 1.0])
def test_gradient_finite_for_constant_images(loss_fn, value):
    x = torch.full((2, 3, 32, 32), value, requires_grad=True)
    loss_fn(x).backward()
    assert torch.isfinite(x.grad).all()


def test_gradient_reaches_a_generator(tiny_net, image_batch):
    gen = Enhancer(AttiqaLoss(checkpoint=tiny_net)).train()
    gen.loss(gen(image_batch(2))).backward()
    assert gen.conv.weight.grad is not None and gen.conv.weight.grad.abs().sum() > 0
    _assert_frozen(gen.loss.network)


def test_checkpoint_instance_is_frozen_in_place(tiny_net):
    tiny_net.train()
    assert all(p.requires_grad for p in tiny_net.parameters())
    loss_fn = AttiqaLoss(checkpoint=tiny_net)
    assert loss_fn.network is tiny_net
    _assert_frozen(tiny_net)
    _assert_eval(tiny_net)


def test_functional_form_leaves_the_network_alone(tiny_net, image_batch):
    # documented: attiqa_loss() uses the network as it is, so it can be fine-tuned
    attiqa_loss(image_batch(2), tiny_net).backward()
    assert all(p.requires_grad for p in tiny_net.parameters())
    assert tiny_net.heads["sharpness"].weight.grad is not None


def test_gradcheck_float64(tiny_net):
    loss_fn = AttiqaLoss({"contrast": 2.0}, {"brightness": 0.3}, checkpoint=tiny_net).double()
    x = (0.25 + 0.5 * torch.rand(1, 3, 32, 32, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(loss_fn, (x,), fast_mode=True)


# --------------------------------------------------------------------------- module semantics


def test_train_is_a_no_op_for_the_loss(loss_fn, image_batch):
    x = image_batch(2)
    before = loss_fn(x)
    running = loss_fn.network.backbone.bn1.running_mean.clone()
    assert loss_fn.train() is loss_fn
    assert not loss_fn.training
    _assert_eval(loss_fn.network)
    after = loss_fn(x)
    torch.testing.assert_close(after, before, rtol=0, atol=0)
    assert torch.equal(loss_fn.network.backbone.bn1.running_mean, running)


@pytest.mark.parametrize("include", [False, True])
def test_parent_train_keeps_the_loss_in_eval(tiny_net, image_batch, include):
    parent = Enhancer(AttiqaLoss(checkpoint=tiny_net, include_in_state_dict=include))
    running = tiny_net.backbone.bn1.running_mean.clone()
    parent.train()
    assert parent.training and parent.conv.training and parent.norm.training
    assert not parent.loss.training
    _assert_eval(parent.loss.network)
    parent.loss(parent(image_batch(2)))
    assert torch.equal(tiny_net.backbone.bn1.running_mean, running), "BatchNorm statistics of the loss moved"
    parent.eval()
    parent.train(True)
    _assert_eval(parent.loss.network)


@pytest.mark.parametrize("include", [False, True])
def test_parent_requires_grad_never_trains_the_loss(tiny_net, image_batch, include):
    parent = Enhancer(AttiqaLoss(checkpoint=tiny_net, include_in_state_dict=include))
    parent.requires_grad_(True)
    parent.loss(parent(image_batch(2))).backward()
    assert parent.conv.weight.grad is not None
    assert not any(p.requires_grad for p in tiny_net.parameters())
    assert all(p.grad is None for p in tiny_net.parameters())


def test_frozen_weights_stay_out_of_the_parent(tiny_net):
    parent = Enhancer(AttiqaLoss(checkpoint=tiny_net))
    keys = set(parent.state_dict())
    assert keys == {k for k in keys if k.startswith(("conv.", "norm."))}
    assert not any(k.startswith("loss.") for k in keys)
    # the optimizer never sees them either
    assert {id(p) for p in parent.parameters()} == {id(p) for p in [*parent.conv.parameters(), *parent.norm.parameters()]}
    # a parent state dict saved without the loss loads strictly into one that has it
    plain = nn.Module()
    plain.conv, plain.norm = nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3)
    parent.load_state_dict(plain.state_dict(), strict=True)


def test_include_in_state_dict_round_trips(tiny_net, image_batch):
    src = Enhancer(AttiqaLoss(checkpoint=tiny_net, include_in_state_dict=True))
    keys = set(src.state_dict())
    assert {"loss.net.heads.sharpness.weight", "loss.net.heads.noisiness.bias"} <= keys
    assert keys >= {f"loss.net.{k}" for k in tiny_net.state_dict()}
    torch.manual_seed(1)
    dst = Enhancer(AttiqaLoss(checkpoint=create_attiqa_net("test_resnet"), include_in_state_dict=True))
    x = image_batch(2)
    assert not torch.equal(dst.loss(x), src.loss(x))
    dst.load_state_dict(src.state_dict(), strict=True)
    torch.testing.assert_close(dst.loss(x), src.loss(x), rtol=0, atol=0)
    _assert_frozen(dst.loss.network)
    _assert_eval(dst.loss.network)
    # and a parent without the loss network refuses that state dict under strict loading
    with pytest.raises(RuntimeError, match="Unexpected key"):
        Enhancer(AttiqaLoss(checkpoint=create_attiqa_net("test_resnet"))).load_state_dict(src.state_dict(), strict=True)


def test_parent_requires_grad_does_not_unfreeze(tiny_net):
    parent = Enhancer(AttiqaLoss(checkpoint=tiny_net))
    parent.requires_grad_(True)
    _assert_frozen(tiny_net)


def test_parent_to_float64_moves_the_hidden_network(tiny_net, image_batch):
    parent = Enhancer(AttiqaLoss(checkpoint=tiny_net))
    parent.to(torch.float64)
    assert all(p.dtype == torch.float64 for p in parent.loss.network.parameters())
    assert parent.loss.weights.dtype == torch.float64
    x = image_batch(2).double().requires_grad_()
    out = parent.loss(x)
    assert out.dtype == torch.float64
    out.backward()
    assert x.grad.dtype == torch.float64


def test_deepcopy_copies_the_hidden_network(loss_fn, image_batch):
    x = image_batch(2)
    clone = copy.deepcopy(loss_fn)
    assert clone.network is not loss_fn.network
    torch.testing.assert_close(clone(x), loss_fn(x), rtol=0, atol=0)
    clone.double()
    assert next(loss_fn.network.parameters()).dtype == torch.float32


def test_autocast_bfloat16(loss_fn, image_batch):
    x = image_batch(2, 48, 40)
    ref = loss_fn(x)
    x = x.requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = loss_fn(x)
    assert out.dtype == torch.float32 and torch.isfinite(out)
    torch.testing.assert_close(out, ref, atol=2e-2, rtol=0)
    out.backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    _assert_frozen(loss_fn.network)


def test_channels_last_matches_contiguous(loss_fn, image_batch):
    x = image_batch(2, 45, 38)
    cl = x.to(memory_format=torch.channels_last).requires_grad_()
    torch.testing.assert_close(loss_fn(cl), loss_fn(x), rtol=1e-5, atol=1e-6)
    loss_fn(cl).backward()
    assert torch.isfinite(cl.grad).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_dtype_and_device(tiny_net, image_batch, device, dtype):
    x = image_batch(2, 40, 36)
    ref = AttiqaLoss(checkpoint=copy.deepcopy(tiny_net), reduction="none")(x)
    loss_fn = AttiqaLoss(checkpoint=tiny_net, reduction="none").to(device=device, dtype=dtype)
    out = loss_fn(x.to(device=device, dtype=dtype).requires_grad_())
    assert out.device.type == device
    assert out.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    tol = 3e-2 if dtype == torch.bfloat16 else 1e-5
    torch.testing.assert_close(out.cpu().float(), ref, atol=tol, rtol=0)


# --------------------------------------------------------------------------- the embedded default model


def test_no_default_model_is_a_clear_error():
    if default_checkpoint_path().is_file():
        pytest.skip("this install embeds a default model (the other branch tests it)")
    with pytest.raises(FileNotFoundError, match=r"no embedded default model .*attiqa_default.safetensors.*checkpoint=PATH"):
        load_attiqa()
    with pytest.raises(FileNotFoundError, match="no embedded default model"):
        AttiqaLoss()


def test_default_model_loads_and_scores(image_batch):
    if not default_checkpoint_path().is_file():
        pytest.skip("no default model embedded yet (the other branch tests the error)")
    loss_fn = AttiqaLoss()
    scores = loss_fn.scores(image_batch(2, 64, 64))
    for name, s in scores.items():
        assert s.shape == (2,) and torch.all((s >= 0) & (s <= 1)), name
    _assert_frozen(loss_fn.network)


@pytest.mark.parametrize("dtype, tol", [(torch.float16, 2e-2), (torch.bfloat16, 5e-2), (torch.float64, 1e-5)])
def test_half_bfloat16_and_double_images_are_scored_in_the_network_dtype(tiny_net, image_batch, dtype, tol):
    """Outside autocast, a float32 network takes images of any floating dtype: they are
    computed in float32, the scores match the float32 ones and the gradient reaches the
    input in its own dtype."""
    loss_fn = AttiqaLoss(checkpoint=tiny_net)
    ref = image_batch(2)
    x = ref.to(dtype).requires_grad_()
    out = loss_fn(x)
    out.backward()
    assert torch.isfinite(out) and x.grad is not None and x.grad.dtype == dtype
    assert torch.isfinite(x.grad.float()).all()
    want = loss_fn.scores(ref.to(dtype).float())["contrast"]
    assert torch.allclose(loss_fn.scores(ref.to(dtype))["contrast"].float(), want, atol=tol)
    assert torch.allclose(tiny_net(ref.to(dtype)).float(), tiny_net(ref.to(dtype).float()), atol=tol)
