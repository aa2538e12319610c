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
    assert line.startswith(f"attiqa-pretrain validity: --checkpoint {path}: ")


def test_pretrain_val_levels_below_2_is_refused_when_the_config_is_read():
    from attiqa_train.config import ConfigError, load_config
    from pretrain.train import PretrainConfig

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
    message = str(info.value.code)
    assert message.startswith(f"error: --clip-pretrained (clip.pretrained) {fake} is named .safetensors but is not "
                              "a readable safetensors file (") and "\n" not in message


def test_select_prompts_unusable_clip_pretrained_is_one_line(photo_dir, tmp_path):
    from pretrain.cli import main

    fake = tmp_path / "clip.safetensors"
    fake.write_bytes(b"\x80\x04garbage")
    with pytest.raises(SystemExit) as info:
        main(["select-prompts", "--images", str(photo_dir), "--out", str(tmp_path / "prompts"),
              "--clip-model", TINY_CLIP, "--clip-pretrained", str(fake), "--set", "device=cpu"])
    assert str(info.value.code).startswith(f"error: --clip-pretrained (clip.pretrained) {fake} is named")
