"""Bad checkpoints, bad training states, interrupted writes and bad option values give
one-line errors naming the file, key or value (issue 16: checkpoints, durability,
numeric validation). Tiny random models, CPU only, nothing downloaded."""

from __future__ import annotations

import json
import math
import os
import re
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

import attiqa_loss.io as io_module
from attiqa_loss import CheckpointError, create_attiqa_net, load_checkpoint, save_checkpoint
from attiqa_loss import cli as score_cli
from attiqa_loss.io import atomic_path, atomic_write
from attiqa_train.config import ConfigError, load_config
from helpers import rewrite_checkpoint

REPO = Path(__file__).resolve().parents[1]


_rewrite = rewrite_checkpoint


def _with_tensor(key, value):
    return lambda s: {**s, key: value}


def _with_norm(**changes):
    def edit(meta):
        norm = json.loads(meta["normalization"])
        for k, v in changes.items():
            if v is _DROP:
                norm.pop(k)
            else:
                norm[k] = v
        return {**meta, "normalization": json.dumps(norm)}

    return edit


_DROP = object()


# --------------------------------------------------------------------------- checkpoint tensors


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
def test_non_finite_weight_is_a_checkpoint_error_naming_file_and_tensor(tiny_checkpoint, bad):
    weight = load_file(str(tiny_checkpoint))["heads.sharpness.weight"].clone()
    weight[0, 3] = bad
    _rewrite(tiny_checkpoint, tensors=_with_tensor("heads.sharpness.weight", weight))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tiny_checkpoint)
    message = str(info.value)
    assert "\n" not in message
    assert str(tiny_checkpoint) in message and "'heads.sharpness.weight'" in message
    assert f"1 non-finite value(s) of {weight.numel()}" in message and f"first: {bad}" in message


def test_non_finite_half_precision_weight_is_refused(tiny_net, tmp_path):
    path = save_checkpoint(tiny_net, tmp_path / "half.safetensors", dtype=torch.float16)
    bias = load_file(str(path))["heads.contrast.bias"].clone()
    bias[0] = math.nan
    _rewrite(path, tensors=_with_tensor("heads.contrast.bias", bias))
    with pytest.raises(CheckpointError, match=r"tensor 'heads.contrast.bias' holds 1 non-finite"):
        load_checkpoint(path)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool])
def test_integer_weight_is_a_checkpoint_error(tiny_checkpoint, dtype):
    weight = load_file(str(tiny_checkpoint))["heads.noisiness.weight"]
    _rewrite(tiny_checkpoint, tensors=_with_tensor("heads.noisiness.weight", torch.zeros(weight.shape, dtype=dtype)))
    with pytest.raises(
        CheckpointError, match=rf"tensor 'heads.noisiness.weight' has dtype {dtype}; the network expects floating point"
    ) as info:
        load_checkpoint(tiny_checkpoint)
    assert str(tiny_checkpoint) in str(info.value)


def test_integer_buffers_stay_accepted(tiny_checkpoint):
    # BatchNorm's num_batches_tracked is an integer in the network too.
    assert load_file(str(tiny_checkpoint))["backbone.bn1.num_batches_tracked"].dtype == torch.int64
    load_checkpoint(tiny_checkpoint)


def test_score_cli_refuses_a_nan_checkpoint_instead_of_printing_nan(tiny_checkpoint, image_folder, capsys):
    weight = load_file(str(tiny_checkpoint))["heads.brightness.bias"].clone()
    weight[:] = math.nan
    _rewrite(tiny_checkpoint, tensors=_with_tensor("heads.brightness.bias", weight))
    code = score_cli.main([str(image_folder()), "--checkpoint", str(tiny_checkpoint), "--no-progress", "--device", "cpu"])
    out, err = capsys.readouterr()
    assert code == 2 and "nan" not in out.lower()
    assert "heads.brightness.bias" in err and str(tiny_checkpoint) in err


def _negated(key):
    return lambda s: {**s, key: -s[key]}


def test_finite_weights_that_give_non_finite_scores_are_refused(tiny_checkpoint):
    # every tensor finite, yet sqrt(running_var + eps) of a negated variance is NaN: every score NaN
    _rewrite(tiny_checkpoint, tensors=_negated("backbone.bn1.running_var"))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tiny_checkpoint)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{tiny_checkpoint}: the network gives non-finite scores")
    assert "on a 64x64 test gradient (sharpness=nan" in message
    assert "BatchNorm running_var < 0 in ['backbone.bn1.running_var']" in message


def test_score_cli_refuses_a_checkpoint_whose_scores_are_nan(tiny_checkpoint, image_folder, capsys):
    _rewrite(tiny_checkpoint, tensors=_negated("backbone.bn1.running_var"))
    code = score_cli.main([str(image_folder()), "--checkpoint", str(tiny_checkpoint), "--no-progress", "--device", "cpu"])
    out, err = capsys.readouterr()
    assert code == 2 and "nan" not in out.lower()
    assert "non-finite scores" in err and str(tiny_checkpoint) in err


def test_mos_model_whose_network_gives_non_finite_scores_is_refused(tiny_net, tmp_path):
    from pretrain.mos.model import MosModel, load_mos_model, save_mos_model

    path = save_mos_model(MosModel(tiny_net, "probe"), tmp_path / "mos.safetensors")
    _rewrite(path, tensors=_negated("net.backbone.bn1.running_var"))
    with pytest.raises(CheckpointError, match=rf"{path}: its network gives non-finite scores on a 64x64 test gradient"):
        load_mos_model(path)


def test_the_probe_is_one_small_fixed_image_scored_in_eval_mode(tiny_checkpoint_path):
    from attiqa_loss.checkpoint import probe_image

    image = probe_image()
    assert image.shape == (1, 3, 64, 64) and image.min() == 0 and image.max() == 1
    assert torch.equal(image, probe_image())
    net = load_checkpoint(tiny_checkpoint_path)
    assert not net.training and bool(torch.isfinite(net(image)).all())


# --------------------------------------------------------------------------- normalisation


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"std": _DROP}, r"metadata normalization\.std is missing"),
        ({"mean": _DROP}, r"metadata normalization\.mean is missing"),
        ({"std": [0.2, 0.2]}, r"normalization\.std must be a list of 3 finite numbers, got \[0\.2, 0\.2\]"),
        ({"mean": [0.5, 0.5, 0.5, 0.5]}, r"normalization\.mean must be a list of 3 finite numbers, got \[0\.5, 0\.5, 0\.5, 0\.5\]"),
        ({"std": [0.2, "NaN", 0.2]}, r"normalization\.std must be a list of 3 finite numbers, got \[0\.2, 'NaN', 0\.2\]"),
        ({"std": 0.2}, r"normalization\.std must be a list of 3 finite numbers, got 0\.2"),
        ({"std": [0.2, 0.0, 0.2]}, r"normalization\.std must be > 0 in every channel, got \[0\.2, 0\.0, 0\.2\]"),
        ({"std": [0.2, -1.0, 0.2]}, r"normalization\.std must be > 0 in every channel"),
    ],
    ids=["std-missing", "mean-missing", "std-short", "mean-long", "std-string", "std-scalar", "std-zero", "std-negative"],
)
def test_malformed_normalisation_is_a_checkpoint_error(tiny_checkpoint, changes, message):
    _rewrite(tiny_checkpoint, metadata=_with_norm(**changes))
    with pytest.raises(CheckpointError, match=message) as info:
        load_checkpoint(tiny_checkpoint)
    assert str(info.value).startswith(f"{tiny_checkpoint}: metadata ") and "\n" not in str(info.value)


@pytest.mark.parametrize("value", ["NaN", "Infinity"])
def test_non_finite_normalisation_is_a_checkpoint_error(tiny_checkpoint, value):
    # JSON written by Python's json module can hold NaN/Infinity; they must not load.
    def edit(meta):
        return {**meta, "normalization": '{"mean": [0.485, 0.456, 0.406], "std": [0.229, %s, 0.225]}' % value}

    _rewrite(tiny_checkpoint, metadata=edit)
    with pytest.raises(CheckpointError, match=rf"normalization\.std must be a list of 3 finite numbers, got \[0\.229, {'nan' if value == 'NaN' else 'inf'}, 0\.225\]"):
        load_checkpoint(tiny_checkpoint)


def test_normalisation_that_is_not_an_object_is_a_checkpoint_error(tiny_checkpoint):
    _rewrite(tiny_checkpoint, metadata=lambda m: {**m, "normalization": "[1, 2, 3]"})
    with pytest.raises(CheckpointError, match=r"metadata normalization must be a JSON object with mean and std, got \[1, 2, 3\]"):
        load_checkpoint(tiny_checkpoint)


# --------------------------------------------------------------------------- backbone_kwargs


def _with_kwargs(kwargs):
    return lambda m: {**m, "backbone_kwargs": json.dumps(kwargs)}


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"checkpoint_path": "x.pt"}, "checkpoint_path"),
        ({"pretrained_file": "weights.safetensors"}, "pretrained_file"),
        ({"file": "/tmp/w.bin"}, "file"),
        ({"pretrained": True}, "pretrained"),
        ({"pretrained_cfg_overlay": {"file": "x.safetensors"}}, "pretrained_cfg_overlay"),
        ({"cache_dir": "/tmp"}, "cache_dir"),
        ({"num_classes": 10}, "num_classes"),
        ({"no_such_option": 1}, "no_such_option"),
    ],
)
def test_backbone_kwargs_outside_the_whitelist_are_refused(tiny_checkpoint, monkeypatch, kwargs, key):
    import timm

    built = []
    real = timm.create_model
    monkeypatch.setattr(timm, "create_model", lambda *a, **k: built.append(k) or real(*a, **k))
    _rewrite(tiny_checkpoint, metadata=_with_kwargs(kwargs))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tiny_checkpoint)
    message = str(info.value)
    assert "\n" not in message and str(tiny_checkpoint) in message
    assert f"backbone_kwargs holds {key!r}=" in message and "not an allowed architecture option" in message
    assert "allowed: [" in message and "'aa_layer'" in message and "'drop_rate'" in message
    assert built == [], "timm must not be called with options from the file before they are checked"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"drop_rate": "0.1"}, r"backbone_kwargs\.drop_rate must be a number in \[0\.0, 1\.0\), got '0\.1'"),
        ({"drop_rate": 1.5}, r"backbone_kwargs\.drop_rate must be a number in \[0\.0, 1\.0\), got 1\.5"),
        ({"aa_layer": "../weights.pt"}, r"backbone_kwargs\.aa_layer must be null or a layer name"),
        ({"act_layer": {"file": "x"}}, r"backbone_kwargs\.act_layer must be null or a layer name"),
        ({"output_stride": 7}, r"backbone_kwargs\.output_stride must be 8, 16 or 32, got 7"),
    ],
)
def test_backbone_kwargs_values_are_checked(tiny_checkpoint, kwargs, message):
    _rewrite(tiny_checkpoint, metadata=_with_kwargs(kwargs))
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(tiny_checkpoint)


def test_backbone_kwargs_must_be_an_object(tiny_checkpoint):
    _rewrite(tiny_checkpoint, metadata=lambda m: {**m, "backbone_kwargs": '["checkpoint_path"]'})
    with pytest.raises(CheckpointError, match=r"backbone_kwargs must be a JSON object"):
        load_checkpoint(tiny_checkpoint)


def test_allowed_option_the_backbone_cannot_take_is_a_checkpoint_error(tiny_checkpoint):
    _rewrite(tiny_checkpoint, metadata=_with_kwargs({"aa_layer": "nosuchlayer"}))
    with pytest.raises(CheckpointError, match=r"backbone 'test_resnet' cannot be built with backbone_kwargs=\{'aa_layer': 'nosuchlayer'\}"):
        load_checkpoint(tiny_checkpoint)


@pytest.mark.parametrize("kwargs", [{"drop_rate": 0.1}, {"aa_layer": "avg"}, {"aa_layer": "blur"}, {"drop_path_rate": 0.05}])
def test_options_the_project_writes_round_trip(tmp_path, kwargs):
    # pretrain writes {"aa_layer": "avg"/"blur"} (model.aa_layer); users write drop rates.
    net = create_attiqa_net("test_resnet", backbone_kwargs=kwargs).eval()
    loaded = load_checkpoint(save_checkpoint(net, tmp_path / "m.safetensors"))
    assert loaded.backbone_kwargs == kwargs


def test_saving_a_network_with_an_unloadable_option_is_refused(tmp_path):
    net = create_attiqa_net("test_resnet", backbone_kwargs={"in_chans": 3})
    with pytest.raises(CheckpointError, match=r"the network's backbone_kwargs holds 'in_chans'=3"):
        save_checkpoint(net, tmp_path / "m.safetensors")
    assert not (tmp_path / "m.safetensors").exists()


# --------------------------------------------------------------------------- backbone name


@pytest.fixture
def timm_calls(monkeypatch):
    """Every call of ``timm.create_model`` (still made), to show none happens before a refusal."""
    import timm

    calls = []
    real = timm.create_model
    monkeypatch.setattr(timm, "create_model", lambda *a, **k: calls.append(a[:1]) or real(*a, **k))
    return calls


_BAD_BACKBONES = ["local-dir:/some/dir", "hf-hub:org/repo", "timm/resnet50", "../resnet50", "C:\\w\\resnet50",
                  "resnet50.a1_in1k", "no_such_backbone", ""]


@pytest.mark.parametrize("backbone", _BAD_BACKBONES)
def test_backbone_name_timm_does_not_list_is_refused_before_timm_is_called(tiny_checkpoint, timm_calls, backbone):
    _rewrite(tiny_checkpoint, metadata=lambda m: {**m, "backbone": backbone})
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tiny_checkpoint)
    message = str(info.value)
    assert "\n" not in message and str(tiny_checkpoint) in message
    assert f"backbone={backbone!r}" in message or f"backbone must be a timm architecture name, got {backbone!r}" in message
    assert timm_calls == [], "timm must not see a backbone name from the file before it is checked"


def test_mos_model_backbone_name_is_checked(tiny_net, tmp_path, timm_calls):
    from pretrain.mos.model import MosModel, load_mos_model, save_mos_model

    path = save_mos_model(MosModel(tiny_net, "probe"), tmp_path / "mos.safetensors")
    with safe_open(str(path), framework="pt") as f:
        net = json.loads(f.metadata()["net"])
    _rewrite(path, metadata=lambda m: {**m, "net": json.dumps({**net, "backbone": "local-dir:/some/dir"})})
    timm_calls.clear()
    with pytest.raises(CheckpointError, match=r"metadata net\.backbone='local-dir:/some/dir' is not a timm architecture name"):
        load_mos_model(path)
    assert timm_calls == []


@pytest.mark.parametrize("backbone", ["resnet10t", "test_resnet", "resnet50"])
def test_timm_architecture_names_are_accepted(backbone):
    from attiqa_loss.checkpoint import check_backbone_name

    assert check_backbone_name(backbone) == backbone


def test_resnet10t_checkpoint_round_trips(tmp_path):
    torch.manual_seed(0)
    net = create_attiqa_net("resnet10t").eval()
    loaded = load_checkpoint(save_checkpoint(net, tmp_path / "m.safetensors"))
    assert loaded.backbone_name == "resnet10t"


def test_saving_or_configuring_a_backbone_the_loader_refuses_is_an_error(tiny_net, tmp_path):
    from pretrain.training.config import PretrainConfig

    tiny_net.backbone_name = "hf-hub:org/repo"  # as if built from a hub name
    with pytest.raises(CheckpointError, match=r"the network's backbone='hf-hub:org/repo' is not a timm architecture name"):
        save_checkpoint(tiny_net, tmp_path / "m.safetensors")
    assert not (tmp_path / "m.safetensors").exists()
    with pytest.raises(ConfigError, match=r"model\.backbone='local-dir:/w' is not a timm architecture name") as info:
        load_config(PretrainConfig, None, ["model.backbone=local-dir:/w"])
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------- MOS models and enhancers


@pytest.fixture
def mos_file(tiny_net, tmp_path):
    from pretrain.mos.model import MosModel, save_mos_model

    return save_mos_model(MosModel(tiny_net, "probe", mos_mean=50.0, mos_std=10.0), tmp_path / "mos.safetensors")


def test_mos_model_with_nan_head_is_refused(mos_file):
    from pretrain.mos.model import load_mos_model

    load_mos_model(mos_file)
    _rewrite(mos_file, tensors=_with_tensor("head.bias", torch.tensor([math.nan])))
    with pytest.raises(CheckpointError, match=rf"{mos_file}: tensor 'head.bias' holds 1 non-finite value"):
        load_mos_model(mos_file)


def test_mos_model_backbone_kwargs_and_normalisation_are_checked(mos_file, tmp_path):
    from pretrain.mos.model import load_mos_model

    with safe_open(str(mos_file), framework="pt") as f:
        net = json.loads(f.metadata()["net"])
    _rewrite(mos_file, metadata=lambda m: {**m, "net": json.dumps({**net, "backbone_kwargs": {"checkpoint_path": "x.pt"}})})
    with pytest.raises(CheckpointError, match=r"net\.backbone_kwargs holds 'checkpoint_path'='x\.pt'"):
        load_mos_model(mos_file)
    _rewrite(mos_file, metadata=lambda m: {**m, "net": json.dumps({k: v for k, v in net.items() if k != "std"})})
    with pytest.raises(CheckpointError, match=r"metadata net\.std is missing"):
        load_mos_model(mos_file)


def test_enhancer_with_nan_weights_is_refused(tmp_path):
    from enhancement.unet import create_unet
    from enhancement.weights import load_enhancer, save_enhancer

    torch.manual_seed(0)
    path = save_enhancer(create_unet(width=4, depth=1, blocks=1), tmp_path / "enhancer.safetensors")
    state = load_file(str(path))
    key = sorted(k for k in state if k.endswith("weight"))[0]
    bad = state[key].clone()
    bad.view(-1)[0] = math.inf
    _rewrite(path, tensors=_with_tensor(key, bad))
    with pytest.raises(ValueError, match=rf"tensor '{key}' holds 1 non-finite value"):
        load_enhancer(path)


@pytest.fixture
def tiny_enhancer(tmp_path):
    from enhancement.unet import create_unet
    from enhancement.weights import save_enhancer

    torch.manual_seed(0)
    return save_enhancer(create_unet(width=4, depth=1, blocks=1), tmp_path / "enhancer.safetensors")


@pytest.fixture
def unets_built(monkeypatch):
    """Every U-Net built off the meta device; one wider than any shipped config (a file
    describing gigabytes) stops the test before it allocates anything."""
    from enhancement.unet import UNet

    built = []
    real = UNet.__init__

    def init(self, *args, **kwargs):
        if torch.empty(()).device.type != "meta":
            built.append(kwargs)
            if kwargs.get("width", 32) > 32 or kwargs.get("max_width", 256) > 256:
                raise AssertionError(f"a U-Net was built from unchecked metadata {kwargs}")
        real(self, *args, **kwargs)

    monkeypatch.setattr(UNet, "__init__", init)
    return built


def _with_unet(**changes):
    return lambda m: {**m, "unet": json.dumps({**json.loads(m["unet"]), **changes})}


_BAD_UNETS = [
    ({"width": 4096, "max_width": 4096}, r"metadata unet\.width must be an integer in \[1, 1024\], got 4096"),
    ({"max_width": 10**6}, r"metadata unet\.max_width must be an integer in \[1, 4096\], got 1000000"),
    ({"depth": 40}, r"metadata unet\.depth must be an integer in \[1, 8\], got 40"),
    ({"blocks": 0}, r"metadata unet\.blocks must be an integer in \[1, 8\], got 0"),
    ({"width": "4"}, r"metadata unet\.width must be an integer in \[1, 1024\], got '4'"),
    ({"width": True}, r"metadata unet\.width must be an integer in \[1, 1024\], got True"),
    ({"curve_iterations": 10**6}, r"metadata unet\.curve_iterations must be an integer in \[1, 64\]"),
    ({"gain_scale": 10**9}, r"metadata unet\.gain_scale must be an integer in \[1, 256\]"),
    ({"gain_max": math.inf}, r"metadata unet\.gain_max must be a number in \(1, 1024\], got inf"),
    ({"gain_residual_highpass": 6}, r"metadata unet\.gain_residual_highpass must be 0 \(a free residual\) or an odd"),
    ({"global_context": "yes"}, r"metadata unet\.global_context must be true or false, got 'yes'"),
    ({"output": "other"}, r"metadata unet\.output must be one of \['residual', 'curves', 'gain', 'gain_denoise'\]"),
    ({"init_file": "/w.pt"}, r"metadata unet holds 'init_file'='/w\.pt', which is not a U-Net argument"),
]


@pytest.mark.parametrize("changes, message", _BAD_UNETS, ids=["_".join(changes) for changes, _ in _BAD_UNETS])
def test_enhancer_metadata_outside_the_limits_is_refused_before_a_unet_is_built(tiny_enhancer, unets_built,
                                                                                 changes, message):
    from enhancement.weights import load_enhancer

    _rewrite(tiny_enhancer, metadata=_with_unet(**changes))
    with pytest.raises(CheckpointError, match=message) as info:
        load_enhancer(tiny_enhancer)
    assert "\n" not in str(info.value) and str(tiny_enhancer) in str(info.value)
    assert unets_built == []


def test_enhancer_metadata_within_limits_but_not_the_files_shapes_is_refused_before_a_unet_is_built(
        tiny_enhancer, unets_built):
    from enhancement.weights import load_enhancer

    # 1024 channels over 3 levels of up to 4096: gigabytes of weights, described by a file of a few kB
    _rewrite(tiny_enhancer, metadata=_with_unet(width=1024, depth=3, max_width=4096))
    with pytest.raises(CheckpointError) as info:
        load_enhancer(tiny_enhancer)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{tiny_enhancer} does not match its U-Net config")
    assert "stem.0.weight: checkpoint (4, 3, 3, 3) vs network (1024, 3, 3, 3)" in message
    assert unets_built == []


def test_enhancer_config_outside_the_limits_is_refused_when_read():
    from enhancement.config import EnhanceConfig

    with pytest.raises(ConfigError, match=r"model\.width must be an integer in \[1, 1024\], got 4096") as info:
        load_config(EnhanceConfig, None, ["model.width=4096"])
    assert "\n" not in str(info.value)


def test_enhancers_within_the_limits_still_load(tiny_enhancer, unets_built):
    from enhancement.weights import load_enhancer

    model = load_enhancer(tiny_enhancer)
    assert model.width == 4 and len(unets_built) == 1
    assert load_enhancer().config()["width"] == 16  # the shipped enhancer


# --------------------------------------------------------------------------- training states


def _truncated_state(path: Path) -> Path:
    from attiqa_train.state import save_state

    model = torch.nn.Linear(3, 2)
    save_state(path, step=5, model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_unreadable_state_is_a_one_line_state_error(tmp_path, damage):
    from attiqa_train.state import StateError, load_state

    path = tmp_path / "state.pt"
    if damage == "truncated":
        _truncated_state(path)
    else:
        path.write_bytes(b"" if damage == "empty" else b"not a state file at all\n" * 10)
    with pytest.raises(StateError) as info:
        load_state(path, model=torch.nn.Linear(3, 2))
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert message.startswith(f"{path} is not a readable training state") and "\n" not in message


def test_state_of_another_model_is_a_state_error(tmp_path):
    from attiqa_train.state import StateError, load_state, save_state

    path = tmp_path / "state.pt"
    save_state(path, step=3, model=torch.nn.Linear(3, 2))
    with pytest.raises(StateError, match=rf"{path}: the saved 'model' state does not fit this run: RuntimeError"):
        load_state(path, model=torch.nn.Linear(4, 2))
    with pytest.raises(StateError, match=r"holds no state for 'ema'"):
        load_state(path, model=torch.nn.Linear(3, 2), ema=torch.nn.Linear(3, 2))


def test_pretrain_resume_from_a_truncated_state_names_the_file(photo_dir, tmp_path):
    from pretrain.cli import main

    out = tmp_path / "run"
    out.mkdir()
    state = _truncated_state(out / "state.pt")
    args = ["train", "--out", str(out), "--images", str(photo_dir), "--resume", "--no-progress",
            "--set", "model.backbone=test_resnet", "--set", "synthetic.crop=32", "--set", "train.steps=2",
            "--set", "train.batch_size=4", "--set", "train.device=cpu", "--set", "synthetic.holdout_every=0"]
    with pytest.raises(SystemExit) as info:
        main(args)
    message = str(info.value)
    assert message.startswith("attiqa-pretrain train: ") and "\n" not in message
    assert f"{state} is not a readable training state" in message


def test_enhance_resume_from_a_truncated_state_names_the_file(tmp_path, monkeypatch, capsys):
    import enhancement.train as enhance_train
    from enhancement import cli

    out = tmp_path / "run"
    out.mkdir()
    state = _truncated_state(out / "state.pt")

    class _Stub:  # the real trainer builds models and data; only its state matters here
        def __init__(self, cfg, out_dir, info, init_weights=True):
            self.model = torch.nn.Linear(3, 2)

        def state_objects(self):
            return {"model": self.model}

    monkeypatch.setattr(enhance_train, "_Trainer", _Stub)
    code = cli.main(["train", "--out", str(out), "--resume", "--set", "train.device=cpu"])
    err = capsys.readouterr().err
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and f"{state} is not a readable training state" in lines[0]


# --------------------------------------------------------------------------- durable atomic writes


def _record_syncs(monkeypatch):
    """Record fsync (of a file or a folder) and replace calls, in order."""
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append("fsync-dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync-file")
        return real_fsync(fd)

    def replace(src, dst):
        events.append("replace")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return events


@pytest.mark.skipif(os.name != "posix", reason="folders can be synced on POSIX only")
@pytest.mark.parametrize("writer", ["atomic_write", "atomic_path", "save_checkpoint", "save_state", "save_enhancer"])
def test_every_atomic_write_syncs_the_file_then_the_folder(tmp_path, monkeypatch, tiny_net, writer):
    target = tmp_path / "out.bin"
    events = _record_syncs(monkeypatch)
    if writer == "atomic_write":
        with atomic_write(target) as f:
            f.write(b"data")
    elif writer == "atomic_path":
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"data")
    elif writer == "save_checkpoint":
        save_checkpoint(tiny_net, target)
    elif writer == "save_state":
        from attiqa_train.state import save_state

        save_state(target, step=1, model=torch.nn.Linear(2, 2))
    else:
        from enhancement.unet import create_unet
        from enhancement.weights import save_enhancer

        save_enhancer(create_unet(width=4, depth=1, blocks=1), target)
    assert events == ["fsync-file", "replace", "fsync-dir"]
    assert target.is_file()


def test_a_folder_that_cannot_be_opened_does_not_fail_the_write(tmp_path, monkeypatch):
    real_open = os.open

    def no_folders(path, flags, *args, **kwargs):
        if os.path.isdir(path):
            raise PermissionError(13, "Permission denied", str(path))  # what Windows says
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", no_folders)
    with atomic_path(tmp_path / "a.bin") as tmp:
        tmp.write_bytes(b"x")
    with atomic_write(tmp_path / "b.bin") as f:
        f.write(b"y")
    assert (tmp_path / "a.bin").read_bytes() == b"x" and (tmp_path / "b.bin").read_bytes() == b"y"


_CRASH = textwrap.dedent(
    """
    import os, sys
    from attiqa_loss.io import atomic_write, atomic_path
    target = sys.argv[1]
    if sys.argv[2] == "write":
        with atomic_write(target) as f:
            f.write(b"half of it")
            f.flush()
            os._exit(9)  # killed mid-write: no cleanup runs
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"half of it")
        os._exit(9)
    """
)


def _crash_writing(target: Path, how: str = "write") -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    code = subprocess.run([sys.executable, "-c", _CRASH, str(target), how], env=env, timeout=120).returncode
    assert code == 9


def test_orphans_of_a_crashed_writer_are_removed_on_the_next_write(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    _crash_writing(folder / "state.pt", "write")
    (first,) = folder.iterdir()
    assert first.name.startswith(".state.pt.") and first.name.endswith(".tmp")
    # The next writer (another process) removes it when it starts, then crashes too.
    _crash_writing(folder / "checkpoint.safetensors", "path")
    (second,) = folder.iterdir()
    assert second.name.startswith(".checkpoint.safetensors.") and second.name.endswith(".tmp")
    assert io_module.orphan_temp_files(folder) == [second]
    # Files that are not ours, or only look similar, are never touched.
    others = ["notes.tmp", ".state.pt.abcdefgh.tmp", ".x.tmp", "data.json", ".hidden"]
    for name in others:
        (folder / name).write_text("keep me")
    with atomic_write(folder / "config.yaml", "w") as f:
        f.write("a: 1\n")
    assert sorted(p.name for p in folder.iterdir()) == sorted(others + ["config.yaml"])


def test_temp_files_of_running_writers_are_kept(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    _crash_writing(folder / "state.pt")
    (orphan,) = list(folder.iterdir())
    pid = re.search(r"-([0-9]+)\.[a-z0-9_]+\.tmp$", orphan.name).group(1)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        # Names of the same pattern, of a process that still runs and of this one.
        live = folder / orphan.name.replace(f"-{pid}.", f"-{sleeper.pid}.")
        own = folder / orphan.name.replace(f"-{pid}.", f"-{os.getpid()}.")
        live.write_bytes(b"in flight")
        own.write_bytes(b"this process, in flight")
        assert io_module.orphan_temp_files(folder) == [orphan]
        with atomic_write(folder / "other.bin") as f:
            f.write(b"x")
        assert sorted(p.name for p in folder.iterdir()) == sorted([live.name, own.name, "other.bin"])
    finally:
        sleeper.kill()
        sleeper.wait()


def test_temp_files_are_named_after_the_target_host_and_process(tmp_path, monkeypatch):
    seen = []
    real = io_module.tempfile.mkstemp
    monkeypatch.setattr(io_module.tempfile, "mkstemp", lambda **kw: seen.append(kw) or real(**kw))
    with atomic_write(tmp_path / "m.bin") as f:
        f.write(b"x")
    (kw,) = seen
    assert kw["prefix"].startswith(".m.bin.") and kw["prefix"].endswith(f"-{os.getpid()}.") and kw["suffix"] == ".tmp"


# --------------------------------------------------------------------------- option values


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.steps=0", "train.steps must be >= 1, got 0"),
        ("train.steps=-5", "train.steps must be >= 1, got -5"),
        ("train.state_every=0", "train.state_every must be >= 1, got 0"),
        ("train.log_every=0", "train.log_every must be >= 1, got 0"),
        ("train.val_every=0", "train.val_every must be >= 1, got 0"),
        ("train.warmup_steps=-1", "train.warmup_steps must be >= 0, got -1"),
        ("train.batch_size=2", "train.batch_size must be >= 4, got 2"),
        ("synthetic.crop=8", "synthetic.crop must be >= 32, got 8"),
        ("clip.crop=31", "clip.crop must be >= 32, got 31"),
        ("synthetic.max_side=0", "synthetic.max_side must be >= 1, got 0"),
        ("val.max_side=16", "val.max_side must be >= 32, got 16"),
    ],
)
def test_pretrain_config_values_are_checked_when_read(override, message):
    from pretrain.training.config import PretrainConfig

    with pytest.raises(ConfigError, match=message) as info:
        load_config(PretrainConfig, None, [override])
    assert "\n" not in str(info.value)


def test_pretrain_cli_reports_a_bad_value_in_one_line(tmp_path):
    from pretrain.cli import main

    with pytest.raises(SystemExit) as info:
        main(["train", "--out", str(tmp_path / "run"), "--set", "train.steps=0"])
    assert str(info.value) == "error: invalid config section 'train': train.steps must be >= 1, got 0"
    assert not (tmp_path / "run").exists()


def test_shipped_pretrain_configs_pass_the_checks():
    from pretrain.training.config import PretrainConfig

    for name in ("pretrain_synthetic.yaml", "pretrain_attiqa_r50.yaml"):
        load_config(PretrainConfig, REPO / "configs" / name)


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_without_cuda_is_a_clear_error(no_cuda, name):
    from attiqa_train.distributed import resolve_device

    with pytest.raises(ValueError, match=rf"device '{name}' asks for CUDA, but CUDA is not available here"):
        resolve_device(name)
    assert resolve_device("auto") == torch.device("cpu")


def test_unknown_device_name_is_a_clear_error():
    from attiqa_train.distributed import resolve_device

    with pytest.raises(ValueError, match=r"device 'gpu' is not a torch device name"):
        resolve_device("gpu")


def test_pretrain_train_on_cuda_without_cuda_exits_with_one_line(no_cuda, photo_dir, tmp_path):
    from pretrain.cli import main

    args = ["train", "--out", str(tmp_path / "run"), "--images", str(photo_dir), "--no-progress",
            "--set", "model.backbone=test_resnet", "--set", "synthetic.crop=32", "--set", "train.device=cuda"]
    with pytest.raises(SystemExit) as info:
        main(args)
    assert str(info.value).startswith("attiqa-pretrain train: device 'cuda' asks for CUDA")


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--max-side", "0"], "attiqa-score: --max-side must be >= 32 (the network's smallest input), got 0"),
        (["--max-side", "-3"], "attiqa-score: --max-side must be >= 32 (the network's smallest input), got -3"),
        (["--workers", "-1"], "attiqa-score: --workers must be >= 0, got -1"),
        (["--device", "gpu"], "attiqa-score: --device: device 'gpu' is not a torch device name"),
    ],
)
def test_score_cli_option_values(image_folder, tiny_checkpoint_path, extra, message):
    with pytest.raises(SystemExit) as info:
        score_cli.main([str(image_folder()), "--checkpoint", str(tiny_checkpoint_path), "--no-progress", *extra])
    assert str(info.value).startswith(message)


def test_score_cli_cuda_without_cuda(no_cuda, image_folder, tiny_checkpoint_path):
    with pytest.raises(SystemExit) as info:
        score_cli.main([str(image_folder()), "--checkpoint", str(tiny_checkpoint_path), "--device", "cuda"])
    assert str(info.value).startswith("attiqa-score: --device: device 'cuda' asks for CUDA, but CUDA is not available")


def test_enhance_infer_cuda_without_cuda(no_cuda, tmp_path, capsys):
    from enhancement import cli

    code = cli.main(["infer", "--checkpoint", str(tmp_path), "--data", str(tmp_path), "--out", str(tmp_path / "o"),
                     "--device", "cuda"])
    assert code == 2
    assert "attiqa-enhance infer: error: --device: device 'cuda' asks for CUDA" in capsys.readouterr().err


def test_enhance_train_cuda_without_cuda(no_cuda, tmp_path, capsys):
    from enhancement import cli

    code = cli.main(["train", "--out", str(tmp_path / "run"), "--set", "train.device=cuda"])
    assert code == 2
    assert "attiqa-enhance train: error: device 'cuda' asks for CUDA" in capsys.readouterr().err


def test_enhance_train_device_name_is_checked_when_read(tmp_path):
    from enhancement import cli

    with pytest.raises(SystemExit, match=r"train\.device must be 'auto' or a torch device name .*, got 'gpu'"):
        cli.main(["train", "--out", str(tmp_path / "run"), "--set", "train.device=gpu"])


def test_label_workers_below_zero_is_a_one_line_error(tmp_path):
    from pretrain.cli import main

    with pytest.raises(SystemExit) as info:
        main(["label", "--out", str(tmp_path / "labels"), "--images", str(tmp_path), "--workers", "-1"])
    assert str(info.value) == "error: --workers: workers must be >= 0, got -1"
