"""The enhancement U-Net: any size in, same size out, output bounded to [0, 1]; exported weights."""

import json

import pytest
import torch
from safetensors import safe_open

from enhancement.unet import UNet, bounded_residual, create_unet
from enhancement.weights import ENHANCER_FILENAME, load_enhancer, save_enhancer


@pytest.mark.parametrize("size", [(1, 1), (7, 5), (37, 50), (64, 64), (33, 129)])
def test_any_size_in_same_size_out(size):
    net = create_unet(width=4, depth=3, blocks=1)
    x = torch.rand(2, 3, *size)
    assert net(x).shape == x.shape


def test_output_stays_in_unit_range_even_with_large_weights():
    torch.manual_seed(0)
    net = create_unet(width=4, depth=2, blocks=1)
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(50)
    x = torch.cat([torch.zeros(1, 3, 24, 24), torch.ones(1, 3, 24, 24), torch.rand(2, 3, 24, 24)])
    out = net(x)
    assert out.min() >= 0 and out.max() <= 1
    assert (out - x).abs().max() > 0.1  # the weights did push the residual hard


def test_starts_close_to_identity():
    net = create_unet(width=8, depth=2)
    x = torch.rand(1, 3, 40, 40)
    assert (net(x) - x).abs().max() < 0.01


def test_bounded_residual_known_values_and_gradient():
    x = torch.tensor([0.2, 0.2, 0.0, 1.0], dtype=torch.float64, requires_grad=True)
    r = torch.tensor([0.5, -0.5, 0.9, -0.9], dtype=torch.float64, requires_grad=True)
    out = bounded_residual(x, r)
    assert torch.allclose(out, torch.tensor([0.6, 0.1, 0.9, 0.1], dtype=torch.float64))
    assert torch.autograd.gradcheck(bounded_residual, (x, r))


def test_width_and_depth_set_the_architecture():
    small, wide, deep = create_unet(4, 2), create_unet(8, 2), create_unet(4, 3)
    assert len(small.down) == 2 and len(deep.down) == 3
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(wide) > count(small) and count(deep) > count(small)
    assert small.stem[0].out_channels == 4 and wide.stem[0].out_channels == 8


def test_max_width_caps_channels():
    net = create_unet(width=16, depth=3, max_width=32)
    assert max(m.out_channels for m in net.modules() if isinstance(m, torch.nn.Conv2d)) == 32


def test_rejects_bad_inputs_with_named_rule():
    net = create_unet(4, 1)
    with pytest.raises(TypeError, match="floating-point"):
        net(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="3 \\(RGB\\) channels"):
        net(torch.rand(1, 1, 8, 8))
    with pytest.raises(ValueError, match=r"must be >= 1"):
        UNet(width=0)


def test_enhancer_round_trip_without_pickle(tmp_path):
    torch.manual_seed(0)
    net = create_unet(width=4, depth=2, blocks=1)
    with torch.no_grad():
        net.head.weight.normal_()  # make the output differ from the input
    path = save_enhancer(net, tmp_path / ENHANCER_FILENAME, training={"steps": 3})
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    assert json.loads(meta["unet"]) == {"width": 4, "depth": 2, "blocks": 1, "max_width": 256, "output": "residual",
                                        "curve_iterations": 8, "gain_scale": 8, "gain_max": 16.0, "gain_residual": 0.0,
                                        "gain_param": "log", "global_context": False, "gain_residual_highpass": 0,
                                        "denoise_strength": 1.0, "denoise_radius": 2}
    loaded = load_enhancer(tmp_path)  # a run folder works as well as the file
    training = loaded.training_info
    assert training == {"steps": 3}
    x = torch.rand(1, 3, 30, 41)
    assert torch.equal(net.eval()(x), loaded(x))


def test_load_enhancer_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no enhancer weights"):
        load_enhancer(tmp_path)
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(1)}, str(tmp_path / "other.safetensors"), metadata={"format": "something"})
    with pytest.raises(ValueError, match="not an attiqa enhancer"):
        load_enhancer(tmp_path / "other.safetensors")
    net = create_unet(4, 1)
    state = {k: v for k, v in net.state_dict().items() if not k.startswith("head")}
    meta = {"format": "attiqa-enhancer", "format_version": "1", "unet": json.dumps(net.config()), "training": "{}"}
    save_file(state, str(tmp_path / "partial.safetensors"), metadata=meta)
    with pytest.raises(ValueError, match="missing keys \\['head.bias', 'head.weight'\\]"):
        load_enhancer(tmp_path / "partial.safetensors")


def test_global_context_starts_as_the_plain_network():
    torch.manual_seed(0)
    net = create_unet(width=4, depth=2, blocks=1, output="gain", global_context=True)
    with torch.no_grad():
        net.head.weight.normal_(std=0.5)
    x = torch.rand(2, 3, 40, 56)
    with_context = net(x)
    net.context = None  # the same weights without the image-level branch
    assert torch.equal(with_context, net(x))


@pytest.mark.parametrize("global_context", [False, True])
def test_only_the_global_context_lets_a_far_corner_change_a_pixel(global_context):
    """A depth-2 U-Net sees a few dozen pixels around each pixel; with the global context a
    change at the far corner of a 128 px image reaches the opposite corner (every pixel
    knows what the whole image looks like)."""
    torch.manual_seed(0)
    net = create_unet(width=4, depth=2, blocks=1, output="gain", gain_scale=1, global_context=global_context)
    with torch.no_grad():
        net.head.weight.normal_(std=0.05)  # inside the gain cap: a capped gain would hide the change
        if global_context:
            net.context[-1].weight.normal_(std=0.5)
    x = torch.full((1, 3, 128, 128), 0.1)
    y = x.clone()
    y[..., 96:, 96:] = 0.9  # a bright patch in the bottom-right corner
    change = (net(y) - net(x))[..., :16, :16].abs().max()  # top-left corner
    # exactly zero without the branch (nothing else reaches that far); with it, small at
    # random initialisation (the features barely respond yet) but not zero
    assert (change > 0) if global_context else (change == 0)


def test_global_context_round_trips_and_old_files_load_without_it(tmp_path):
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    torch.manual_seed(3)
    net = UNet(width=4, depth=2, blocks=1, output="gain", gain_scale=2, global_context=True)
    with torch.no_grad():
        net.head.weight.normal_(std=0.5)
        net.context[-1].weight.normal_(std=0.5)
    loaded = load_enhancer(save_enhancer(net, tmp_path / "gc.safetensors"))
    assert loaded.global_context and loaded.config() == net.config()
    x = torch.rand(1, 3, 33, 47)
    assert torch.equal(loaded(x), net.eval()(x))
    plain = UNet(width=4, depth=2, blocks=1, output="gain", gain_scale=2)
    path = save_enhancer(plain, tmp_path / "plain.safetensors")
    with safe_open(str(path), "pt") as f:
        meta = dict(f.metadata())
    unet = json.loads(meta["unet"])
    del unet["global_context"]  # a file written before the key existed
    meta["unet"] = json.dumps(unet)
    save_file(load_file(str(path)), str(tmp_path / "old.safetensors"), metadata=meta)
    assert load_enhancer(tmp_path / "old.safetensors").global_context is False
    # the branch's weights in a file whose config says it has none are named, not ignored
    save_file(load_file(str(tmp_path / "gc.safetensors")), str(tmp_path / "bad.safetensors"),
              metadata={**meta, "unet": json.dumps({**net.config(), "global_context": False})})
    with pytest.raises(ValueError, match="unexpected keys \\['context"):
        load_enhancer(tmp_path / "bad.safetensors")
