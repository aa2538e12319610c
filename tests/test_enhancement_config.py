"""The enhancement configs: shipped files load, unknown keys and bad values are rejected by name."""

import pytest
import yaml

from enhancement.config import EnhanceConfig
from attiqa_train.config import ConfigError, load_config

from enhancement_helpers import REPO

CONFIGS = ["enhance_lowlight.yaml", "enhance_denoise.yaml", "enhance_lowlight_unpaired.yaml", "enhance_zerodce.yaml",
           "enhance_shipped.yaml", "enhance_shipped_finetune.yaml", "enhance_lowlight_denoise.yaml"]


@pytest.mark.parametrize("name", CONFIGS)
def test_shipped_configs_load_and_set_steps_and_batch_size(name):
    path = REPO / "configs" / name
    raw = yaml.safe_load(path.read_text())
    assert {"steps", "batch_size"} <= set(raw["train"])
    cfg = load_config(EnhanceConfig, path)
    assert cfg.train.steps == raw["train"]["steps"] and cfg.train.batch_size == raw["train"]["batch_size"]


def test_shipped_configs_match_their_task():
    low = load_config(EnhanceConfig, REPO / "configs" / "enhance_lowlight.yaml")
    den = load_config(EnhanceConfig, REPO / "configs" / "enhance_denoise.yaml")
    unp = load_config(EnhanceConfig, REPO / "configs" / "enhance_lowlight_unpaired.yaml")
    assert (low.data.mode, low.data.task) == ("synthetic", "lowlight")
    assert (den.data.mode, den.data.task) == ("synthetic", "denoise")
    assert unp.data.mode == "unpaired" and unp.loss.fidelity_weight == 0 and unp.loss.attiqa_weight > 0
    assert unp.loss.exposure_weight > 0 and unp.loss.tv_weight > 0
    assert unp.model.output == "gain" and unp.model.gain_residual_highpass >= 3  # nothing in it can paint a cast
    assert low.loss.lpips_allow_missing and low.loss.lpips_weight > 0
    # the stage-2 trial is the shipped recipe plus real shots and AttiqaLoss: the same U-Net and synthesis
    one = load_config(EnhanceConfig, REPO / "configs" / "enhance_shipped.yaml")
    two = load_config(EnhanceConfig, REPO / "configs" / "enhance_shipped_finetune.yaml")
    assert two.model.unet_kwargs() == one.model.unet_kwargs() and two.data.lowlight == one.data.lowlight
    assert two.data.unpaired_batch > 0 and two.loss.attiqa_weight > 0 == one.loss.attiqa_weight


def test_unknown_key_in_file_is_rejected(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  steps: 10\n  stepz: 3\n")
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) \['train.stepz'\]"):
        load_config(EnhanceConfig, path)
    path.write_text("data:\n  lowlight:\n    exposur: [0.1, 0.2]\n")
    with pytest.raises(ConfigError, match=r"\['data.lowlight.exposur'\]"):
        load_config(EnhanceConfig, path)


def test_unknown_override_is_rejected():
    with pytest.raises(ConfigError, match="unknown config key 'loss.lpips_wieght' in --set"):
        load_config(EnhanceConfig, None, ["loss.lpips_wieght=0.1"])


def test_overrides_win_and_are_typed():
    cfg = load_config(EnhanceConfig, REPO / "configs" / "enhance_lowlight.yaml", ["train.lr=5e-4", "model.width=8"])
    assert cfg.train.lr == 5e-4 and cfg.model.width == 8
    with pytest.raises(ConfigError, match="expects an integer"):
        load_config(EnhanceConfig, None, ["train.steps=ten"])


@pytest.mark.parametrize("override,message", [
    ("data.crop_size=16", "data.crop_size must be >= 32"),
    ("data.lowlight.exposure=[0.5, 0.1]", r"lowlight.exposure must be a \[min, max\] pair"),
    ("loss.attiqa_weights={sharpnes: 1.0}", "unknown attribute name"),
    ("loss.attiqa_targets={brightness: 1.5}", r"must be a finite number in \[0.0, 1.0\], got 1.5"),
    ("train.ema_decay=1.0", r"train.ema_decay must be in \[0, 1\)"),
    ("data.mode=paried", "must be one of"),
    ("loss.ssim_window=4", "odd integer"),
    ("loss.attiqa_views=-1", r"loss.attiqa_views must be an integer >= 0, got -1"),
    ("data.lowlight.light_sources=1.5", r"lowlight.light_sources must be in \[0, 1\], got 1.5"),
    ("data.lowlight.bright_regions=-0.1", r"lowlight.bright_regions must be in \[0, 1\], got -0.1"),
    ("model.global_context=maybe", "global_context"),
    ("model.gain_residual_highpass=4", r"model.gain_residual_highpass must be 0 \(a free residual\) or an odd window >= 3, got 4"),
])
def test_bad_values_are_rejected_by_name(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(EnhanceConfig, None, [override])


def test_unpaired_mode_refuses_reference_terms():
    with pytest.raises(ConfigError, match="reference terms must be 0; got loss.fidelity_weight=1.0"):
        load_config(EnhanceConfig, None, ["data.mode=unpaired"])
    cfg = load_config(
        EnhanceConfig,
        None,
        ["data.mode=unpaired", "loss.fidelity_weight=0", "loss.ssim_weight=0", "loss.tv_weight=0.1"],
    )
    assert cfg.data.mode == "unpaired"


@pytest.mark.parametrize("overrides,message", [
    (["data.unpaired_dir=dark"], r"data.unpaired_dir needs data.unpaired_batch >= 1 .* "
                                 r"got unpaired_dir='dark' and unpaired_batch=0"),
    (["data.unpaired_batch=-1"], r"data.unpaired_batch must be >= 0, got -1"),
    (["data.unpaired_batch=2", "data.mode=unpaired", "loss.fidelity_weight=0", "loss.ssim_weight=0"],
     r"in data.mode 'unpaired' put them in data.train_dir \(got unpaired_dir='', unpaired_batch=2\)"),
    (["data.unpaired_batch=2", "loss.attiqa_weight=0"],
     r"only no-reference terms train on them, but every one is 0: set one of loss.attiqa_weight"),
])
def test_unpaired_photos_in_paired_training_are_checked(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(EnhanceConfig, None, overrides)
    cfg = load_config(EnhanceConfig, None, ["data.unpaired_dir=dark", "data.unpaired_batch=2",
                                            "loss.attiqa_weight=0", "loss.exposure_weight=0.5"])
    assert (cfg.data.unpaired_dir, cfg.data.unpaired_batch) == ("dark", 2)
