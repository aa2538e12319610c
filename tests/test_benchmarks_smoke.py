"""Smoke runs of the benchmark scripts with tiny models, so they cannot rot unnoticed."""

from __future__ import annotations

import csv
import importlib
import json
import math
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent

LOSS_COST_COLUMNS = [
    "device", "method", "kind", "arch", "precision", "size", "batch", "threads", "repeats",
    "median_ms", "iqr_pct", "images_per_s", "speed_vs_ref", "gflop_per_image", "peak_mem_mib", "mem_vs_ref",
    "mem_measure",
]

TINY_RN = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 8, "patch_size": None},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))
    return lambda name: importlib.import_module(f"benchmarks.{name}")


@pytest.fixture
def tiny_clip_config(tmp_path):
    path = tmp_path / "bench-tiny-rn.json"
    path.write_text(json.dumps(TINY_RN))
    return path


def _read_csv(path: Path):
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


def _loss_cost_args(out: Path, clip_config: Path, *extra: str):
    return [
        "--quick", "--no-progress", "--backbones", "test_resnet", "--clip-model", clip_config.stem,
        "--clip-config", str(clip_config), "--lpips-nets", "alex", "--out", str(out), *extra,
    ]


def test_loss_cost_quick_writes_every_method(bench, tiny_clip_config, tmp_path, capsys):
    out = tmp_path / "loss_cost.csv"
    assert bench("loss_cost").main(_loss_cost_args(out, tiny_clip_config)) == 0
    columns, rows = _read_csv(out)
    assert columns == LOSS_COST_COLUMNS
    assert [r["method"] for r in rows] == [
        "attiqa:test_resnet", "bare:test_resnet", f"clipiqa:{tiny_clip_config.stem}", "lpips:alex"
    ]
    for r in rows:
        assert (r["device"], r["precision"], r["size"], r["batch"], r["repeats"]) == ("cpu", "fp32", "64", "2", "1")
        assert float(r["images_per_s"]) > 0
        assert float(r["gflop_per_image"]) > 0
        assert math.isfinite(float(r["peak_mem_mib"]))
        assert r["mem_measure"] in ("rss_hwm_growth", "ru_maxrss_growth")
    assert float(rows[0]["speed_vs_ref"]) == 1.0
    # the wrapper adds only normalisation and five linear heads to the bare backbone's compute
    assert float(rows[0]["gflop_per_image"]) == pytest.approx(float(rows[1]["gflop_per_image"]), rel=0.05)
    printed = capsys.readouterr().out
    assert "| attiqa:test_resnet" in printed
    assert "wrapper overhead over bare test_resnet" in printed
    assert f"the images/s of clipiqa:{tiny_clip_config.stem}" in printed


def test_loss_cost_memory_in_child_process(bench, tiny_clip_config, tmp_path):
    out = tmp_path / "mem.csv"
    bench("loss_cost").main(_loss_cost_args(out, tiny_clip_config, "--kinds", "attiqa", "--memory", "subprocess"))
    _, rows = _read_csv(out)
    assert len(rows) == 1 and rows[0]["method"] == "attiqa:test_resnet"
    if rows[0]["mem_measure"] == "rss_hwm_growth":
        # activations of a forward + backward must show up as resident growth
        assert float(rows[0]["peak_mem_mib"]) > 0


def test_loss_cost_rejects_sizes_below_minimum(bench, tmp_path):
    with pytest.raises(ValueError, match=r"--sizes must all be >= 32.*\[16\]"):
        bench("loss_cost").main(["--sizes", "16", "--kinds", "attiqa", "--out", str(tmp_path / "x.csv")])
    assert not (tmp_path / "x.csv").exists()


def test_loss_cost_cuda_without_gpu_is_an_error(bench, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present, so --device cuda is valid here")
    with pytest.raises(ValueError, match="device 'cuda' asks for CUDA, but CUDA is not available here"):
        bench("loss_cost").main(["--device", "cuda", "--quick", "--out", str(tmp_path / "x.csv")])


LABEL_COLUMNS = [
    "device", "clip_model", "stage", "images", "batch", "workers", "threads", "repeats",
    "median_s", "images_per_s", "vs_bare",
]

TINY_VIT = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture
def photo_folder(tmp_path):
    from PIL import Image

    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    for i, (w, h) in enumerate([(80, 60), (64, 96), (100, 100), (72, 64), (90, 70)]):
        arr = (torch.rand(h, w, 3, generator=g) * 255).byte().numpy()
        Image.fromarray(arr).save(folder / ("sub" if i % 2 else "") / f"im{i}.png")
    return folder


def test_label_throughput_quick_compares_label_with_bare(bench, photo_folder, tmp_path, capsys):
    config = tmp_path / "bench-tiny-vit.json"
    config.write_text(json.dumps(TINY_VIT))
    out = tmp_path / "label.csv"
    argv = [
        "--quick", "--no-progress", "--images", str(photo_folder), "--clip-models", str(config),
        "--label-in-process", "--label-workers", "0", "--out", str(out),
    ]
    assert bench("label_throughput").main(argv) == 0
    columns, rows = _read_csv(out)
    assert columns == LABEL_COLUMNS
    assert [r["stage"] for r in rows] == ["bare", "label", "label_wall"]
    for r in rows:
        assert (r["clip_model"], r["images"], r["batch"], r["repeats"]) == ("bench-tiny-vit", "5", "4", "1")
        assert float(r["images_per_s"]) > 0
    assert float(rows[0]["vs_bare"]) == 1.0
    # vs_bare is label images/s over bare images/s
    ratio = float(rows[1]["images_per_s"]) / float(rows[0]["images_per_s"])
    assert float(rows[1]["vs_bare"]) == pytest.approx(ratio, rel=1e-2)
    assert "of the bare encoder's images/s (target >= 80%)" in capsys.readouterr().out


def test_label_throughput_missing_folder_names_it(bench, tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match=f"--images must be a folder of photos; {missing} is not a folder"):
        bench("label_throughput").main(["--quick", "--images", str(missing), "--out", str(tmp_path / "x.csv")])


def test_views_robustness_quick(bench, tmp_path, capsys, tiny_checkpoint_path):
    pytest.importorskip("skimage")
    out = tmp_path / "views.csv"
    args = ["--views", "0", "2", "--steps", "2", "--checkpoint", str(tiny_checkpoint_path), "--out", str(out)]
    assert bench("views_robustness").main(args) == 0
    columns, rows = _read_csv(out)
    assert columns[:3] == ["views", "steps", "score_before"] and [r["views"] for r in rows] == ["0", "2"]
    assert all(float(r["score_gain"]) == pytest.approx(float(r["score_after"]) - float(r["score_before"]), abs=1e-3)
               for r in rows)
    assert "gain_per_luminance" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        bench("views_robustness").main(["--views", "-1", "--out", str(out)])


def test_robustness_benchmark_quick(bench, tmp_path, capsys, tiny_checkpoint_path, write_png):
    for i in range(5):
        write_png(tmp_path / "photos" / f"p{i}.png", 72, 80, seed=i)
    out = tmp_path / "rob.csv"
    args = ["--quick", "--checkpoint", str(tiny_checkpoint_path), "--images", str(tmp_path / "photos"),
            "--out", str(out), "--strips", str(tmp_path / "strips")]
    # The tiny checkpoint records no held-out files: the report falls back to every 5th photo.
    assert bench("robustness").main(args) == 0
    columns, rows = _read_csv(out)
    assert columns[0] == "model" and {r["section"] for r in rows} == {"anchor", "attack", "generator"}
    assert "4/255 attacks, views 0" in capsys.readouterr().out
    assert (tmp_path / "strips" / tiny_checkpoint_path.parent.name / "anchors.png").is_file()


def test_score_levels_edits_move_their_own_attribute(bench, tmp_path, capsys):
    """The embedded model on two bundled photos: the script's exposure edit lowers brightness
    and its saturation edit lowers colourfulness for every photo (the edits are what they say)."""
    skimage = pytest.importorskip("skimage")
    from PIL import Image

    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    for name, dest in (("astronaut.png", "a.png"), ("coffee.png", "sub/c.png")):
        Image.open(Path(skimage.__file__).parent / "data" / name).convert("RGB").resize((128, 96)).save(folder / dest)
    out = tmp_path / "levels.csv"
    assert bench("score_levels").main(["--images", str(folder), "--max-side", "128", "--threads", "1",
                                       "--out", str(out)]) == 0
    columns, rows = _read_csv(out)
    assert columns == ["path", "edit", "sharpness", "contrast", "brightness", "colorfulness", "noisiness"]
    assert len(rows) == 2 * 6 and {r["path"] for r in rows} == {"a.png", "sub/c.png"}  # relative to --images
    by = {(r["path"], r["edit"]): r for r in rows}
    for path in ("a.png", "sub/c.png"):
        assert float(by[path, "exposure x0.7"]["brightness"]) < 0
        assert float(by[path, "saturation x0.6"]["colorfulness"]) < 0
    assert "crop_sd" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        bench("score_levels").main(["--images", str(folder), "--max-side", "40", "--out", str(out)])


def test_enhance_quality_judges_every_method_with_unoptimised_measures(bench, tmp_path, make_photo_dir):
    """Pairs and dark sets from tiny photos; a tiny enhancer beside the baselines; every
    measure present; the darkened input is darker and further from the reference than
    the gamma baseline makes it."""
    from enhancement.unet import UNet
    from enhancement.weights import save_enhancer

    photos = make_photo_dir(10, 200, 208)
    enhancer = save_enhancer(UNet(width=4, depth=1, blocks=1, output="gain", gain_scale=4), tmp_path / "e.safetensors")
    out = tmp_path / "eq"
    assert bench("enhance_quality").main(["--photos", str(photos), "--dark", str(photos), "--enhancer",
                                          f"tiny={enhancer}", "--limit", "2", "--strips", "1",
                                          "--dark-max-luminance", "1.0", "--threads", "1", "--out", str(out)]) == 0
    with open(out / "summary.csv") as f:
        rows = {(r["set"], r["method"]): r for r in csv.DictReader(f)}
    assert set(rows) == {("pairs", m) for m in ("input", "gamma", "clahe", "tiny", "reference")} | \
        {("dark", m) for m in ("input", "gamma", "clahe", "tiny")}
    pairs_in, pairs_gamma = rows[("pairs", "input")], rows[("pairs", "gamma")]
    assert float(pairs_in["luminance"]) < float(rows[("pairs", "reference")]["luminance"])
    assert float(pairs_gamma["psnr"]) > float(pairs_in["psnr"])
    assert rows[("pairs", "reference")]["psnr"] in ("", "nan") and rows[("dark", "input")]["psnr"] in ("", "nan")
    assert all(rows[k][c] not in ("", "nan") for k in rows for c in ("niqe", "colourfulness", "detail", "contrast", "attiqa_noisiness"))
    assert (out / "strip_pairs.png").is_file() and (out / "strip_dark.png").is_file()
    assert "attiqa mean*" in (out / "summary.md").read_text()
    # --normal: the clean photos as they are, each its own reference: doing nothing is perfect.
    normal = tmp_path / "normal"
    assert bench("enhance_quality").main(["--photos", str(photos), "--normal", "--limit", "2", "--strips", "0",
                                          "--threads", "1", "--out", str(normal)]) == 0
    with open(normal / "summary.csv") as f:
        rows = {(r["set"], r["method"]): r for r in csv.DictReader(f)}
    assert float(rows[("normal", "input")]["ssim"]) == pytest.approx(1.0)
    assert float(rows[("normal", "gamma")]["ssim"]) < 1.0
    with pytest.raises(SystemExit):
        bench("enhance_quality").main(["--dark", str(photos), "--normal", "--out", str(normal)])
    with pytest.raises(SystemExit, match="--enhancer expects NAME=PATH, got 'oops'"):
        bench("enhance_quality").main(["--photos", str(photos), "--enhancer", "oops", "--out", str(out)])


def test_an_enhancer_run_never_sees_the_benchmarks_held_out_images(bench, make_photo_dir):
    from enhancement.run_data import exclude_every_nth

    photos = make_photo_dir(11, 40, 40)
    files = sorted(photos.glob("*.png"), reverse=True)  # any listing order
    train_side, held = bench("_enhance_sets").holdout(files, 5)
    kept = exclude_every_nth(files, 5)
    assert sorted(kept) == sorted(train_side) and not set(kept) & set(held) and len(held) == 2
    assert exclude_every_nth(files, 0) == files


def test_enhance_step_profile_times_every_phase(bench, capsys):
    assert bench("enhance_step_profile").main(["--steps", "4", "--val-every", "2", "--threads", "1",
                                               "--set", "model.width=4", "--set", "data.crop_size=32"]) == 0
    out = capsys.readouterr().out
    for phase in ("data", "forward", "loss/fidelity", "loss/attiqa", "backward", "step", "total", "validation pass, first",
                  "validation pass, later"):
        assert f"| {phase} |" in out
    assert "of 4 steps took more than 3.0x the median step" in out


def test_loss_cost_times_the_tone_normalised_network_beside_the_plain_one(bench, tiny_clip_config, tmp_path, capsys):
    """--kinds attiqa-tone adds the normalize_tone network; it costs the same compute
    (six statistics per image and one normalisation)."""
    out = tmp_path / "tone.csv"
    assert bench("loss_cost").main(_loss_cost_args(out, tiny_clip_config, "--kinds", "attiqa", "attiqa-tone",
                                                   "--memory", "none")) == 0
    _, rows = _read_csv(out)
    assert [r["method"] for r in rows] == ["attiqa:test_resnet", "attiqa-tone:test_resnet"]
    assert float(rows[1]["gflop_per_image"]) == pytest.approx(float(rows[0]["gflop_per_image"]), rel=0.05)
    assert "normalize_tone keeps" in capsys.readouterr().out


def test_gpu_check_quick_on_cpu_runs_every_part(bench, tiny_clip_config, tmp_path, capsys):
    """The GPU readiness script's plumbing on CPU: a tiny pytest selection, the loss's cost and
    a few steps of each trainer, all rows in one CSV."""
    out = tmp_path / "gpu_check.csv"
    code = bench("gpu_check").main([
        "--device", "cpu", "--quick", "--threads", "1", "--out", str(out),
        "--tests", "tests/test_robustness_inputs.py", "--tests-k", "cuda_without_cuda_is_a_clear_error",
        "--clip-model", tiny_clip_config.stem, "--clip-config", str(tiny_clip_config),
        "--step-warmup", "1", "--step-repeats", "1",
    ])
    assert code == 0
    columns, rows = _read_csv(out)
    assert columns == ["device", "part", "name", "status", "value", "unit", "detail"]
    assert {r["part"] for r in rows} == {"tests", "loss", "enhance_step", "pretrain_step"}
    assert all(r["status"] in ("PASS", "OK") for r in rows)
    assert {r["name"]: r["value"] for r in rows if r["part"] == "tests"}["passed"] != "0"
    assert [r["name"] for r in rows if r["part"] == "loss"] == [
        "attiqa:test_resnet fp32 64px", f"clipiqa:{tiny_clip_config.stem} fp32 64px", "lpips:alex fp32 64px"]
    for part in ("enhance_step", "pretrain_step"):
        (step,) = [r for r in rows if r["part"] == part]
        assert step["unit"] == "ms" and float(step["value"]) > 0
    assert (tmp_path / "gpu_check_loss_cost.csv").is_file()


def test_gpu_check_skips_every_part_without_cuda(bench, tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    out = tmp_path / "skip.csv"
    assert bench("gpu_check").main(["--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for part in ("tests", "loss", "enhance_step", "pretrain_step"):
        assert f"SKIP {part}: CUDA is not available here" in printed
    _, rows = _read_csv(out)
    assert [r["status"] for r in rows] == ["SKIP"] * 4
