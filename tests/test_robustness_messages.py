"""One-line errors for a bad --out, a broken YAML file and a label folder of another file
list; docs --set examples that load as written; photos smaller than the synthetic crop are
named; the labeller's start-up cleanup never deletes a running writer's temp file.

Fast, CPU-only, no downloads (tiny random models).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from enhancement_helpers import REPO, write_images, write_quality_model

TINY_CLIP = str(REPO / "configs" / "open_clip_tiny.json")
BAD_YAML = "train:\n  steps: [1\n"  # an unclosed flow sequence: the error is reported at line 3


def _exit_message(main, argv):
    """The one line a command ends with; its exit status is 2 (usage), not 1 (files failed)."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2, info.value.code
    return str(info.value)


# --------------------------------------------------------------------------- --out that is a file


@pytest.fixture
def a_file(tmp_path):
    path = tmp_path / "a_file"
    path.write_text("x")
    return path


@pytest.mark.parametrize("command, extra", [
    ("select-prompts", ["--clip-model", TINY_CLIP, "--clip-pretrained", "none", "--set", "device=cpu"]),
    ("label", ["--clip-model", TINY_CLIP, "--clip-pretrained", "none", "--set", "label.device=cpu", "--workers", "0"]),
    ("validity", []),
    ("robustness", []),
])
def test_pretrain_out_that_is_a_file_is_one_line(command, extra, a_file, photo_dir):
    from pretrain.cli import main

    message = _exit_message(main, [command, "--images", str(photo_dir), "--out", str(a_file), *extra])
    assert message == f"attiqa-pretrain {command}: --out {a_file} is a file, not a folder"
    assert a_file.read_text() == "x"


def test_pretrain_finetune_and_evaluate_out_that_is_a_file(a_file, tmp_path, tiny_checkpoint_path):
    from pretrain.cli import main

    csv = tmp_path / "mos.csv"
    csv.write_text("path,mos\n")
    for command, extra in (("finetune", ["--checkpoint", str(tiny_checkpoint_path)]),
                           ("evaluate", ["--zero-shot", "--checkpoint", str(tiny_checkpoint_path)])):
        message = _exit_message(main, [command, "--csv", str(csv), "--out", str(a_file), *extra])
        assert message == f"attiqa-pretrain {command}: --out {a_file} is a file, not a folder"


def test_enhance_train_and_infer_out_that_is_a_file(a_file, tmp_path, capsys):
    from enhancement import cli

    write_images(tmp_path / "clean", 3, size=(48, 48))
    quality = write_quality_model(tmp_path / "q.safetensors")
    code = cli.main(["train", "--data", str(tmp_path / "clean"), "--out", str(a_file),
                     "--set", f"loss.attiqa_checkpoint={quality}"])
    assert code == 2
    assert capsys.readouterr().err.strip() == f"attiqa-enhance train: error: --out {a_file} is a file, not a folder"
    code = cli.main(["infer", "--checkpoint", str(quality), "--data", str(tmp_path / "clean"), "--out", str(a_file)])
    assert code == 2
    assert capsys.readouterr().err.strip() == f"attiqa-enhance infer: error: --out {a_file} is a file, not a folder"


def test_enhance_demo_out_that_is_a_file(a_file, tmp_path):
    from enhancement import cli

    write_images(tmp_path / "clean", 3, size=(48, 48))
    message = _exit_message(cli.main, ["demo", "--data", str(tmp_path / "clean"), "--out", str(a_file), "--steps", "1"])
    assert message == f"attiqa-enhance demo: --out {a_file} is a file, not a folder"


# --------------------------------------------------------------------------- YAML syntax errors


@pytest.fixture
def bad_yaml(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(BAD_YAML)
    return path


def test_yaml_syntax_error_is_a_config_error_naming_file_and_line(bad_yaml):
    from attiqa_train.config import ConfigError, load_config
    from pretrain.training.config import PretrainConfig

    with pytest.raises(ConfigError) as info:
        load_config(PretrainConfig, bad_yaml)
    message = str(info.value)
    assert message.startswith(f"{bad_yaml}:3:1: invalid YAML: ") and "line 2" in message and "\n" not in message


@pytest.mark.parametrize("command", ["train", "label", "select-prompts", "finetune", "evaluate"])
def test_pretrain_yaml_syntax_error_is_one_line(command, bad_yaml, tmp_path):
    from pretrain.cli import main

    message = _exit_message(main, [command, "--config", str(bad_yaml), "--out", str(tmp_path / "out")])
    assert message.startswith(f"error: {bad_yaml}:3:1: invalid YAML") and "\n" not in message


def test_enhance_yaml_syntax_error_is_one_line(bad_yaml, tmp_path):
    from enhancement import cli

    message = _exit_message(cli.main, ["train", "--config", str(bad_yaml), "--out", str(tmp_path / "out")])
    assert message.startswith(f"error: {bad_yaml}:3:1: invalid YAML") and "\n" not in message
    message = _exit_message(cli.main, ["demo", "--config", str(bad_yaml), "--out", str(tmp_path / "demo"),
                                       "--data", str(tmp_path)])
    assert message.startswith(f"attiqa-enhance demo: {bad_yaml}:3:1: invalid YAML") and "\n" not in message


def test_prompt_file_syntax_error_is_one_line(tmp_path):
    from pretrain.clip.prompts import load_candidates

    path = tmp_path / "prompts.yaml"
    path.write_text("pairs:\n  sharpness: [[a, b]\n")
    with pytest.raises(ValueError) as info:
        load_candidates(path)
    assert str(info.value).startswith(f"{path}:3:1: invalid YAML") and "\n" not in str(info.value)


# --------------------------------------------------------------------------- label folder of another file list


def _label(out, images):
    from pretrain.cli import main

    return main(["label", "--images", str(images), "--out", str(out), "--workers", "0", "--clip-model", TINY_CLIP,
                 "--clip-pretrained", "none", "--set", "label.device=cpu"])


def test_label_into_a_folder_of_another_file_list_is_one_line(write_png, tmp_path):
    for i in range(2):
        write_png(tmp_path / "first" / f"{i}.png", 64, 64, seed=i)
    write_png(tmp_path / "second" / "x.png", 64, 64, seed=9)
    out = tmp_path / "labels"
    assert _label(out, tmp_path / "first") == 0
    config_before = (out / "config.yaml").read_text()
    with pytest.raises(SystemExit) as info:
        _label(out, tmp_path / "second")
    message = str(info.value)
    assert message.startswith(f"error: {out} holds a labelling run with different ['files']") and "\n" not in message
    assert (out / "config.yaml").read_text() == config_before  # the finished run's config is kept


# --------------------------------------------------------------------------- docs --set examples


def _doc_overrides():
    """``(doc, key=value)`` of every ``--set key=value`` written in docs/*.md."""
    found = []
    for doc in sorted((REPO / "docs").glob("*.md")):
        for m in re.finditer(r"--set\s+([A-Za-z_][\w.]*=[^\s`\"\\]+)", doc.read_text()):
            if not m.group(1).startswith("dotted.key="):  # the syntax, not an example
                found.append((doc.name, m.group(1)))
    return found


#: examples the docs show on purpose as refused (with the error they give)
DOCUMENTED_ERRORS = {("checkpoints.md", "train.steps=0")}


def _config_classes():
    from enhancement.config import EnhanceConfig
    from pretrain.clip.label import LabelConfig
    from pretrain.clip.select_prompts import SelectPromptsConfig
    from pretrain.mos.config import FinetuneConfig
    from pretrain.mos.evaluate import EvaluateConfig
    from pretrain.training.config import PretrainConfig

    return {"enhancement.md": [EnhanceConfig],
            "*": [PretrainConfig, LabelConfig, SelectPromptsConfig, FinetuneConfig, EvaluateConfig]}


def test_docs_have_set_examples():
    docs = {doc for doc, _ in _doc_overrides()}
    assert {"enhancement.md", "pretrain_clip.md", "robustness.md"} <= docs
    assert ("enhancement.md", "loss.attiqa_targets.brightness=0.7") in _doc_overrides()


@pytest.mark.parametrize("doc, override", _doc_overrides())
def test_docs_set_examples_load_as_written(doc, override):
    """Each documented override loads with the config of its command (enhancement.md:
    attiqa-enhance; the others: one of the attiqa-pretrain subcommands), on top of the
    defaults, as the docs write it."""
    from attiqa_train.config import load_config

    classes = _config_classes()
    errors = []
    for cls in classes.get(doc, classes["*"]):
        try:
            load_config(cls, None, [override])
        except ValueError as exc:
            errors.append(f"{cls.__name__}: {exc}"[:300])
        else:
            break
    else:
        if (doc, override) in DOCUMENTED_ERRORS:
            return
        pytest.fail(f"docs/{doc}: --set {override} does not load: {errors}")
    assert (doc, override) not in DOCUMENTED_ERRORS, f"docs/{doc} shows --set {override} as refused, but it loads"


def test_mapping_entry_override_sets_one_entry_over_the_file():
    from enhancement.config import EnhanceConfig
    from attiqa_train.config import ConfigError, load_config

    cfg = load_config(EnhanceConfig, REPO / "configs" / "enhance_lowlight.yaml",
                      ["loss.attiqa_targets.brightness=0.7", "loss.attiqa_targets.contrast=0.9"])
    assert cfg.loss.attiqa_targets == {"brightness": 0.7, "contrast": 0.9}
    with pytest.raises(ConfigError, match="unknown attribute name"):
        load_config(EnhanceConfig, None, ["loss.attiqa_targets.bogus=0.7"])
    with pytest.raises(ConfigError, match="unknown config key"):
        load_config(EnhanceConfig, None, ["loss.attiqa_targets.brightness.deeper=0.7"])


# --------------------------------------------------------------------------- synthetic photos below the crop


def test_pretrain_names_photos_smaller_than_the_crop(write_png, tmp_path, capsys):
    from pretrain.cli import main

    folder = tmp_path / "photos"
    for i in range(3):
        write_png(folder / f"p{i}.png", 64, 64, seed=i)
    small = write_png(folder / "p3_small.png", 40, 48, seed=5)  # >= crop // 2, < crop: used, upscaled
    code = main(["train", "--out", str(tmp_path / "run"), "--images", str(folder), "--no-progress",
                 "--set", "model.backbone=test_resnet", "--set", "synthetic.crop=48", "--set", "train.steps=1",
                 "--set", "train.batch_size=4", "--set", "train.device=cpu", "--set", "synthetic.holdout_every=0",
                 "--set", "train.threads=1"])
    assert code in (0, None)
    err = capsys.readouterr().err
    assert "1 photo(s) smaller than synthetic.crop=48 are used upscaled" in err
    assert f"  {small}: 48x40 (after downscaling to max_side" in err and "its crops are upscaled" in err
    for i in range(3):
        assert f"p{i}.png:" not in err


# --------------------------------------------------------------------------- label temp-file cleanup


def test_label_cleanup_keeps_a_running_writers_temp_file(write_png, tmp_path):
    from attiqa_loss.io import _HOST
    from pretrain.clip.label_job import label_files
    from pretrain.clip.model import create_clip_teacher

    photos = [write_png(tmp_path / "photos" / f"{i}.png", 64, 64, seed=i) for i in range(2)]
    out = tmp_path / "labels"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        live_tmp = out / f".shard-00000.safetensors.{_HOST}-{live.pid}.abc123.tmp"
        dead_tmp = out / f".shard-00000.safetensors.{_HOST}-{dead.pid}.def456.tmp"
        other_host = out / f".shard-00000.safetensors.0badc0de-{dead.pid}.x1.tmp"
        for path in (live_tmp, dead_tmp, other_host):
            path.write_bytes(b"partial")
        teacher = create_clip_teacher(TINY_CLIP, "none")
        manifest = label_files(photos, out, teacher, workers=0, progress=False, lock=False)
        assert manifest["counts"]["labelled"] == 2
        assert live_tmp.read_bytes() == b"partial"  # a running writer's file is never touched
        assert other_host.exists()  # nor another host's
        assert not dead_tmp.exists()  # a dead writer's is removed
    finally:
        live.kill()
        live.wait()
