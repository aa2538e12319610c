"""One image reader and one file lister for every command (issue 16, image reader):
16-bit precision, EXIF orientation and colour modes in the CLIP labeller as everywhere
else, a clear error for decompression bombs, and folders listed with what was skipped
and why. CPU only, nothing downloaded."""

from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from attiqa_loss.io import read_image

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- writers


def _paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else b if pb <= pc else c


def write_png16(path: Path, arr: np.ndarray, filters=(0,)) -> Path:
    """A 16-bit PNG (grey, grey+alpha, RGB or RGBA by the channel count) whose rows use
    the PNG filter types in ``filters`` in turn (Pillow cannot write 16-bit colour)."""
    arr = np.asarray(arr, dtype=np.uint16)
    h, w = arr.shape[:2]
    channels = 1 if arr.ndim == 2 else arr.shape[2]
    bpp = 2 * channels
    data = arr.astype(">u2").reshape(h, w * bpp // 2).view(np.uint8).reshape(h, w * bpp).astype(np.int32)
    rows, prev = [], np.zeros(w * bpp, dtype=np.int32)
    for y in range(h):
        kind, line = filters[y % len(filters)], data[y]
        out = np.zeros_like(line)
        for i in range(len(line)):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            pred = [0, a, b, (a + b) // 2, _paeth(a, b, c)][kind]
            out[i] = (line[i] - pred) & 0xFF
        rows.append(bytes([kind]) + out.astype(np.uint8).tobytes())
        prev = line

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    colour = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, colour, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"".join(rows))) + chunk(b"IEND", b""))
    return path


def _deep(h, w, channels=3, seed=0):
    """uint16 values that an 8-bit reading cannot reproduce (steps far below 1/255)."""
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 65536, size=(h, w, channels), dtype=np.int64)
    return (arr if channels > 1 else arr[..., 0]).astype(np.uint16)


def _sideways_jpeg(path: Path, orientation: int = 6) -> Path:
    """24 wide x 16 high, red left band, EXIF says "rotate 90 degrees clockwise"."""
    arr = np.zeros((16, 24, 3), dtype=np.uint8)
    arr[:, :8] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(arr).save(path, quality=100, exif=exif.tobytes())
    return path


# --------------------------------------------------------------------------- deep images


@pytest.mark.parametrize("channels", [3, 4, 2], ids=["rgb", "rgba", "grey-alpha"])
def test_16_bit_colour_png_keeps_its_precision(tmp_path, channels):
    arr = _deep(20, 30, channels)
    t = read_image(write_png16(tmp_path / "deep.png", arr))
    assert t.shape == (3, 20, 30) and t.dtype == torch.float32
    want = torch.from_numpy(arr.astype(np.float32) / 65535.0)
    if channels >= 3:
        torch.testing.assert_close(t, want[..., :3].permute(2, 0, 1), rtol=0, atol=0)
    else:  # grey + alpha: the grey channel three times, alpha dropped
        for c in range(3):
            torch.testing.assert_close(t[c], want[..., 0], rtol=0, atol=0)


@pytest.mark.parametrize("filters", [(0,), (1,), (2,), (3,), (4,), (0, 1, 2, 3, 4)],
                         ids=["none", "sub", "up", "average", "paeth", "mixed"])
def test_the_numpy_png_decoder_agrees_with_the_file(tmp_path, filters):
    from attiqa_loss.io import _decode_png16_numpy

    arr = _deep(7, 9, 3, seed=len(filters))
    path = write_png16(tmp_path / "f.png", arr, filters)
    np.testing.assert_array_equal(_decode_png16_numpy(path.read_bytes()), arr)


def test_16_bit_png_reads_without_torchvision(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_torchvision(name, *args, **kwargs):
        if name.startswith("torchvision"):
            raise ImportError("no torchvision here")
        return real_import(name, *args, **kwargs)

    arr = _deep(6, 5, 3)
    path = write_png16(tmp_path / "d.png", arr, (4, 1))
    monkeypatch.setattr(builtins, "__import__", no_torchvision)
    t = read_image(path)
    torch.testing.assert_close(t, torch.from_numpy(arr.astype(np.float32) / 65535.0).permute(2, 0, 1),
                               rtol=0, atol=0)


def _netpbm(path: Path, arr: np.ndarray, maxval: int) -> Path:
    h, w = arr.shape[:2]
    magic = b"P6" if arr.ndim == 3 else b"P5"
    path.write_bytes(magic + b"\n# a comment\n%d %d\n%d\n" % (w, h, maxval) + arr.astype(">u2").tobytes())
    return path


@pytest.mark.parametrize("colour", [False, True], ids=["pgm", "ppm"])
def test_16_bit_pgm_and_ppm_keep_their_precision(tmp_path, colour):
    arr = _deep(12, 10, 3 if colour else 1) // 16  # maxval 4095 (12-bit data)
    path = _netpbm(tmp_path / ("x.ppm" if colour else "x.pgm"), arr, 4095)
    t = read_image(path)
    want = torch.from_numpy(arr.astype(np.float32) / 4095.0)
    want = want.permute(2, 0, 1) if colour else want.expand(3, -1, -1)
    torch.testing.assert_close(t, want, rtol=0, atol=1e-7)


def test_16_bit_colour_tiff_keeps_its_precision(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    arr = _deep(10, 14, 3)
    tifffile.imwrite(tmp_path / "d.tif", arr)
    t = read_image(tmp_path / "d.tif")
    torch.testing.assert_close(t, torch.from_numpy(arr.astype(np.float32) / 65535.0).permute(2, 0, 1),
                               rtol=0, atol=0)


@pytest.mark.parametrize("suffix", [".png", ".ppm", ".tif"])
def test_save_image_writes_16_bits_where_asked(tmp_path, suffix):
    from attiqa_loss.io import save_image

    if suffix == ".tif":
        pytest.importorskip("tifffile")
    arr = _deep(9, 13, 3, seed=3)
    image = torch.from_numpy(arr.astype(np.float32) / 65535.0).permute(2, 0, 1)
    path = tmp_path / f"x{suffix}"
    save_image(image, path, bits=16)
    torch.testing.assert_close(read_image(path), image, rtol=0, atol=0)  # every 16-bit value back
    save_image(image, tmp_path / "x.jpg", bits=16)  # JPEG holds 8 bits: written as 8-bit, no error
    with Image.open(tmp_path / "x.jpg") as im:
        assert im.mode == "RGB"


def test_16_bit_image_is_resized_in_float(tmp_path):
    arr = _deep(40, 60, 3)
    t = read_image(write_png16(tmp_path / "d.png", arr), max_side=30)
    assert t.shape == (3, 20, 30)
    # a 2x2 box average of the 16-bit values, not of 8-bit truncations
    want = torch.from_numpy(arr.astype(np.float64) / 65535.0).permute(2, 0, 1)
    want = torch.nn.functional.avg_pool2d(want[None], 2)[0].float()
    torch.testing.assert_close(t, want, rtol=0, atol=2e-6)


@pytest.mark.parametrize("mode", ["CMYK", "1", "P+transparency", "I;16"])
def test_other_modes_become_rgb(tmp_path, mode):
    rgb = Image.fromarray((np.random.default_rng(0).random((36, 34, 3)) * 255).astype(np.uint8))
    if mode == "P+transparency":
        image = rgb.convert("P")
        image.info["transparency"] = 0
        path = tmp_path / "pt.png"
    elif mode == "I;16":
        image = Image.fromarray((np.asarray(rgb.convert("L"), dtype=np.uint16) * 257))
        path = tmp_path / "g16.tif"
    else:
        image = rgb.convert(mode)
        path = tmp_path / ("x.jpg" if mode == "CMYK" else "x.png")
    image.save(path)
    t = read_image(path)
    assert t.shape == (3, 36, 34) and 0 <= t.min() and t.max() <= 1
    if mode == "I;16":
        want = torch.from_numpy(np.asarray(rgb.convert("L"), dtype=np.float32) / 255).expand(3, -1, -1)
        torch.testing.assert_close(t, want, rtol=0, atol=1e-6)
    else:
        with Image.open(path) as im:
            want = torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1).float() / 255
        assert torch.equal(t, want)


# --------------------------------------------------------------------------- the CLIP labeller


def test_labeller_reads_a_16_bit_grey_png_like_its_8_bit_copy(tmp_path):
    from pretrain.clip.teacher import load_clip_image

    grey8 = (np.random.default_rng(1).random((48, 64)) * 255).round().astype(np.uint8)
    Image.fromarray(grey8).save(tmp_path / "g8.png")
    write_png16(tmp_path / "g16.png", grey8.astype(np.uint16) * 257)
    a = load_clip_image(tmp_path / "g8.png", (32, 32)).int()
    b = load_clip_image(tmp_path / "g16.png", (32, 32)).int()
    assert b.float().mean() < 200  # the old reader made it all white (255)
    # Resized in float and rounded once (Pillow's 8-bit bicubic rounds between its two
    # passes), so a few values of this noise image differ by a level or three.
    assert (a - b).abs().float().mean() < 0.5 and (a - b).abs().max() <= 3


def test_labeller_applies_exif_orientation(tmp_path):
    from pretrain.clip.teacher import load_clip_image

    path = _sideways_jpeg(tmp_path / "portrait.jpg")
    t = load_clip_image(path, (24, 16), "squash", draft=False).float() / 255  # (3, 24 high, 16 wide)
    assert t.shape == (3, 24, 16)
    assert t[0, :6].mean() > 0.9 and t[1, :6].mean() < 0.1  # the red band is on top, as viewers show it
    assert t[0, -12:].mean() < 0.1


def _old_load_clip_image(path, size, resize_mode="shortest", draft=True):
    """The labeller's decoding before it used the shared reader (for 8-bit RGB files)."""
    th, tw = size
    with Image.open(path) as im:
        if draft and im.format == "JPEG":
            im.draft("RGB", (tw, th) if resize_mode == "squash" else (max(th, tw), max(th, tw)))
        im = im.convert("RGB")
        w, h = im.size
        if resize_mode == "squash":
            im = im.resize((tw, th), Image.BICUBIC)
        else:
            short = min(th, tw)
            nw, nh = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
            if (nw, nh) != (w, h):
                im = im.resize((nw, nh), Image.BICUBIC)
            left, top = int(round((nw - tw) / 2.0)), int(round((nh - th) / 2.0))
            im = im.crop((left, top, left + tw, top + th))
        return torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
@pytest.mark.parametrize("size, mode", [((32, 32), "shortest"), ((24, 40), "squash"), ((48, 48), "shortest")])
def test_labeller_numerics_of_8_bit_rgb_files_are_unchanged(tmp_path, texture, suffix, size, mode):
    from attiqa_loss.io import save_image
    from pretrain.clip.teacher import load_clip_image

    path = tmp_path / f"x{suffix}"
    save_image(texture(150, 210, seed=4), path)
    for draft in (True, False):
        assert torch.equal(load_clip_image(path, size, mode, draft=draft), _old_load_clip_image(path, size, mode, draft))


# --------------------------------------------------------------------------- decompression bombs


def test_too_many_pixels_is_a_clear_error_naming_the_file(tmp_path, write_png):
    from attiqa_loss.io import ImageTooLarge

    path = write_png(tmp_path / "big.png", 48, 40)
    with pytest.raises(ImageTooLarge) as info:
        read_image(path, max_pixels=1000)
    message = str(info.value)
    assert isinstance(info.value, ValueError) and "\n" not in message
    assert message.startswith(f"{path}: 40x48 = 0.0 megapixels is more than the 0.0 megapixels")
    assert "decompression bombs" in message


def _bomb(path: Path, side: int = 15000) -> Path:
    """A 1-bit PNG of side x side pixels (over Pillow's limit) in a few kilobytes."""
    row = b"\x00" + b"\x00" * ((side + 7) // 8)

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    z = zlib.compressobj(9)
    body = b"".join(z.compress(row) for _ in range(side)) + z.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0))
                     + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path


def test_a_decompression_bomb_is_one_files_error_in_attiqa_score(image_folder, tiny_checkpoint_path, capsys):
    from attiqa_loss import cli

    folder = image_folder(sizes=((48, 40), (40, 48)))
    bomb = _bomb(folder / "bomb.png")
    code = cli.main([str(folder), "--checkpoint", str(tiny_checkpoint_path), "--format", "csv", "--no-progress"])
    out, err = capsys.readouterr()
    assert code == 1 and len(out.strip().splitlines()) == 3  # header + the two good images
    line = next(line for line in err.splitlines() if str(bomb) in line)
    assert "ImageTooLarge" in line and "decompression bomb" in line


def test_labeller_lists_a_decompression_bomb_as_skipped(tmp_path, write_png):
    from pretrain.clip.label_job import label_files
    from pretrain.clip.model import create_clip_teacher

    files = [write_png(tmp_path / "in" / "a.png", 64, 64), _bomb(tmp_path / "in" / "bomb.png")]
    teacher = create_clip_teacher(str(REPO / "configs" / "open_clip_tiny.json"), "none")
    manifest = label_files(files, tmp_path / "labels", teacher, workers=0, progress=False)
    assert manifest["counts"] == {"files": 2, "labelled": 1, "skipped": 1}
    assert manifest["skipped"][0]["error"].startswith("ImageTooLarge: ")


# --------------------------------------------------------------------------- the lister


@pytest.fixture
def odd_folder(tmp_path, write_png):
    """Images, a GIF, a symlinked folder, a dangling symlink, a loop and a text file."""
    root = tmp_path / "photos"
    write_png(root / "a.png")
    Image.fromarray((np.random.default_rng(0).random((40, 40, 3)) * 255).astype(np.uint8)).save(root / "anim.gif")
    write_png(tmp_path / "elsewhere" / "b.png", seed=2)
    os.symlink(tmp_path / "elsewhere", root / "linked")
    os.symlink(root / "gone.png", root / "dangling.png")
    os.symlink(root, root / "sub_loop")
    (root / "notes.txt").write_text("x")
    return root


@pytest.mark.skipif(os.name != "posix", reason="symlinks")
def test_scan_lists_gifs_and_symlinked_folders_and_says_what_it_skipped(odd_folder):
    from attiqa_loss.io import scan_images

    listing = scan_images([odd_folder])
    assert listing.files == [odd_folder / "a.png", odd_folder / "anim.gif", odd_folder / "linked" / "b.png"]
    reasons = {p.name: r for p, r in listing.skipped}
    assert reasons == {"dangling.png": "dangling symlink", "sub_loop": "folder already searched (reached again "
                       "through a symlink)", "notes.txt": "not an image file name (.txt)"}
    summary = listing.summary()
    assert summary.startswith("3 file(s) skipped: ")
    assert f"1 dangling symlink: {odd_folder / 'dangling.png'}" in summary
    assert "1 not an image file name (.txt)" in summary and "notes.txt" not in summary


@pytest.mark.skipif(os.name != "posix", reason="symlinks")
def test_scan_without_following_symlinks_skips_every_link(odd_folder):
    from attiqa_loss.io import scan_images

    listing = scan_images([odd_folder], follow_symlinks=False)
    assert listing.files == [odd_folder / "a.png", odd_folder / "anim.gif"]
    assert sorted(p.name for p, r in listing.skipped if r == "symlink (not followed)") == [
        "dangling.png", "linked", "sub_loop"]


@pytest.mark.skipif(os.name != "posix", reason="symlinks")
def test_a_file_reached_twice_is_listed_once(tmp_path, write_png):
    from attiqa_loss.io import scan_images

    write_png(tmp_path / "r" / "a.png")
    os.symlink(tmp_path / "r" / "a.png", tmp_path / "r" / "b.png")
    listing = scan_images([tmp_path / "r"])
    assert listing.files == [tmp_path / "r" / "a.png"]
    assert listing.skipped == [(tmp_path / "r" / "b.png", f"same file as {tmp_path / 'r' / 'a.png'}")]


def test_an_ordinary_folder_lists_as_it_always_did(tmp_path, write_png):
    from attiqa_loss.io import list_images

    for name in ("b/z.png", "a.JPG", "b/a/y.png", "c.jpeg", "d.bmp", "e.webp", "f.tif"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8)).save(tmp_path / name, format={"JPG": "JPEG", "JPEG": "JPEG"}.get(
            name.rsplit(".", 1)[1].upper(), None))
    expected = sorted(q for q in tmp_path.glob("**/*") if q.is_file())
    assert list_images([tmp_path]) == expected


@pytest.mark.skipif(os.name != "posix", reason="symlinks")
def test_attiqa_score_counts_what_it_skipped(odd_folder, tiny_checkpoint_path, capsys):
    from attiqa_loss import cli

    code = cli.main([str(odd_folder), "--checkpoint", str(tiny_checkpoint_path), "--format", "csv", "--no-progress"])
    out, err = capsys.readouterr()
    assert code == 0
    assert sorted(line.split(",")[0] for line in out.splitlines()[1:]) == sorted(
        str(p) for p in (odd_folder / "a.png", odd_folder / "anim.gif", odd_folder / "linked" / "b.png"))
    assert f"attiqa-score: 3 file(s) skipped: 1 dangling symlink: {odd_folder / 'dangling.png'}" in err


@pytest.mark.skipif(os.name != "posix", reason="symlinks")
def test_labeller_records_what_the_listing_skipped(odd_folder, tmp_path, capsys):
    from pretrain.cli import main

    out = tmp_path / "labels"
    main(["label", "--out", str(out), "--images", str(odd_folder), "--workers", "0",
          "--clip-model", str(REPO / "configs" / "open_clip_tiny.json"), "--clip-pretrained", "none",
          "--set", "label.device=cpu"])
    err = capsys.readouterr().err
    assert "attiqa-pretrain label: 3 file(s) skipped: 1 dangling symlink" in err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["labelled"] == 3
    assert {Path(s["path"]).name: s["reason"] for s in manifest["listing_skipped"]}["dangling.png"] == "dangling symlink"


@pytest.mark.skipif(os.name != "posix", reason="symlinks")
def test_infer_counts_what_it_skipped(odd_folder, tmp_path, capsys):
    from enhancement import cli
    from enhancement.unet import UNet
    from enhancement.weights import save_enhancer

    from enhancement_helpers import write_quality_model

    quality = write_quality_model(tmp_path / "q.safetensors")
    torch.manual_seed(0)
    enhancer = save_enhancer(UNet(width=4, depth=2, blocks=1), tmp_path / "e.safetensors",
                             training={"attiqa_checkpoint": str(quality)})
    code = cli.main(["infer", "--checkpoint", str(enhancer), "--data", str(odd_folder), "--out", str(tmp_path / "o"),
                     "--no-progress"])
    assert code == 0
    assert "attiqa-enhance infer: 3 file(s) skipped: 1 dangling symlink" in capsys.readouterr().err
    assert (tmp_path / "o" / "anim.gif").is_file() and (tmp_path / "o" / "linked" / "b.png").is_file()
