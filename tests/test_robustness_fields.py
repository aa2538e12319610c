"""Weight-file fields, option values and config files checked before anything is built
from them, each failure one line naming the option, key or file (issue 38, second audit):
a CLIP weight file of another model, the quality model ``attiqa-enhance infer`` scores
with, long key lists, ``--checkpoint`` folders, normalisation bounds, optimiser betas,
duplicate YAML keys, refused training states, non-compute devices and ``verdict``'s
input folders.

Tiny random models, CPU only, nothing downloaded.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from enhancement_helpers import REPO

TINY_CLIP = str(REPO / "configs" / "open_clip_tiny.json")


def _one_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# --------------------------------------------------------------------------- CLIP weights of another model


def test_label_clip_pretrained_of_another_model_is_one_line_exit_2(photo_dir, tmp_path, capsys):
    import timm
    from safetensors.torch import save_file

    from pretrain.cli import main

    other = tmp_path / "q.safetensors"  # a real safetensors file, of a timm ResNet
    save_file({k: v.contiguous() for k, v in timm.create_model("test_resnet").state_dict().items()}, str(other))
    with pytest.raises(SystemExit) as info:
        main(["label", "--images", str(photo_dir), "--out", str(tmp_path / "labels"), "--clip-model", TINY_CLIP,
              "--clip-pretrained", str(other), "--set", "label.device=cpu", "--workers", "0"])
    assert info.value.code == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith(f"error: --clip-pretrained (clip.pretrained) {other} is not a state dict of open_clip "
                           f"model '{TINY_CLIP}': missing keys ['ln_final.bias', ")
    assert " more]" in line and len(line) < 1000
    assert not (tmp_path / "labels").exists()


def test_clip_pretrained_of_another_config_names_the_shape_mismatches(tmp_path):
    import json

    from safetensors.torch import save_file

    from pretrain.clip.model import create_clip_teacher

    cfg = json.loads(open(TINY_CLIP).read())
    cfg["embed_dim"] = 64
    (tmp_path / "wide_clip.json").write_text(json.dumps(cfg))
    state = create_clip_teacher(str(tmp_path / "wide_clip.json"), "none").model.state_dict()
    weights = tmp_path / "wide.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(weights))
    before = torch.random.get_rng_state()
    with pytest.raises(ValueError) as info:
        create_clip_teacher(TINY_CLIP, str(weights))
    assert str(info.value) == (
        f"--clip-pretrained (clip.pretrained) {weights} is not a state dict of open_clip model '{TINY_CLIP}': "
        "missing keys [], unexpected keys [], shape mismatches ['text_projection: checkpoint (32, 64) vs network "
        "(32, 32)', 'visual.proj: checkpoint (32, 64) vs network (32, 32)']")
    assert torch.equal(before, torch.random.get_rng_state())


# --------------------------------------------------------------------------- long key lists


def test_checkpoint_of_another_listed_backbone_lists_a_few_keys_and_how_many_more(tiny_checkpoint):
    from attiqa_loss import load_checkpoint
    from attiqa_loss.checkpoint import CheckpointError

    from helpers import rewrite_checkpoint

    rewrite_checkpoint(tiny_checkpoint, metadata=lambda m: {**m, "backbone": "resnet18"})
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tiny_checkpoint)
    message = str(info.value)
    assert message.startswith(f"{tiny_checkpoint} does not match backbone 'resnet18': missing keys [")
    assert len(message) < 1500 and "\n" not in message
    # the heads come first among the shape mismatches: their width is the backbone's feature width
    assert "shape mismatches ['heads.sharpness.weight: checkpoint (1, 96) vs network (1, 512)', " in message
    assert message.endswith(" more]")


def test_state_dict_differences_lists_five_of_each_kind_then_how_many_more():
    from attiqa_loss.weights_file import state_dict_differences

    expected = {f"k{i:02d}": (1,) for i in range(12)}
    assert state_dict_differences(expected, {}) == (
        "missing keys ['k00', 'k01', 'k02', 'k03', 'k04', and 7 more], unexpected keys [], shape mismatches []")
    assert state_dict_differences({"a": (1,), "b": (2,)}, {"a": (1,)}) == \
        "missing keys ['b'], unexpected keys [], shape mismatches []"


# --------------------------------------------------------------------------- the quality model infer scores with


def test_infer_never_loads_the_quality_model_an_enhancers_metadata_names(tmp_path, monkeypatch, capsys):
    import csv

    import attiqa_loss
    from enhancement import cli
    from enhancement.unet import UNet
    from enhancement.weights import save_enhancer

    from enhancement_helpers import write_images, write_quality_model
    from helpers import build_tiny_net

    write_images(tmp_path / "in", 2, size=(40, 48))
    steer = write_quality_model(tmp_path / "elsewhere" / "q.safetensors")  # a file the metadata points the loader to
    torch.manual_seed(0)
    enhancer = save_enhancer(UNet(width=4, depth=2, blocks=1), tmp_path / "e.safetensors",
                             training={"attiqa_checkpoint": str(steer)})
    loaded = []

    def spy(checkpoint=None, **kwargs):
        loaded.append(checkpoint)
        return build_tiny_net(0)

    monkeypatch.setattr(attiqa_loss, "load_attiqa", spy)
    out = tmp_path / "out"
    assert cli.main(["infer", "--checkpoint", str(enhancer), "--data", str(tmp_path / "in"), "--out", str(out),
                     "--no-progress"]) == 0
    assert loaded == [None]  # the embedded model, not the metadata's path
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == (f"attiqa-enhance infer: 2 image(s) written to {out}, scores in {out / 'scores.csv'} by the "
                    f"embedded quality model attiqa_default.safetensors (the enhancer's metadata names '{steer}' as "
                    "the quality model it was trained with: pass --attiqa-checkpoint to score with it)")
    with open(out / "scores.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 2

    given = tmp_path / "given.safetensors"
    assert cli.main(["infer", "--checkpoint", str(enhancer), "--data", str(tmp_path / "in"), "--out",
                     str(tmp_path / "out2"), "--attiqa-checkpoint", str(given), "--no-progress"]) == 0
    assert loaded == [None, given]
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(
        f"scores in {tmp_path / 'out2' / 'scores.csv'} by the quality model {given} (--attiqa-checkpoint)")


# --------------------------------------------------------------------------- --checkpoint FOLDER


def _exit_code_and_err(run, capsys):
    try:
        code = run()
    except SystemExit as exc:
        code = exc.code
    return code, _one_line(capsys.readouterr().err)


@pytest.mark.parametrize("command", ["attiqa-score", "attiqa-pretrain validity", "attiqa-pretrain robustness"])
def test_checkpoint_that_is_a_folder_is_named_as_one(command, photo_dir, tmp_path, capsys):
    from attiqa_loss import cli as score_cli
    from pretrain.cli import main as pretrain_main

    folder = tmp_path / "run"  # a run folder given for the checkpoint file in it
    folder.mkdir()
    if command == "attiqa-score":
        run = lambda: score_cli.main([str(photo_dir), "--checkpoint", str(folder), "--no-progress"])  # noqa: E731
    else:
        sub = command.split()[1]
        run = lambda: pretrain_main([sub, "--images", str(photo_dir), "--checkpoint", str(folder),  # noqa: E731
                                     "--out", str(tmp_path / "out")])
    code, line = _exit_code_and_err(run, capsys)
    assert code == 2
    assert line == f"{command}: --checkpoint {folder} is a folder, expected a .safetensors file"
    assert not (tmp_path / "out").exists()


def test_loading_a_folder_says_it_is_a_folder(tmp_path):
    from attiqa_loss import load_checkpoint

    with pytest.raises(FileNotFoundError, match=rf"^checkpoint {tmp_path} is a folder, expected a .safetensors file$"):
        load_checkpoint(tmp_path)


# --------------------------------------------------------------------------- --device meta


def test_score_device_meta_is_an_option_error(photo_dir, tiny_checkpoint_path, capsys):
    from attiqa_loss import cli as score_cli

    code, line = _exit_code_and_err(lambda: score_cli.main([str(photo_dir), "--checkpoint", str(tiny_checkpoint_path),
                                                            "--device", "meta", "--no-progress"]), capsys)
    assert code == 2
    assert line == ("attiqa-score: --device: device 'meta' holds no data and computes nothing (shapes only); "
                    "use cpu or cuda")


# --------------------------------------------------------------------------- normalisation bounds


@pytest.mark.parametrize("key, values, bounds", [
    ("std", [1e-30, 0.2, 0.2], "[0.001, 100]"),
    ("std", [0.2, 0.2, 1000.0], "[0.001, 100]"),
    ("mean", [1e38, 0.5, 0.5], "[-10, 10]"),
    ("mean", [0.5, -11.0, 0.5], "[-10, 10]"),
])
def test_normalisation_outside_its_bounds_is_refused_naming_the_key(tiny_checkpoint, key, values, bounds):
    import json

    from attiqa_loss import load_checkpoint
    from attiqa_loss.checkpoint import CheckpointError

    from helpers import rewrite_checkpoint

    def edit(meta):
        norm = json.loads(meta["normalization"])
        norm[key] = values
        return {**meta, "normalization": json.dumps(norm)}

    rewrite_checkpoint(tiny_checkpoint, metadata=edit)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(tiny_checkpoint)
    assert str(info.value) == (f"{tiny_checkpoint}: metadata normalization.{key} must be within {bounds} in every "
                               f"channel (inputs are in [0, 1]), got {values!r}")


# --------------------------------------------------------------------------- optimiser keys


@pytest.mark.parametrize("override, message", [
    ("train.betas=[2.0, 0.99]", "train.betas must be two numbers in [0, 1), got [2.0, 0.99]"),
    ("train.betas=[0.9, 1.0]", "train.betas must be two numbers in [0, 1), got [0.9, 1.0]"),
    ("train.betas=[-0.1, 0.99]", "train.betas must be two numbers in [0, 1), got [-0.1, 0.99]"),
    ("train.min_lr=0.01", "train.min_lr must be <= train.lr (the schedule decays from lr to min_lr), "
                          "got train.min_lr=0.01 > train.lr=0.0002"),
])
def test_enhance_betas_and_min_lr_are_refused_when_the_config_is_read(override, message, tmp_path, capsys):
    from enhancement import cli

    from enhancement_helpers import write_images

    write_images(tmp_path / "clean", 2)
    with pytest.raises(SystemExit) as info:
        cli.main(["train", "--data", str(tmp_path / "clean"), "--out", str(tmp_path / "run"), "--set", override])
    assert info.value.code == 2
    assert _one_line(capsys.readouterr().err) == f"error: invalid config section 'train': {message}"
    assert not (tmp_path / "run").exists()  # refused before the run folder (attiqa-run.json) was written


# --------------------------------------------------------------------------- a YAML key given twice


_TWICE = "train:\n  lr: 0.001\nloss:\n  fidelity_weight: 1.0\ntrain:\n  steps: 5\n"


@pytest.mark.parametrize("command", ["pretrain train", "enhance train"])
def test_a_config_section_given_twice_is_refused_at_the_second(command, tmp_path, capsys):
    from enhancement import cli as enhance_cli
    from pretrain.cli import main as pretrain_main

    path = tmp_path / "c.yaml"
    path.write_text(_TWICE)
    main = pretrain_main if command.startswith("pretrain") else enhance_cli.main
    with pytest.raises(SystemExit) as info:
        main(["train", "--config", str(path), "--out", str(tmp_path / "run")])
    assert info.value.code == 2
    assert _one_line(capsys.readouterr().err) == f"error: {path}:5:1: duplicate key 'train' (first at line 1)"
    assert not (tmp_path / "run").exists()


def test_duplicate_keys_are_refused_in_nested_mappings_prompt_files_and_set_values(tmp_path):
    from attiqa_train.config import ConfigError, load_config
    from enhancement.config import EnhanceConfig
    from pretrain.clip.prompts import load_candidates

    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 0.001\n  lr: 0.002\n")
    with pytest.raises(ConfigError, match=rf"^{path}:3:3: duplicate key 'lr' \(first at line 2\)$"):
        load_config(EnhanceConfig, path)
    prompts = tmp_path / "candidates.yaml"
    prompts.write_text("pairs:\n  sharpness: [[sharp, blurry]]\n  sharpness: [[crisp, soft]]\n")
    with pytest.raises(ValueError, match=rf"^{prompts}:3:3: duplicate key 'sharpness' \(first at line 2\)$"):
        load_candidates(prompts)
    with pytest.raises(ConfigError, match=r"^--set loss.attiqa_weights: duplicate key 'noisiness' in "):
        load_config(EnhanceConfig, overrides=["loss.attiqa_weights={noisiness: 1, noisiness: 2}"])


def test_a_yaml_merge_key_may_still_be_overridden(tmp_path):
    from attiqa_train.config_files import load_yaml

    assert load_yaml("base: &b {lr: 1, steps: 2}\ntrain:\n  <<: *b\n  lr: 3\n")["train"] == {"lr": 3, "steps": 2}


# --------------------------------------------------------------------------- a state.pt that would run code


class _RunsCode:
    """Pickled, it makes the unpickler create ``marker``: code a state file can carry."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("protocol", [2, 4])
def test_resume_from_a_state_that_would_run_code_is_one_line(protocol, photo_dir, tmp_path, capfd):
    from pretrain.cli import main

    out = tmp_path / "run"
    out.mkdir()
    marker = tmp_path / "ran"
    # protocol 4: torch's weights-only unpickler also warned "Detected pickle protocol 4" in two lines
    torch.save({"step": 1, "model": {}, "extra": _RunsCode(marker)}, out / "state.pt", pickle_protocol=protocol)
    args = ["train", "--out", str(out), "--images", str(photo_dir), "--resume", "--no-progress",
            "--set", "model.backbone=test_resnet", "--set", "synthetic.crop=32", "--set", "train.steps=2",
            "--set", "train.warmup_steps=0", "--set", "train.batch_size=4", "--set", "train.device=cpu",
            "--set", "synthetic.holdout_every=0"]
    with warnings.catch_warnings(record=True) as shown:  # what a plain run prints on stderr
        warnings.simplefilter("always")
        with pytest.raises(SystemExit) as info:
            main(args)
    assert info.value.code == 2
    assert [str(w.message) for w in shown] == []
    line = _one_line(capfd.readouterr().err)
    assert line.startswith(f"attiqa-pretrain train: {out / 'state.pt'} is not a readable training state: "
                           "torch.load(weights_only=True) refused it (it holds something other than tensors and "
                           "plain data, which could run code, or is no state file); WeightsUnpickler: ")
    assert "\x1b" not in line and not marker.exists()


# --------------------------------------------------------------------------- verdict's input folders


def _reports(tmp_path):
    rob, val = tmp_path / "rob", tmp_path / "val"
    rob.mkdir()
    val.mkdir()
    (rob / "robustness.csv").write_text("measure,views,value\n")
    (val / "validity.csv").write_text("scorer,family,srcc\n")
    return rob, val


@pytest.mark.parametrize("option, value, message", [
    ("--robustness", "nope", "--robustness {v}: no such folder or file"),
    ("--validity", "nope", "--validity {v}: no such folder or file"),
    ("--loss-cost", "nope.csv", "--loss-cost {v}: no such file"),
    ("--robustness", "empty-folder", "--robustness {v}: the folder holds no robustness.csv (give the folder "
                                     "attiqa-pretrain robustness wrote, or its robustness.csv)"),
    ("--loss-cost", "empty-folder", "--loss-cost {v} is a folder, expected a CSV file"),
    ("--checkpoint", "empty-folder", "--checkpoint {v} is a folder, expected a .safetensors file"),
    ("--checkpoint", "nope.safetensors", "--checkpoint {v}: no such file"),
])
def test_verdict_inputs_that_are_missing_are_named_by_their_option(option, value, message, tmp_path, capsys):
    from pretrain.cli import main

    rob, val = _reports(tmp_path)
    given = {"--robustness": str(rob), "--validity": str(val)}
    path = tmp_path / value
    if value == "empty-folder":
        path.mkdir()
    given[option] = str(path)
    with pytest.raises(SystemExit) as info:
        main(["verdict", *[x for pair in given.items() for x in pair]])
    assert info.value.code == 2
    assert _one_line(capsys.readouterr().err) == f"attiqa-pretrain verdict: {message.format(v=path)}"
