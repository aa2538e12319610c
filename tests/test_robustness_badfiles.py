"""Bad files never stop a run (issue 16, bad files and large images): training data is
checked up front and bad files are left out by name with the reason (log and metadata);
attiqa-score and infer isolate every file's failure, out-of-memory included, and bound
the memory of one image with a default --max-side that they say when they use.
Tiny random models, CPU only, nothing downloaded."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors import safe_open

from attiqa_loss import read_checkpoint_metadata
from attiqa_loss.io import read_image, save_image

from enhancement_helpers import REPO, smooth_texture, tiny_overrides, write_images, write_quality_model


def _truncated_jpeg(path: Path, seed: int = 9) -> Path:
    save_image(smooth_texture(64, 64, seed=seed), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


# --------------------------------------------------------------------------- attiqa-enhance train


@pytest.fixture(scope="module")
def quality(tmp_path_factory):
    return write_quality_model(tmp_path_factory.mktemp("q") / "q.safetensors")


def _enhance(data, out, quality, **overrides):
    from enhancement import cli

    args = ["train", "--config", str(REPO / "configs" / "enhance_lowlight.yaml"), "--data", str(data), "--out", str(out)]
    return cli.main(args + tiny_overrides(quality, **{"train.steps": 4, **overrides}))


def test_enhance_train_leaves_out_bad_photos_by_name_and_trains_on_the_rest(tmp_path, quality, capsys):
    data = tmp_path / "photos"
    write_images(data, 3, size=(48, 60))
    bad = _truncated_jpeg(data / "cut.jpg")
    small = data / "small.png"
    save_image(smooth_texture(24, 40, seed=5), small)
    assert _enhance(data, tmp_path / "run", quality) == 0
    err = capsys.readouterr().err
    assert "attiqa-enhance: 2 file(s) skipped: " in err and "training on the rest" in err
    assert f"  {bad}: cannot be decoded: OSError: " in err
    assert f"  {small}: 40x24 is smaller than data.crop_size=32" in err
    assert "training and 2 validation images" in err  # 3 good: 1 trains, 2 validate
    with safe_open(str(tmp_path / "run" / "enhancer.safetensors"), framework="pt") as f:
        training = json.loads(f.metadata()["training"])
    assert {Path(s["path"]).name: s["reason"].split(":")[0] for s in training["skipped_files"]} == {
        "cut.jpg": "cannot be decoded", "small.png": "40x24 is smaller than data.crop_size=32"}


def test_enhance_paired_images_of_different_sizes_are_left_out(tmp_path, quality, capsys):
    data = tmp_path / "pairs"
    for i in range(4):
        high = smooth_texture(40, 48, seed=i)
        save_image(high, data / "high" / f"p{i}.png")
        save_image(high * 0.5, data / "low" / f"p{i}.png")
    save_image(smooth_texture(44, 48, seed=9), data / "low" / "p3.png")  # its pair is 40 high
    assert _enhance(data, tmp_path / "run", quality, **{"data.mode": "paired", "train.steps": 2}) == 0
    err = capsys.readouterr().err
    assert f"  {data / 'low' / 'p3.png'}: is 48x44 but its pair {data / 'high' / 'p3.png'} is 48x40" in err


def test_enhance_train_without_a_usable_photo_is_a_one_line_error(tmp_path, quality, capsys):
    data = tmp_path / "photos"
    _truncated_jpeg(data / "a.jpg")
    save_image(smooth_texture(20, 20, seed=1), data / "b.png")
    assert _enhance(data, tmp_path / "run", quality) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"attiqa-enhance train: error: no usable training images in {data}: all 2 were left out: "
                          "2 file(s) skipped: ")
    assert "\n" not in err


def test_enhance_data_of_good_photos_is_unchanged_by_the_check(tmp_path):
    from enhancement.config import EnhanceConfig
    from enhancement.data import list_items, split_random_holdout
    from enhancement.run_data import build_data as _build_data
    from attiqa_train.config import load_config

    write_images(tmp_path / "photos", 7, size=(48, 60))
    cfg = load_config(EnhanceConfig, None, [f"data.train_dir={tmp_path / 'photos'}", "data.crop_size=32",
                                            "data.val_images=2", "val.crop_size=32"])
    dataset, val, skipped = _build_data(cfg)
    train_items, val_items = split_random_holdout(list_items(tmp_path / "photos", "synthetic"), 2, cfg.train.seed)
    assert dataset.items == train_items and [v["name"] for v in val] == [p.name for p in val_items]
    assert skipped == []


def test_a_file_that_breaks_after_the_check_is_named(tmp_path):
    from enhancement.data import EnhanceDataset
    from enhancement.synthesis import synthesize_noise

    files = write_images(tmp_path, 2, size=(40, 40))
    dataset = EnhanceDataset(files, "synthetic", 32, degrade=synthesize_noise)
    files[1].write_bytes(b"gone bad")
    with pytest.raises(OSError, match=rf"^{files[1]}: cannot identify image file"):
        dataset[(1, 0)]


# --------------------------------------------------------------------------- attiqa-pretrain train


def _pretrain_cfg(photo_dir, **extra):
    from attiqa_train.config import load_config
    from pretrain.training.config import PretrainConfig

    sets = ["train.steps=2", "train.batch_size=8", "train.state_every=2", "train.val_every=1", "train.threads=1",
            "train.warmup_steps=1", "model.backbone=test_resnet", "synthetic.crop=48", "synthetic.holdout_every=3",
            "val.max_images=2", "val.levels=3"] + [f"{k}={v}" for k, v in extra.items()]
    cfg = load_config(PretrainConfig, None, sets)
    cfg.synthetic.images = [str(photo_dir)]
    return cfg


def test_pretrain_leaves_out_bad_photos_by_name_and_trains_on_the_rest(write_png, tmp_path, capsys):
    from pretrain.training.train import train

    photos = tmp_path / "photos"
    for i in range(5):
        write_png(photos / f"p{i}.png", 96, 112, seed=i)
    cut = _truncated_jpeg(photos / "p1_cut.jpg")  # the second file: would have been trained on
    tiny = write_png(photos / "p4_tiny.png", 20, 30, seed=7)  # below synthetic.crop // 2 = 24
    junk = photos / "p2_junk.png"
    junk.write_bytes(b"\x89PNG\r\n\x1a\n not an image")  # sorted into the held-out slot
    final = train(_pretrain_cfg(photos), tmp_path / "run", progress=False)
    err = capsys.readouterr().err
    assert "synthetic teacher: 3 photo(s) cannot be used and are left out; training on 4 photo(s), 1 held out" in err
    assert f"  {cut}: cannot be decoded: OSError: " in err
    assert f"  {junk}: cannot be decoded: UnidentifiedImageError: " in err
    assert f"  {tiny}: 30x20 (after downscaling to max_side 768) is smaller than 24 px" in err
    training = read_checkpoint_metadata(final)["training"]
    assert sorted(Path(s["path"]).name for s in training["skipped_files"]) == ["p1_cut.jpg", "p2_junk.png",
                                                                               "p4_tiny.png"]
    assert training["holdout_files"] == [str(photos / "p2.png")]


def test_pretrain_photos_of_a_good_folder_are_what_they_always_were(write_png, tmp_path):
    from attiqa_train.sampling import split_every_nth
    from pretrain.training.teachers import build_synthetic

    photos = tmp_path / "photos"
    for i in range(7):
        write_png(photos / f"p{i}.png", 60 + 7 * i, 90, seed=i)
    cfg = _pretrain_cfg(photos, **{"synthetic.max_side": 80})
    teacher, train_files, held_files, not_listed, bad = build_synthetic(cfg.synthetic)
    files = sorted(photos.glob("*.png"))
    want_train, want_held = split_every_nth(files, 3)
    assert (train_files, held_files, not_listed, bad) == (want_train, want_held, [], [])
    expected = [(read_image(f, max_side=80) * 255).round().to(torch.uint8) for f in want_train]
    assert len(teacher.photos) == len(expected) and all(torch.equal(a, b) for a, b in zip(teacher.photos, expected))


def test_pretrain_without_a_usable_photo_is_a_one_line_error(tmp_path):
    from pretrain.training.train import train

    photos = tmp_path / "photos"
    _truncated_jpeg(photos / "a.jpg")
    with pytest.raises(ValueError, match=rf"^no usable photos for the synthetic teacher in \['{photos}'\]: "
                                         r"1 file\(s\) skipped: 1 cannot be decoded"):
        train(_pretrain_cfg(photos), tmp_path / "run", progress=False)


# --------------------------------------------------------------------------- attiqa-score


class _FailsOnLargeInputs(torch.nn.Module):
    """Wraps a network: batches of more than ``max_batch`` images, and images higher than
    ``max_height``, raise the error a failed CPU allocation raises."""

    def __init__(self, net, *, max_height=10_000, max_batch=10_000):
        super().__init__()
        self.net, self.max_height, self.max_batch = net, max_height, max_batch
        self.calls = []

    def forward(self, x, **kwargs):
        self.calls.append(tuple(x.shape))
        if x.shape[-2] > self.max_height or x.shape[0] > self.max_batch:
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate "
                               "memory: you tried to allocate 9437184000 bytes. Error code 12 (Cannot allocate memory)")
        return self.net(x, **kwargs)


def _score(argv, capsys):
    from attiqa_loss import cli

    code = cli.main([str(a) for a in argv] + ["--no-progress"])
    out, err = capsys.readouterr()
    return code, out, err


def test_out_of_memory_on_one_image_fails_that_file_only(image_folder, tiny_checkpoint_path, monkeypatch, capsys):
    import attiqa_loss.loss as loss_module
    from attiqa_loss import load_checkpoint

    folder = image_folder(sizes=((48, 40), (120, 40), (40, 48)))
    wrapped = _FailsOnLargeInputs(load_checkpoint(tiny_checkpoint_path), max_height=100)
    monkeypatch.setattr(loss_module, "load_attiqa", lambda checkpoint=None: wrapped)
    code, out, err = _score([folder, "--checkpoint", tiny_checkpoint_path, "--format", "csv"], capsys)
    assert code == 1
    scored = sorted(r["path"] for r in csv.DictReader(io.StringIO(out)))
    assert scored == [str(folder / "img_000.png"), str(folder / "img_002.png")]
    assert "attiqa-score: 1 of 3 file(s) could not be scored:" in err
    assert (f"  {folder / 'img_001.png'}: out of memory scoring a 40x120 image (RuntimeError: [enforce fail at "
            "alloc_cpu.cpp:117]") in err
    assert "a smaller --max-side bounds the memory" in err


def test_a_batch_that_runs_out_of_memory_is_retried_image_by_image(image_folder, tiny_checkpoint_path, monkeypatch,
                                                                   capsys):
    import attiqa_loss.loss as loss_module
    from attiqa_loss import load_checkpoint

    folder = image_folder(sizes=((48, 40), (48, 40), (48, 40)))
    net = load_checkpoint(tiny_checkpoint_path)
    wrapped = _FailsOnLargeInputs(net, max_batch=1)
    monkeypatch.setattr(loss_module, "load_attiqa", lambda checkpoint=None: wrapped)
    code, out, _ = _score([folder, "--checkpoint", tiny_checkpoint_path, "--format", "csv"], capsys)
    assert code == 0 and wrapped.calls == [(3, 3, 48, 40)] + [(1, 3, 48, 40)] * 3
    with torch.no_grad():
        for row in csv.DictReader(io.StringIO(out)):
            want = net(read_image(row["path"])[None])[0].tolist()
            assert [float(row[k]) for k in list(row)[1:]] == pytest.approx(want, abs=2e-6)


def test_large_images_share_no_forward_pass(image_folder, tiny_checkpoint_path, monkeypatch, capsys):
    import attiqa_loss.loss as loss_module
    import attiqa_loss.scoring as scoring
    from attiqa_loss import load_checkpoint

    folder = image_folder(sizes=((48, 40),) * 5)
    wrapped = _FailsOnLargeInputs(load_checkpoint(tiny_checkpoint_path))
    monkeypatch.setattr(loss_module, "load_attiqa", lambda checkpoint=None: wrapped)
    monkeypatch.setattr(scoring, "MAX_BATCH_PIXELS", 2 * 48 * 40)
    assert _score([folder, "--checkpoint", tiny_checkpoint_path], capsys)[0] == 0
    assert [c[0] for c in wrapped.calls] == [2, 2, 1]


def test_a_large_image_is_scored_downscaled_by_default_and_it_is_said(tmp_path, write_png, tiny_checkpoint_path,
                                                                      capsys):
    from attiqa_loss import load_checkpoint

    wide = write_png(tmp_path / "wide.png", 40, 5000, seed=1)
    code, out, err = _score([wide, "--checkpoint", tiny_checkpoint_path, "--format", "json"], capsys)
    assert code == 0
    assert "attiqa-score: 1 image(s) longer than 4096 px were scored on a downscaled copy (--max-side 4096; " \
           "--max-side none keeps the full size):" in err
    assert f"  {wide}: 5000x40 -> 4096x33" in err
    with torch.no_grad():
        want = load_checkpoint(tiny_checkpoint_path)(read_image(wide, max_side=4096)[None])[0].tolist()
    assert list(json.loads(out)[0].values())[1:] == pytest.approx(want, abs=1e-5)
    code, _, err = _score([wide, "--checkpoint", tiny_checkpoint_path, "--max-side", "none"], capsys)
    assert code == 0 and "downscaled" not in err


def test_max_side_none_and_bad_words(tmp_path, capsys):
    from attiqa_loss import cli

    with pytest.raises(SystemExit):
        cli.main([str(tmp_path), "--max-side", "huge"])
    assert "expected an integer or 'none', got 'huge'" in capsys.readouterr().err


# --------------------------------------------------------------------------- attiqa-enhance infer


@pytest.fixture
def enhancer(tmp_path, quality):
    from enhancement.unet import UNet
    from enhancement.weights import save_enhancer

    torch.manual_seed(0)
    return save_enhancer(UNet(width=4, depth=2, blocks=1), tmp_path / "e.safetensors",
                         training={"attiqa_checkpoint": str(quality)})


def _infer(enhancer, data, out, *extra):
    from enhancement import cli

    return cli.main(["infer", "--checkpoint", str(enhancer), "--data", str(data), "--out", str(out), "--no-progress",
                     *extra])


def test_infer_out_of_memory_on_one_image_fails_that_file_only(tmp_path, enhancer, monkeypatch, capsys):
    import enhancement.weights as weights

    data = tmp_path / "in"
    save_image(smooth_texture(40, 44, seed=1), data / "a.png")
    save_image(smooth_texture(120, 44, seed=2), data / "big.png")
    save_image(smooth_texture(36, 40, seed=3), data / "c.png")
    real = weights.load_enhancer

    def failing(path):
        model = real(path)
        wrapped = _FailsOnLargeInputs(model, max_height=100)
        wrapped.training_info = model.training_info
        return wrapped

    monkeypatch.setattr(weights, "load_enhancer", failing)
    assert _infer(enhancer, data, tmp_path / "out") == 1
    err = capsys.readouterr().err
    assert f"  {data / 'big.png'}: out of memory enhancing a 44x120 image (RuntimeError: " in err
    assert (tmp_path / "out" / "a.png").is_file() and (tmp_path / "out" / "c.png").is_file()
    assert not (tmp_path / "out" / "big.png").exists()
    with open(tmp_path / "out" / "scores.csv", newline="") as f:
        assert sorted(r["path"] for r in csv.DictReader(f)) == ["a.png", "c.png"]


def test_infer_downscales_a_large_image_by_default_and_says_so(tmp_path, enhancer, capsys):
    data = tmp_path / "in"
    save_image(smooth_texture(40, 44, seed=1), data / "a.png")
    save_image(smooth_texture(40, 5000, seed=2), data / "wide.png")
    assert _infer(enhancer, data, tmp_path / "out") == 0
    err = capsys.readouterr().err
    assert "attiqa-enhance infer: 1 image(s) longer than 4096 px were enhanced (and written) on a downscaled copy" in err
    assert f"  {data / 'wide.png'}: 5000x40 -> 4096x33" in err
    assert Image.open(tmp_path / "out" / "wide.png").size == (4096, 33)
    assert Image.open(tmp_path / "out" / "a.png").size == (44, 40)
    assert _infer(enhancer, data, tmp_path / "full", "--max-side", "none") == 0
    assert Image.open(tmp_path / "full" / "wide.png").size == (5000, 40)
    assert _infer(enhancer, data, tmp_path / "x", "--max-side", "16") == 2
    assert "--max-side must be >= 32" in capsys.readouterr().err
