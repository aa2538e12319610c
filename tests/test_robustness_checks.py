"""Values and files checked when they are given, in one line naming the option, key or
file (issue 38): ``attiqa-pretrain validity`` options and ``--checkpoint``; a CLIP weight
file named ``.safetensors`` that is not one.

Tiny random models, CPU only, nothing downloaded.
"""

from __future__ import annotations

import pytest
import torch

from enhancement_helpers import REPO

TINY_CLIP = str(REPO / "configs" / "open_clip_tiny.json")


def _one_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# --------------------------------------------------------------------------- attiqa-pretrain validity


@pytest.mark.parametrize("extra, message", [
    (["--levels", "0"], "--levels must be >= 2 (a rank correlation needs two levels), got 0"),
    (["--levels", "1"], "--levels must be >= 2 (a rank correlation needs two levels), got 1"),
    (["--max-side", "0"], "--max-side must be >= 32 (the network's smallest input), got 0"),
    (["--max-images", "-3"], "--max-images must be >= 1, got -3"),
    (["--holdout-every", "0"], "--holdout-every must be >= 1, got 0"),
])
def test_validity_option_values_are_one_line_and_exit_status_2(extra, message, photo_dir, tiny_checkpoint_path,
                                                               tmp_path, capsys):
    from pretrain.cli import main

    code = main(["validity", "--images", str(photo_dir), "--all-images", "--checkpoint", str(tiny_checkpoint_path),
                 "--out", str(tmp_path / "out"), *extra])
    assert code == 2
    assert _one_line(capsys.readouterr().err) == f"attiqa-pretrain validity: {message}"
    assert not (tmp_path / "out" / "validity.csv").exists()


@pytest.mark.parametrize("kind", ["missing", "folder", "not safetensors"])
def test_validity_unreadable_checkpoint_is_one_line_naming_it(kind, photo_dir, tmp_path, capsys):
    from pretrain.cli import main

    path = tmp_path / "model.safetensors"
    if kind == "folder":
        path.mkdir()
    elif kind == "not safetensors":
        path.write_bytes(b"this is not a weight file")
    code = main(["validity", "--images", str(photo_dir), "--all-images", "--checkpoint", str(path),
                 "--out", str(tmp_path / "out")])
    assert code == 2
    line = _one_line(capsys.readouterr().err)
    if kind == "folder":  # issue 38, second audit: said "checkpoint not found"
        assert line == f"attiqa-pretrain validity: --checkpoint {path} is a folder, expected a .safetensors file"
    else:
        assert line.startswith(f"attiqa-pretrain validity: --checkpoint {path}: ")


def test_pretrain_val_levels_below_2_is_refused_when_the_config_is_read():
    from attiqa_train.config import ConfigError, load_config
    from pretrain.training.config import PretrainConfig

    with pytest.raises(ConfigError, match=r"val\.levels must be >= 2, got 1"):
        load_config(PretrainConfig, overrides=["val.levels=1"])


# --------------------------------------------------------------------------- CLIP weight files


def test_label_clip_pretrained_pickle_named_safetensors_is_one_line_naming_it(photo_dir, tmp_path):
    from pretrain.cli import main

    fake = tmp_path / "clip.safetensors"
    torch.save({"logit_scale": torch.zeros(())}, fake)  # a pickle archive under a safetensors name
    with pytest.raises(SystemExit) as info:
        main(["label", "--images", str(photo_dir), "--out", str(tmp_path / "labels"), "--clip-model", TINY_CLIP,
              "--clip-pretrained", str(fake), "--set", "label.device=cpu", "--workers", "0"])
    message = str(info.value)
    assert message.startswith(f"error: --clip-pretrained (clip.pretrained) {fake} is named .safetensors but is not "
                              "a readable safetensors file (") and "\n" not in message


def test_select_prompts_unusable_clip_pretrained_is_one_line(photo_dir, tmp_path):
    from pretrain.cli import main

    fake = tmp_path / "clip.safetensors"
    fake.write_bytes(b"\x80\x04garbage")
    with pytest.raises(SystemExit) as info:
        main(["select-prompts", "--images", str(photo_dir), "--out", str(tmp_path / "prompts"),
              "--clip-model", TINY_CLIP, "--clip-pretrained", str(fake), "--set", "device=cpu"])
    assert str(info.value).startswith(f"error: --clip-pretrained (clip.pretrained) {fake} is named")


# --------------------------------------------------------------------------- config values


def test_pretrain_negative_lr_is_refused_when_the_config_is_read_naming_the_key(tmp_path):
    from pretrain.cli import main

    with pytest.raises(SystemExit) as info:  # no --images: the config is refused before any data is looked at
        main(["train", "--out", str(tmp_path / "run"), "--set", "train.lr=-1"])
    assert str(info.value) == "error: invalid config section 'train': train.lr must be >= 0.0, got -1.0"
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("which, override, key", [
    ("pretrain", "train.lr=.nan", "train.lr"),
    ("pretrain", "loss.margin=.inf", "loss.margin"),
    ("pretrain", "synthetic.scale_range=[0.5, .inf]", "synthetic.scale_range[1]"),
    ("pretrain", "synthetic.nuisance_weights.noisiness=.nan", "synthetic.nuisance_weights.noisiness"),
    ("pretrain", "hardening.anchor_weight=1e999", "hardening.anchor_weight"),
    ("enhance", "train.lr=.nan", "train.lr"),
    ("enhance", "train.lr=.inf", "train.lr"),
    ("enhance", "train.min_lr=-.inf", "train.min_lr"),
    ("label", "clip.tau=.nan", "clip.tau"),
])
def test_non_finite_floats_are_refused_in_every_config_naming_the_key(which, override, key):
    from attiqa_train.config import ConfigError, load_config

    if which == "pretrain":
        from pretrain.training.config import PretrainConfig as cls
    elif which == "enhance":
        from enhancement.config import EnhanceConfig as cls
    else:
        from pretrain.clip.label import LabelConfig as cls
    with pytest.raises(ConfigError) as info:
        load_config(cls, overrides=[override])
    assert str(info.value).startswith(f"config key '{key}' must be a finite number, got ")


def test_a_nan_in_a_config_file_is_refused_naming_the_key(tmp_path):
    from attiqa_train.config import ConfigError, load_config
    from enhancement.config import EnhanceConfig

    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: .nan\n")
    with pytest.raises(ConfigError, match=r"^config key 'train.lr' must be a finite number, got nan$"):
        load_config(EnhanceConfig, path)


# --------------------------------------------------------------------------- results of nothing


def test_score_folder_on_an_empty_folder_is_an_error_naming_it(tmp_path, tiny_net):
    from attiqa_loss import score_folder

    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match=r"^no image files found in .*empty \(1 file"):
        score_folder(tmp_path / "empty", net=tiny_net, device="cpu")


def test_score_folder_where_no_image_can_be_scored_is_an_error_naming_it(tmp_path, tiny_net, write_png):
    # Issue 38: every file failed, and score_folder returned a result whose means were all NaN.
    from attiqa_loss import score_folder
    from attiqa_loss.scoring import NothingScoredError

    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"not a png")
    write_png(folder / "b.png", 8, 8, seed=1)  # smaller than 32x32
    with pytest.raises(ValueError, match=rf"^no image in {folder} could be scored: 2 failure\(s\), e.g. "
                                         rf"{folder / 'a.png'}: ") as info:
        score_folder(folder, net=tiny_net, device="cpu")
    assert isinstance(info.value, NothingScoredError) and "\n" not in str(info.value)
    assert [p for p, _ in info.value.failures] == [str(folder / "a.png"), str(folder / "b.png")]
    write_png(folder / "c.png", 40, 40, seed=2)  # one scored image: a result, the others in its failures
    result = score_folder(folder, net=tiny_net, device="cpu")
    assert result.names == ["c.png"] and len(result.failures) == 2


def test_metric_compute_before_any_update_is_an_error():
    from attiqa_loss import AttiqaMetric

    from helpers import build_tiny_net

    metric = AttiqaMetric(build_tiny_net(0))
    with pytest.raises(RuntimeError, match=r"called before any image was passed to update\(\)"):
        metric.compute()


# --------------------------------------------------------------------------- the table of attiqa-score


def test_a_file_name_holding_a_newline_keeps_its_table_row(tmp_path, write_png, tiny_checkpoint_path, capsys):
    from attiqa_loss import cli

    folder = tmp_path / "photos"
    write_png(folder / "two\nlines.png")
    write_png(folder / "plain.png", seed=1)
    assert cli.main([str(folder), "--checkpoint", str(tiny_checkpoint_path), "--no-progress"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4  # header, two images, mean
    assert lines[2].startswith(f"{folder}/two\\nlines.png  ")


# --------------------------------------------------------------------------- NaN results never exit 0


def _nan_for(net, width: int):
    """``net`` giving NaN scores for images ``width`` pixels wide, its own scores for the others."""
    real = net.forward

    def forward(x, **kwargs):
        out = real(x, **kwargs)
        return torch.full_like(out, float("nan")) if x.shape[-1] == width else out

    net.forward = forward
    return net


def test_score_a_file_with_nan_scores_is_a_failure_naming_it(tmp_path, write_png, monkeypatch, capsys):
    import attiqa_loss.loss
    from attiqa_loss import cli

    from helpers import build_tiny_net

    folder = tmp_path / "photos"
    write_png(folder / "good.png", 48, 40)
    write_png(folder / "bad.png", 48, 56)
    monkeypatch.setattr(attiqa_loss.loss, "load_attiqa", lambda checkpoint=None: _nan_for(build_tiny_net(0), 56))
    code = cli.main([str(folder), "--no-progress", "--format", "csv"])
    out, err = capsys.readouterr()
    assert code == 1
    rows = [line.split(",") for line in out.strip().splitlines()[1:]]
    assert [r[0].rsplit("/", 1)[-1] for r in rows] == ["good.png"]  # no NaN row
    assert all(v not in ("nan", "inf", "-inf") for r in rows for v in r[1:])
    assert "attiqa-score: 1 of 2 file(s) could not be scored:" in err
    assert f"  {folder / 'bad.png'}: the network gave non-finite scores (sharpness=nan, " in err


def test_score_folder_keeps_nan_scores_out_of_its_means(tmp_path, write_png):
    from attiqa_loss import score_folder

    from helpers import build_tiny_net

    write_png(tmp_path / "p" / "good.png", 48, 40)
    write_png(tmp_path / "p" / "bad.png", 48, 56)
    result = score_folder(tmp_path / "p", net=_nan_for(build_tiny_net(0), 56), device="cpu")
    assert [p.name for p in result.paths] == ["good.png"]
    assert [(p.rsplit("/", 1)[-1], r.split(" (")[0]) for p, r in result.failures] == [
        ("bad.png", "the network gave non-finite scores")]
    assert all(v == v for v in result.means().values())


def test_infer_with_nan_scores_exits_1_naming_the_files(tmp_path, monkeypatch, capsys):
    import attiqa_loss
    from enhancement import cli
    from enhancement.unet import create_unet
    from enhancement.weights import save_enhancer

    from enhancement_helpers import write_images
    from helpers import build_tiny_net

    write_images(tmp_path / "in", 2, size=(48, 56))
    enhancer = save_enhancer(create_unet(width=4, depth=1, blocks=1), tmp_path / "enhancer.safetensors")
    monkeypatch.setattr(attiqa_loss, "load_attiqa", lambda checkpoint=None: _nan_for(build_tiny_net(0), 56))
    code = cli.main(["infer", "--checkpoint", str(enhancer), "--data", str(tmp_path / "in"),
                     "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1
    assert ("attiqa-enhance infer: the quality model gave non-finite (NaN) scores for 2 image(s), written as nan "
            "in scores.csv: img00.png, img01.png") in err.splitlines()


def test_enhance_train_whose_final_metrics_are_nan_exits_1(tmp_path, monkeypatch, capsys):
    import enhancement.train
    from enhancement import cli

    monkeypatch.setattr(enhancement.train, "train",
                        lambda cfg, out, **kwargs: {"val/psnr": float("nan"), "val/ssim": 0.5})
    code = cli.main(["train", "--out", str(tmp_path / "run"), "--set", "train.device=cpu"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.strip().splitlines()[-1].startswith(
        "attiqa-enhance train: the final validation metrics are not finite (val/psnr=nan): the training diverged")


# --------------------------------------------------------------------------- user-given weight files


class _RunsCode:
    """Pickled, it makes the unpickler create ``marker``: code a weight file can carry."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _old_library_load(checkpoint_path, *args, **kwargs):
    """How timm and open_clip read a file name before they passed weights_only (and what
    any torch.load did by default before torch 2.6): safetensors by name, else unpickled."""
    from safetensors.torch import load_file

    if str(checkpoint_path).endswith(".safetensors"):
        return load_file(str(checkpoint_path))
    data = torch.load(str(checkpoint_path), map_location="cpu", weights_only=False)
    return data.get("state_dict", data) if isinstance(data, dict) else data


def test_setup_cfg_asks_for_a_torch_whose_weights_only_load_is_safe():
    import configparser
    import re

    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    requires = [line.strip() for line in cfg["options"]["install_requires"].splitlines() if line.strip()]
    torch_floor = next(r for r in requires if re.match(r"torch\b", r))
    version = tuple(int(p) for p in torch_floor.split(">=")[1].split("."))
    assert version >= (2, 6)  # torch.load(weights_only=True) without a known way around it


def test_clip_pretrained_file_that_runs_code_is_refused_and_never_unpickled(tmp_path, monkeypatch):
    import open_clip.factory

    from pretrain.clip.model import create_clip_teacher

    monkeypatch.setattr(open_clip.factory, "load_state_dict", _old_library_load)
    marker = tmp_path / "ran"
    weights = tmp_path / "clip.pt"
    state = create_clip_teacher(TINY_CLIP, "none").model.state_dict()
    torch.save({"state_dict": state, "extra": _RunsCode(marker)}, weights)
    with pytest.raises(ValueError, match=r"weights_only=True refused it"):
        create_clip_teacher(TINY_CLIP, str(weights))
    assert not marker.exists()


def test_clip_pretrained_state_dict_file_loads_its_weights(tmp_path, monkeypatch):
    import open_clip.factory

    from pretrain.clip.model import create_clip_teacher

    monkeypatch.setattr(open_clip.factory, "load_state_dict", _old_library_load)
    state = create_clip_teacher(TINY_CLIP, "none", init_seed=3).model.state_dict()
    weights = tmp_path / "clip.pt"
    torch.save({"state_dict": state, "epoch": 7}, weights)
    loaded = create_clip_teacher(TINY_CLIP, str(weights), init_seed=0)
    assert loaded.pretrained == str(weights)
    assert all(torch.equal(v, state[k]) for k, v in loaded.model.state_dict().items())


def test_backbone_pretrained_file_that_runs_code_is_refused_and_never_unpickled(tmp_path, monkeypatch):
    import timm.models._builder

    from attiqa_loss import AttiqaNet
    from attiqa_loss.checkpoint import CheckpointError

    monkeypatch.setattr(timm.models._builder, "load_state_dict", _old_library_load)
    marker = tmp_path / "ran"
    weights = tmp_path / "backbone.pth"
    import timm

    torch.save({"state_dict": timm.create_model("test_resnet").state_dict(), "extra": _RunsCode(marker)}, weights)
    with pytest.raises(CheckpointError, match=r"the backbone's pretrained weights .*weights_only=True refused it"):
        AttiqaNet("test_resnet", pretrained=True, pretrained_cfg_overlay={"file": str(weights)})
    assert not marker.exists()


def test_backbone_pretrained_pth_file_builds_the_network_its_safetensors_copy_builds(tmp_path, monkeypatch):
    import timm
    import timm.models._builder
    from safetensors.torch import save_file

    from attiqa_loss import AttiqaNet

    monkeypatch.setattr(timm.models._builder, "load_state_dict", _old_library_load)
    torch.manual_seed(5)
    state = timm.create_model("test_resnet").state_dict()
    torch.save({"state_dict_ema": state, "epoch": 2}, tmp_path / "b.pth")
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "b.safetensors"))
    nets = []
    for name in ("b.pth", "b.safetensors"):
        torch.manual_seed(0)  # the heads come from the global generator: the same draws either way
        nets.append(AttiqaNet("test_resnet", pretrained=True, pretrained_cfg_overlay={"file": str(tmp_path / name)}))
    a, b = (n.state_dict() for n in nets)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert torch.equal(a["backbone.conv1.0.weight"], state["conv1.0.weight"])  # the file's weights, not random ones


# --------------------------------------------------------------------------- backbone_kwargs and the file's shapes


class _RealBuild(BaseException):
    """Raised by the spy below when a network is built off the meta device (not an
    Exception: no loader may catch it and turn it into another message)."""


@pytest.fixture
def refuse_real_builds(monkeypatch):
    """Within the test, building an AttiqaNet anywhere but on the meta device raises _RealBuild."""
    import attiqa_loss.checkpoint as checkpoint

    real = checkpoint.AttiqaNet
    builds = []

    class Spy(real):
        def __init__(self, *args, **kwargs):
            on_meta = torch.empty(0).device.type == "meta"  # the default device inside `with torch.device("meta")`
            builds.append("meta" if on_meta else "real")
            if not on_meta:
                raise _RealBuild(f"an AttiqaNet was built for real with {kwargs.get('backbone_kwargs')}")
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(checkpoint, "AttiqaNet", Spy)
    return builds


def _huge_metadata(meta):
    import json

    return {**meta, "backbone": "resnet50", "backbone_kwargs": json.dumps({"base_width": 4096, "cardinality": 1024})}


def test_backbone_kwargs_describing_a_huge_network_are_refused_before_it_is_built(tiny_checkpoint, refuse_real_builds):
    from attiqa_loss import load_checkpoint
    from attiqa_loss.checkpoint import CheckpointError

    from helpers import rewrite_checkpoint

    rewrite_checkpoint(tiny_checkpoint, metadata=_huge_metadata)  # a few hundred kB naming a ~10^13-weight network
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tiny_checkpoint)
    message = str(info.value)
    assert message.startswith(f"{tiny_checkpoint} does not match backbone 'resnet50': missing keys [")
    assert "\n" not in message and refuse_real_builds == ["meta"]


def test_mos_model_backbone_kwargs_describing_a_huge_network_are_refused_before_it_is_built(tmp_path, tiny_net,
                                                                                            refuse_real_builds):
    import json

    from attiqa_loss.checkpoint import CheckpointError
    from pretrain.mos.model import MosModel, load_mos_model, save_mos_model

    from helpers import rewrite_checkpoint

    path = save_mos_model(MosModel(tiny_net), tmp_path / "mos_model.safetensors")

    def huge(meta):
        net = json.loads(meta["net"])
        net.update(backbone="resnet50", backbone_kwargs={"base_width": 4096, "cardinality": 1024})
        return {**meta, "net": json.dumps(net)}

    rewrite_checkpoint(path, metadata=huge)
    with pytest.raises(CheckpointError, match=rf"^{path} does not match its network: missing keys \["):
        load_mos_model(path)
    assert refuse_real_builds == ["meta"]


def test_a_checkpoint_whose_shapes_match_is_built_once_for_real(tiny_checkpoint, monkeypatch):
    import attiqa_loss.checkpoint as checkpoint
    from attiqa_loss import AttiqaNet, load_checkpoint

    real, devices = checkpoint.AttiqaNet, []

    class Count(real):
        def __init__(self, *args, **kwargs):
            devices.append(torch.empty(0).device.type)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(checkpoint, "AttiqaNet", Count)
    net = load_checkpoint(tiny_checkpoint)
    assert devices == ["meta", "cpu"] and next(net.parameters()).device.type == "cpu"
    # The meta build draws nothing from the global generator, so a training run that loads
    # a quality model after seeding (attiqa-enhance train) draws what it drew before.
    torch.manual_seed(0)
    before = torch.get_rng_state()
    with torch.device("meta"):
        AttiqaNet("test_resnet", backbone_kwargs={"drop_path_rate": 0.1})
    assert torch.equal(torch.get_rng_state(), before)
