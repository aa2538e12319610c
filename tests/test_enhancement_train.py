"""End-to-end ``attiqa-enhance train`` / ``infer`` on tiny models and tiny generated images (CPU)."""

import csv
import json
import math
import shutil
import time
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator as PluginEventAccumulator
from tensorboard.plugins.hparams import metrics as hp_metrics
from tensorboard.plugins.hparams import plugin_data_pb2
from tensorboard.util import tensor_util

from attiqa_loss import ATTRIBUTES
from attiqa_loss.io import save_image
from enhancement import cli
from enhancement.objectives import EnhancementObjective
from enhancement.tensorboard_utils import ROLES, header_height
from enhancement.weights import load_enhancer

from enhancement_helpers import (
    REPO,
    smooth_texture,
    tiny_overrides,
    write_images,
    write_pairs,
    write_quality_model,
)

LOWLIGHT = str(REPO / "configs" / "enhance_lowlight.yaml")


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("enhance")
    write_images(root / "clean", 6, size=(48, 60))
    write_pairs(root / "pairs", 4, size=(40, 48))
    quality = write_quality_model(root / "q.safetensors")
    return {"root": root, "clean": root / "clean", "pairs": root / "pairs", "quality": quality}


def _train(assets, out, *extra, config=LOWLIGHT, data=None, **overrides):
    args = ["train", "--config", config, "--data", str(data or assets["clean"]), "--out", str(out)]
    return cli.main(args + tiny_overrides(assets["quality"], **overrides) + list(extra))


@pytest.fixture(scope="module")
def run(assets):
    out = assets["root"] / "run"
    assert _train(assets, out) == 0
    return out


def test_run_writes_config_checkpoint_weights_and_metrics(run, assets):
    for name in ("config.yaml", "state.pt", "enhancer.safetensors", "metrics.json"):
        assert (run / name).is_file(), name
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["data"]["train_dir"] == str(assets["clean"]) and saved["train"]["steps"] == 4
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["step"] == 4 and metrics["val/psnr"] > 0 and 0 <= metrics["val/ssim"] <= 1
    for role in ("input", "output", "reference"):
        assert 0 <= metrics[f"attributes/brightness/{role}"] <= 1
    state = torch.load(run / "state.pt", weights_only=True)
    assert state["step"] == 4 and {"model", "optimizer", "scheduler", "ema"} <= set(state)
    model = load_enhancer(run)
    training = model.training_info
    assert model.config() == {"width": 4, "depth": 2, "blocks": 1, "max_width": 256, "output": "gain",
                              "curve_iterations": 8, "gain_scale": 8, "gain_max": 16.0, "gain_residual": 0.1,
                              "gain_param": "log", "global_context": False, "gain_residual_highpass": 0,
                              "denoise_strength": 1.0, "denoise_radius": 2}
    assert training["attiqa_checkpoint"] == str(assets["quality"])


def _events(path):
    acc = EventAccumulator(str(path), size_guidance={"tensors": 0, "images": 0})
    acc.Reload()
    return acc


def test_tensorboard_has_one_run_per_role_labelled_strips_and_trimmed_hparams(run):
    tb = run / "tb"
    assert sorted(p.name for p in tb.iterdir() if p.is_dir()) == sorted(ROLES)  # no helper runs
    main = _events(tb)
    tags = set(main.Tags()["tensors"]) | set(main.Tags()["scalars"])
    assert {"loss/fidelity", "loss/ssim", "loss/attiqa", "loss/total", "train/lr", "config/text_summary"} <= tags
    assert not any(t.startswith(("attributes/", "val/", "hparams/", "custom_scalars")) for t in tags)
    text = tensor_util.make_ndarray(main.Tensors("config/text_summary")[0].tensor_proto).item().decode()
    assert "crop_size: 32" in text
    # Image strips named after the validation file, with the labelled header band on top.
    val_stems = {p.stem for p in (run.parent / "clean").iterdir()}
    strips = main.Tags()["images"]
    assert len(strips) == 2 and all(t.startswith("samples/") and t[len("samples/"):] in val_stems for t in strips)
    strip = main.Images(strips[0])[-1]
    assert (strip.width, strip.height) == (3 * 32, 32 + header_height(32))
    # Attribute scores and fidelity metrics: one tag, one run per role, validated at steps 2 and 4.
    runs = {role: _events(tb / role) for role in ROLES}
    for role, acc in runs.items():
        for name in ATTRIBUTES:
            events = acc.Tensors(f"attributes/{name}")
            assert [e.step for e in events] == [2, 4]
            assert 0 <= tensor_util.make_ndarray(events[-1].tensor_proto) <= 1
            assert "quality-aligned" in acc.SummaryMetadata(f"attributes/{name}").summary_description
        assert ({"val/psnr", "val/ssim"} <= set(acc.Tags()["tensors"])) == (role != "reference")
    # metrics.json keeps its flat keys, equal to the last logged values.
    metrics = json.loads((run / "metrics.json").read_text())
    last = lambda role, tag: float(tensor_util.make_ndarray(runs[role].Tensors(tag)[-1].tensor_proto))  # noqa: E731
    assert metrics["val/psnr_input"] == pytest.approx(last("input", "val/psnr"))
    assert metrics["attributes/brightness/reference"] == pytest.approx(last("reference", "attributes/brightness"))
    assert not any(k.endswith("/target") for k in metrics)
    # HParams: the session in the output run, the knobs that matter, metrics = logged tags.
    content = runs["output"].PluginTagToContent("hparams")
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    names = {h.name for h in experiment.hparam_infos}
    assert len(names) == 28 and {"loss.attiqa_weight", "loss.attiqa_weights.brightness", "train.lr"} <= names
    assert not any(n.startswith(("data.lowlight", "train.betas", "val.")) for n in names)
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hp = start.session_start_info.hparams
    assert hp["loss.attiqa_weights.brightness"].number_value == 2.0  # from configs/enhance_lowlight.yaml
    assert hp["loss.attiqa_targets.brightness"].number_value == pytest.approx(0.8)
    assert hp["loss.attiqa_targets.sharpness"].number_value == 1.0 and hp["model.width"].number_value == 4
    shown = [m.display_name for m in experiment.metric_infos]
    assert shown[:3] == ["PSNR", "SSIM", "brightness"]  # brightness weighs most in AttiqaLoss
    assert sorted(shown[2:]) == sorted(ATTRIBUTES)
    for info in experiment.metric_infos:
        metric_run, tag = hp_metrics.run_tag_from_session_and_metric("output", info.name)
        assert metric_run == "output" and tag in runs["output"].Tags()["tensors"]
    for acc in (main, *runs.values()):
        assert not any(t.startswith("hparams/") for t in acc.Tags()["tensors"])


def test_infer_keeps_sizes_and_names_and_writes_scores(run, tmp_path, assets):
    data = tmp_path / "in"
    save_image(smooth_texture(45, 67, seed=1), data / "a.png")
    save_image(smooth_texture(33, 40, seed=2), data / "sub" / "b.jpg")
    save_image(smooth_texture(20, 20, seed=3), data / "tiny.png")
    out = tmp_path / "out"
    weights = str(run / "enhancer.safetensors")
    code = cli.main(["infer", "--checkpoint", weights, "--data", str(data), "--out", str(out), "--no-progress"])
    assert code == 0
    for rel, size in (("a.png", (67, 45)), ("sub/b.jpg", (40, 33)), ("tiny.png", (20, 20))):
        with Image.open(out / rel) as im:
            assert im.size == size
    with open(out / "scores.csv", newline="") as f:
        rows = {r["path"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"a.png", "sub/b.jpg", "tiny.png"}
    assert 0 <= float(rows["a.png"]["noisiness_before"]) <= 1 and 0 <= float(rows["a.png"]["noisiness_after"]) <= 1
    assert rows["tiny.png"]["sharpness_before"] == ""  # below the quality model's 32x32 minimum
    # The quality model recorded in the enhancer is found without --attiqa-checkpoint; --out must not be --data.
    assert cli.main(["infer", "--checkpoint", str(run), "--data", str(data), "--out", str(data)]) == 2


def test_resume_after_a_kill_ends_with_the_same_weights(assets, monkeypatch):
    settings = {"train.steps": 6, "train.state_every": 2, "train.val_every": 3}
    straight = assets["root"] / "straight"
    assert _train(assets, straight, **settings) == 0

    class Killed(Exception):
        pass

    calls = {"n": 0}
    forward = EnhancementObjective.forward

    def dying_forward(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:  # during step 4: the checkpoint of step 2 exists, validation of step 3 is stale
            raise Killed()
        return forward(self, *args, **kwargs)

    killed = assets["root"] / "killed"
    monkeypatch.setattr(EnhancementObjective, "forward", dying_forward)
    with pytest.raises(Killed):
        _train(assets, killed, **settings)
    monkeypatch.setattr(EnhancementObjective, "forward", forward)
    assert torch.load(killed / "state.pt", weights_only=True)["step"] == 2
    assert not (killed / "enhancer.safetensors").exists()
    time.sleep(1.1)  # event files are read in name order, which starts with the time in seconds
    assert cli.main(["train", "--out", str(killed), "--resume"]) == 0  # reuses killed/config.yaml

    a, b = load_file(str(straight / "enhancer.safetensors")), load_file(str(killed / "enhancer.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6)
    sa, sb = (torch.load(p / "state.pt", weights_only=True) for p in (straight, killed))
    for key in sa["model"]:
        torch.testing.assert_close(sa["model"][key], sb["model"][key], rtol=0, atol=1e-6)
    assert sa["step"] == sb["step"] == 6
    # TensorBoard (with purging, as `tensorboard` reads) shows the same history in every run:
    # the interrupted run's step-3 validation is replaced by the resumed run's, not doubled.
    runs = sorted(p.relative_to(straight / "tb") for p in (straight / "tb").rglob("*") if p.is_dir())
    assert len(runs) == 3 and runs == sorted(p.relative_to(killed / "tb") for p in (killed / "tb").rglob("*")
                                             if p.is_dir())
    for sub in [Path("."), *runs]:
        want, got = (PluginEventAccumulator(str(p / "tb" / sub), size_guidance={"tensors": 0})
                     for p in (straight, killed))
        want.Reload()
        got.Reload()
        assert sorted(want.Tags()["tensors"]) == sorted(got.Tags()["tensors"])
        for tag in want.Tags()["tensors"]:
            if tag == "config/text_summary":  # logged again by the resumed run, at its start step
                assert [e.step for e in got.Tensors(tag)] == [0, 2]
                continue
            steps = [e.step for e in want.Tensors(tag)]
            assert [e.step for e in got.Tensors(tag)] == steps, (sub, tag)
            if tag.startswith(("attributes/", "val/")):
                assert steps == [3, 6]
                values = [[float(tensor_util.make_ndarray(e.tensor_proto)) for e in acc.Tensors(tag)]
                          for acc in (got, want)]
                assert values[0] == pytest.approx(values[1], abs=1e-4)


@pytest.mark.parametrize("mode", ["paired", "unpaired", "denoise", "zerodce"])
def test_other_data_modes_train(assets, mode):
    out = assets["root"] / f"mode_{mode}"
    if mode == "zerodce":  # the Zero-DCE-style baseline: curves, the paper's four losses, unpaired
        code = _train(assets, out, config="enhance_zerodce", data=assets["clean"], **{"train.steps": 2})
        mode = "unpaired"
    elif mode == "paired":
        code = _train(assets, out, data=assets["pairs"], **{"data.mode": "paired", "train.steps": 2})
    elif mode == "unpaired":
        config = str(REPO / "configs" / "enhance_lowlight_unpaired.yaml")
        code = _train(assets, out, config=config, data=assets["clean"], **{"train.steps": 2})
    else:
        code = _train(assets, out, config=str(REPO / "configs" / "enhance_denoise.yaml"), **{"train.steps": 2})
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert (out / "tb" / "reference").is_dir() == (mode != "unpaired")
    assert not (out / "tb" / "target").exists()
    if mode == "unpaired":
        assert "val/psnr" not in metrics and "attributes/brightness/reference" not in metrics
        assert "attributes/brightness/output" in metrics
    else:
        assert metrics["val/psnr"] > 0 and "attributes/noisiness/reference" in metrics


def test_unpaired_photos_train_with_no_reference_terms_beside_the_pairs(assets, monkeypatch, capsys):
    from enhancement.run_data import build_unpaired
    from enhancement.config import EnhanceConfig
    from attiqa_train.config import load_config

    write_images(assets["root"] / "dark", 5, size=(44, 52), seed=40)
    calls = {}
    real = EnhancementObjective.forward

    def spy(self, output, target=None, **kwargs):
        calls.setdefault(tag[0], []).append({
            "reference": target is not None, "terms": sorted(self.weights), "batch": output.shape[0],
            "inputs": kwargs["inputs"].detach().clone(), "grad": output.requires_grad})
        return real(self, output, target, **kwargs)

    monkeypatch.setattr(EnhancementObjective, "forward", spy)
    tag = ["plain"]
    assert _train(assets, assets["root"] / "no_unpaired", **{"train.steps": 2, "train.val_every": 10}) == 0
    tag[0] = "mixed"
    out = assets["root"] / "unpaired_mix"
    extra = {"data.unpaired_batch": 3, "train.steps": 2, "train.val_every": 10, "train.log_every": 1}
    assert _train(assets, out, "--unpaired", str(assets["root"] / "dark"), **extra) == 0
    plain, mixed = calls["plain"], calls["mixed"]
    assert [c["reference"] for c in mixed] == [True, False, True, False]  # pairs, then the photos, each step
    assert [c["batch"] for c in mixed] == [2, 3, 2, 3]
    assert mixed[1]["terms"] == ["attiqa"] and "fidelity" in mixed[0]["terms"]
    assert all(c["grad"] for c in mixed)  # the unpaired term reaches the generator
    for p, m in zip(plain, mixed[::2]):  # the pairs' batches do not change when photos are mixed in
        assert torch.equal(p["inputs"], m["inputs"])
    tags = EventAccumulator(str(out / "tb")).Reload().Tags()["scalars"]
    assert "loss/unpaired_attiqa" in tags and "loss/fidelity" in tags
    # the benchmark's hold-out rule applies to the photos too: every 2nd of 5 sorted files left out
    cfg = load_config(EnhanceConfig, None, [f"data.unpaired_dir={assets['root'] / 'dark'}", "data.unpaired_batch=1",
                                            "data.exclude_every=2", "data.crop_size=32"])
    skipped = []
    kept = build_unpaired(cfg, skipped)
    assert [p.name for p in kept.items] == ["img00.png", "img02.png", "img04.png"] and skipped == []
    # a config that asks for photos per step (as a recipe file may) but gets no folder is refused by name
    code = _train(assets, assets["root"] / "no_folder", **{"data.unpaired_batch": 2, "train.steps": 1})
    assert code == 2
    assert "data.unpaired_batch=2 mixes real photos into training, but none are given: pass --unpaired DIR" \
        in capsys.readouterr().err


def test_init_checkpoint_starts_from_trained_weights_of_the_same_shape(run, assets, tmp_path):
    from enhancement.train import _init_from
    from enhancement.unet import create_unet

    trained = load_enhancer(run)
    fresh = create_unet(**trained.config())
    assert not torch.equal(fresh.head.weight, trained.head.weight)
    _init_from(fresh, str(run))
    for name, tensor in trained.state_dict().items():
        assert torch.equal(fresh.state_dict()[name], tensor), name
    other = create_unet(**{**trained.config(), "width": trained.config()["width"] * 2})
    with pytest.raises(ValueError, match=r"differs from the config's: model.width is 8 in the config, 4 in the file"):
        _init_from(other, str(run))
    # end to end: a fine-tune from the run; its validation at step 0 scores the run's final weights
    out = tmp_path / "finetune"
    assert _train(assets, out, **{"model.init_checkpoint": str(run), "train.steps": 1, "val.at_start": True}) == 0
    assert yaml.safe_load((out / "config.yaml").read_text())["model"]["init_checkpoint"] == str(run)
    first = EventAccumulator(str(out / "tb" / "output")).Reload().Tensors("val/psnr")[0]
    assert first.step == 0
    assert float(tensor_util.make_ndarray(first.tensor_proto)) == pytest.approx(
        json.loads((run / "metrics.json").read_text())["val/psnr"], abs=1e-4)
    # --resume takes the weights from the state: the init file may be gone by then
    source = tmp_path / "source.safetensors"
    shutil.copy(run / "enhancer.safetensors", source)
    out = tmp_path / "finetune_resumed"
    assert _train(assets, out, **{"model.init_checkpoint": str(source), "train.steps": 2}) == 0
    source.unlink()
    assert cli.main(["train", "--out", str(out), "--resume"]) == 0


def test_attiqa_views_reach_the_loss(assets, monkeypatch):
    import attiqa_loss.loss

    calls = []
    real = attiqa_loss.loss.random_view

    def counting(images, *args, **kwargs):
        calls.append(tuple(images.shape))
        return real(images, *args, **kwargs)

    monkeypatch.setattr(attiqa_loss.loss, "random_view", counting)
    out = assets["root"] / "views"
    config = str(REPO / "configs" / "enhance_lowlight_unpaired.yaml")
    assert _train(assets, out, config=config, **{"train.steps": 2, "loss.attiqa_views": 3}) == 0
    assert yaml.safe_load((out / "config.yaml").read_text())["loss"]["attiqa_views"] == 3
    assert len(calls) == 2 * 3  # three views per training step, none for logging or validation


def test_train_errors_are_clear(assets, tmp_path, capsys, monkeypatch):
    assert cli.main(["train", "--out", str(tmp_path / "a")] + tiny_overrides(assets["quality"])) == 2
    assert "no training images: pass --data DIR" in capsys.readouterr().err
    args = ["train", "--out", str(tmp_path / "b"), "--data", str(assets["clean"]), "--resume"]
    assert cli.main(args + tiny_overrides(assets["quality"])) == 2
    assert "--resume: no training state at" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="unknown config key 'train.stepz'"):
        cli.main(["train", "--out", str(tmp_path / "c"), "--set", "train.stepz=3"])
    import lpips

    monkeypatch.setattr(lpips, "LPIPS", lambda *a, **k: (_ for _ in ()).throw(OSError("offline")))
    code = _train(assets, tmp_path / "d", **{"loss.lpips_weight": 0.1, "loss.lpips_allow_missing": False})
    assert code == 2 and "loss.lpips_allow_missing=true" in capsys.readouterr().err


def test_a_short_trial_of_a_long_recipe_gets_a_warmup_that_fits_and_says_so(assets, capsys):
    # enhance_lowlight has warmup_steps: 500; a 4-step trial must still reach the base rate (#37).
    out = assets["root"] / "short_trial"
    assert _train(assets, out, **{"train.warmup_steps": 500, "train.log_every": 1, "train.val_every": 10}) == 0
    err = capsys.readouterr().err
    said = [line for line in err.splitlines() if "train.warmup_steps" in line]
    assert said == ["train.warmup_steps=500 is not shorter than train.steps=4: no warmup instead (10% of the run), "
                    "so the learning rate reaches its base value"]
    lrs = [e.value for e in _events(out / "tb").Scalars("train/lr")]
    assert lrs[0] == pytest.approx(1e-6 + (2e-4 - 1e-6) * 0.5 * (1 + math.cos(math.pi / 4)))  # cosine from step 0
    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["warmup_steps"] == 500  # the config as given


def test_data_problems_are_reported_before_any_model_is_built(assets, tmp_path, monkeypatch, capsys):
    # "too few images for validation" must not wait for the U-Net, the quality model or LPIPS (#37).
    import enhancement.train as enhance_train

    built = []
    for name in ("create_unet", "AttiqaLoss", "resolve_lpips"):
        real = getattr(enhance_train, name)
        monkeypatch.setattr(enhance_train, name,
                            lambda *a, _name=name, _real=real, **k: (built.append(_name), _real(*a, **k))[1])
    assert _train(assets, tmp_path / "few", **{"data.val_images": 6}) == 2
    assert "holding out data.val_images=6 images for validation needs at least 7 images, found 6" in \
        capsys.readouterr().err
    assert built == []
    assert _train(assets, tmp_path / "bad", data=tmp_path / "no_such_folder") == 2
    assert built == []
    assert _train(assets, tmp_path / "fine", **{"train.steps": 1, "train.val_every": 10}) == 0
    assert built == ["create_unet", "AttiqaLoss", "resolve_lpips"]  # the probe sees them when they are built


def test_the_lowlight_recipe_on_a_machine_without_the_lpips_backbone_fetches_nothing(assets, tmp_path, monkeypatch,
                                                                                      capsys):
    # enhance_lowlight asks for LPIPS only if available (lpips_allow_missing: true): no download is tried (#37).
    import lpips

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # an empty torch hub cache
    monkeypatch.setattr(lpips, "LPIPS", lambda *a, **k: pytest.fail("lpips.LPIPS would fetch its backbone"))
    assert _train(assets, tmp_path / "run", **{"loss.lpips_weight": 0.1, "val.lpips": True, "train.steps": 2}) == 0
    said = [line for line in capsys.readouterr().err.splitlines() if "LPIPS" in line or "lpips" in line]
    assert len(said) == 1 and said[0].startswith("attiqa-enhance: the LPIPS loss term and metric are off: ")
    assert "val/lpips" not in json.loads((tmp_path / "run" / "metrics.json").read_text())
