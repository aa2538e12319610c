"""``attiqa-enhance infer --format same|png|jpg --quality Q``: output formats, and scores of
the files as written (read back from disk), not of the network's float output."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
import torch
from PIL import Image

from attiqa_loss import ATTRIBUTES, load_checkpoint
from attiqa_loss.io import read_image, save_image
from enhancement import cli
from enhancement.unet import UNet
from enhancement.weights import save_enhancer

from enhancement_helpers import smooth_texture, write_quality_model


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("infer")
    quality = write_quality_model(root / "q.safetensors")
    torch.manual_seed(0)
    enhancer = save_enhancer(UNet(width=4, depth=2, blocks=1), root / "enhancer.safetensors",
                             training={"attiqa_checkpoint": str(quality)})
    data = root / "in"
    save_image(smooth_texture(40, 52, seed=1), data / "a.jpg", quality=90)
    save_image(smooth_texture(36, 44, seed=2), data / "sub" / "b.png")
    save_image(smooth_texture(48, 40, seed=3), data / "c.jpeg", quality=90)
    return {"root": root, "quality": quality, "enhancer": enhancer, "data": data}


def _infer(setup, out: Path, *extra: str) -> int:
    return cli.main(["infer", "--checkpoint", str(setup["enhancer"]), "--data", str(setup["data"]),
                     "--out", str(out), "--attiqa-checkpoint", str(setup["quality"]), "--no-progress", *extra])


def _rows(out: Path):
    with open(out / "scores.csv", newline="") as f:
        return {r["path"]: r for r in csv.DictReader(f)}


def _assert_scores_are_of_the_written_files(setup, out: Path, rows) -> None:
    net = load_checkpoint(setup["quality"])
    for row in rows.values():
        written = out / row["output"]
        with torch.no_grad():
            expected = net(read_image(written)[None])[0].tolist()
        got = [float(row[f"{name}_after"]) for name in ATTRIBUTES]
        assert got == pytest.approx(expected, abs=2e-6), written


def _jpeg_tables(quality: int):
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (90, 120, 30)).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    with Image.open(buf) as im:
        return im.quantization


def test_same_format_keeps_names_and_uses_quality_95(setup, tmp_path):
    out = tmp_path / "same"
    assert _infer(setup, out) == 0
    rows = _rows(out)
    assert {r: rows[r]["output"] for r in rows} == {"a.jpg": "a.jpg", "sub/b.png": "sub/b.png", "c.jpeg": "c.jpeg"}
    with Image.open(out / "a.jpg") as im:
        assert im.format == "JPEG" and im.size == (52, 40)
        assert im.quantization == _jpeg_tables(95)  # not Pillow's default 75
    with Image.open(out / "sub" / "b.png") as im:
        assert im.format == "PNG"
    _assert_scores_are_of_the_written_files(setup, out, rows)


def test_png_format_writes_lossless_pngs(setup, tmp_path):
    out = tmp_path / "png"
    assert _infer(setup, out, "--format", "png") == 0
    rows = _rows(out)
    assert {r: rows[r]["output"] for r in rows} == {"a.jpg": "a.png", "sub/b.png": "sub/b.png", "c.jpeg": "c.png"}
    for name in ("a.png", "c.png", "sub/b.png"):
        with Image.open(out / name) as im:
            assert im.format == "PNG"
    assert not (out / "a.jpg").exists()
    _assert_scores_are_of_the_written_files(setup, out, rows)


def test_jpg_format_with_quality(setup, tmp_path):
    out = tmp_path / "jpg"
    assert _infer(setup, out, "--format", "jpg", "--quality", "30") == 0
    rows = _rows(out)
    assert {r: rows[r]["output"] for r in rows} == {"a.jpg": "a.jpg", "sub/b.png": "sub/b.jpg", "c.jpeg": "c.jpeg"}
    for name in ("a.jpg", "sub/b.jpg", "c.jpeg"):
        with Image.open(out / name) as im:
            assert im.format == "JPEG" and im.quantization == _jpeg_tables(30)
    # at quality 30 the file differs clearly from the network's output: the scores are the file's
    _assert_scores_are_of_the_written_files(setup, out, rows)


def test_two_inputs_that_would_write_the_same_file_are_refused(setup, tmp_path, capsys):
    data = tmp_path / "clash"
    save_image(smooth_texture(40, 40, seed=4), data / "x.jpg")
    save_image(smooth_texture(40, 40, seed=5), data / "x.png")
    out = tmp_path / "out"
    code = cli.main(["infer", "--checkpoint", str(setup["enhancer"]), "--data", str(data), "--out", str(out),
                     "--format", "png", "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert "x.png" in err and "x.jpg" in err and "written twice" in err
    assert not out.exists()


@pytest.mark.parametrize("value", ["0", "101"])
def test_quality_out_of_range(setup, tmp_path, capsys, value):
    assert _infer(setup, tmp_path / "o", "--quality", value) == 2
    assert f"--quality must be between 1 and 100, got {value}" in capsys.readouterr().err


def test_format_is_checked_by_the_parser(setup, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        _infer(setup, tmp_path / "o", "--format", "gif")
    assert exc.value.code == 2 and "invalid choice: 'gif'" in capsys.readouterr().err


def test_without_checkpoint_infer_uses_the_shipped_enhancer(setup, tmp_path, monkeypatch, capsys):
    import enhancement.weights as weights

    monkeypatch.setattr(weights, "DEFAULT_ENHANCER_PATH", setup["enhancer"])
    out = tmp_path / "o"
    assert cli.main(["infer", "--data", str(setup["data"]), "--out", str(out), "--no-progress",
                     "--attiqa-checkpoint", str(setup["quality"])]) == 0
    expected = weights.load_enhancer(setup["enhancer"])(read_image(setup["data"] / "sub" / "b.png")[None])[0]
    assert (read_image(out / "sub" / "b.png") - expected).abs().max() <= 1 / 255 + 1e-6  # 8-bit PNG of it
    monkeypatch.setattr(weights, "DEFAULT_ENHANCER_PATH", tmp_path / "absent.safetensors")
    assert cli.main(["infer", "--data", str(setup["data"]), "--out", str(tmp_path / "o2"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "the shipped enhancer" in err and "is missing from this install" in err


def _png_bit_depth(path: Path) -> int:
    head = path.read_bytes()[:26]
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR"
    return head[24]


def test_16_bit_inputs_give_16_bit_outputs(setup, tmp_path):
    # Issue 38: a 16-bit PNG was written back as an 8-bit one by --format same.
    import numpy as np

    from enhancement.weights import load_enhancer
    from test_robustness_images import write_png16

    deep = (smooth_texture(40, 44, seed=6).permute(1, 2, 0).numpy() * 65535).round().astype(np.uint16)
    data = tmp_path / "deep"
    write_png16(data / "d.png", deep)
    tifffile = None
    try:
        import tifffile

        tifffile.imwrite(data / "t.tif", deep, photometric="rgb")
    except ImportError:
        pass
    out = tmp_path / "out"
    assert cli.main(["infer", "--checkpoint", str(setup["enhancer"]), "--data", str(data), "--out", str(out),
                     "--attiqa-checkpoint", str(setup["quality"]), "--no-progress"]) == 0
    assert _png_bit_depth(out / "d.png") == 16
    written = read_image(out / "d.png")
    with torch.no_grad():
        expected = load_enhancer(setup["enhancer"])(read_image(data / "d.png")[None]).float().clamp(0, 1)[0]
    assert (written - expected).abs().max() <= 0.5 / 65535 + 1e-6  # the network's output to 16 bits, not 8
    assert (written * 255 - (written * 255).round()).abs().max() > 0.01
    if tifffile is not None:
        assert tifffile.imread(out / "t.tif").dtype == np.uint16
    _assert_scores_are_of_the_written_files(setup, out, _rows(out))
    # --format png keeps 16 bits too (the TIFF becomes a 16-bit PNG); JPEG holds 8 bits only.
    assert cli.main(["infer", "--checkpoint", str(setup["enhancer"]), "--data", str(data), "--out",
                     str(tmp_path / "png"), "--format", "png", "--no-progress"]) == 0
    assert _png_bit_depth(tmp_path / "png" / "d.png") == 16
    if tifffile is not None:
        assert _png_bit_depth(tmp_path / "png" / "t.png") == 16


def test_images_too_small_to_score_are_said_once(setup, tmp_path, capsys):
    # Issue 38: a 1x1 image was written with blank scores in scores.csv and nothing said.
    data = tmp_path / "in"
    save_image(smooth_texture(40, 44, seed=1), data / "a.png")
    save_image(torch.full((3, 1, 1), 0.5), data / "dot.png")
    save_image(torch.full((3, 20, 64), 0.5), data / "strip.png")
    out = tmp_path / "out"
    code = cli.main(["infer", "--checkpoint", str(setup["enhancer"]), "--data", str(data), "--out", str(out),
                     "--attiqa-checkpoint", str(setup["quality"]), "--no-progress"])
    assert code == 0
    err = capsys.readouterr().err
    notes = [line for line in err.splitlines() if "not scored" in line]
    assert notes == ["attiqa-enhance infer: 2 image(s) smaller than 32x32 were enhanced but not scored "
                     "(empty scores in scores.csv): dot.png, strip.png"]
    rows = _rows(out)
    assert (out / "dot.png").is_file() and rows["dot.png"][f"{ATTRIBUTES[0]}_before"] == ""
    assert rows["a.png"][f"{ATTRIBUTES[0]}_before"] != ""
