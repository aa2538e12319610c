"""attiqa_loss.io: atomic writes, image discovery, decoding and encoding."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from attiqa_loss.io import ImageFiles, atomic_path, atomic_write, list_images, read_image, save_image


# --------------------------------------------------------------------------- atomic writes


def test_atomic_write_replaces_on_success(tmp_path):
    target = tmp_path / "deep" / "out.txt"
    with atomic_write(target, "w") as f:
        f.write("first")
        assert not target.exists(), "the destination must not appear before the block ends"
    assert target.read_text() == "first"
    with atomic_write(target, "w") as f:
        f.write("second")
    assert target.read_text() == "second"
    assert os.listdir(target.parent) == ["out.txt"]


@pytest.mark.parametrize("error", [RuntimeError("boom"), KeyboardInterrupt()])
def test_atomic_write_keeps_old_file_on_failure(tmp_path, error):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(type(error)):
        with atomic_write(target) as f:
            f.write(b"half of the new")
            raise error
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["out.bin"]


def test_atomic_path_success_and_failure(tmp_path):
    target = tmp_path / "model.bin"
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp != target
        tmp.write_bytes(b"v1")
    assert target.read_bytes() == b"v1"
    with pytest.raises(OSError, match="disk full"):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"partial")
            raise OSError("disk full")
    assert target.read_bytes() == b"v1"
    assert os.listdir(tmp_path) == ["model.bin"]


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
@pytest.mark.parametrize("umask, expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_files_get_ordinary_permissions(tmp_path, umask, expected):
    old = os.umask(umask)
    try:
        with atomic_write(tmp_path / "a.txt", "w") as f:
            f.write("x")
        with atomic_path(tmp_path / "b.bin") as tmp:
            tmp.write_bytes(b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == expected
    assert (tmp_path / "b.bin").stat().st_mode & 0o777 == expected


# --------------------------------------------------------------------------- listing


def test_list_images(tmp_path, write_png):
    a = write_png(tmp_path / "b" / "a.png")
    upper = tmp_path / "b" / "UPPER.JPG"
    Image.new("RGB", (40, 40)).save(upper, format="JPEG")
    nested = write_png(tmp_path / "b" / "x" / "y" / "z.png")
    (tmp_path / "b" / "notes.txt").write_text("x")
    odd = tmp_path / "odd.data"
    odd.write_bytes(b"kept because it is named explicitly")
    found = list_images([tmp_path / "b", odd, a])
    assert found == [tmp_path / "b" / "UPPER.JPG", a, nested, odd]
    assert list_images([tmp_path / "b"], recursive=False) == [upper, a]


def test_list_images_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"no such file or folder: {tmp_path / 'gone'}"):
        list_images([tmp_path / "gone"])


def test_list_images_skips_temporary_files(tmp_path, write_png):
    write_png(tmp_path / "a.png")
    (tmp_path / ".a.png.abc123.tmp").write_bytes(b"an interrupted atomic write")
    assert [p.name for p in list_images([tmp_path])] == ["a.png"]


# --------------------------------------------------------------------------- decoding


def test_png_round_trip_is_exact_in_8_bit(tmp_path, texture):
    img = (texture(40, 56, seed=3) * 255).round() / 255
    save_image(img, tmp_path / "t.png")
    back = read_image(tmp_path / "t.png")
    assert back.shape == (3, 40, 56) and back.dtype == torch.float32
    assert torch.equal(back, img)


def test_save_image_quantises_and_clamps(tmp_path):
    img = torch.full((3, 33, 35), 0.5)
    img[0] = 1.7  # clamped, not wrapped
    img[1] = -0.3
    save_image(img, tmp_path / "c.bmp")
    back = read_image(tmp_path / "c.bmp")
    assert back[0].unique().tolist() == [1.0] and back[1].unique().tolist() == [0.0]
    assert back[2].unique().tolist() == [pytest.approx(128 / 255, abs=1e-7)]


def test_save_image_errors(tmp_path):
    with pytest.raises(ValueError, match=r"expected a \(3, H, W\) image, got shape \(1, 3, 8, 8\)"):
        save_image(torch.rand(1, 3, 8, 8), tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"unknown image file extension '.xyz'"):
        save_image(torch.rand(3, 8, 8), tmp_path / "x.xyz")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "LA"])
def test_modes_become_rgb(tmp_path, mode):
    rgb = Image.fromarray((np.random.default_rng(0).random((36, 34, 3)) * 255).astype(np.uint8))
    path = tmp_path / f"{mode}.png"
    rgb.convert(mode).save(path)
    t = read_image(path)
    assert t.shape == (3, 36, 34) and 0 <= t.min() and t.max() <= 1
    expected = torch.from_numpy(np.array(rgb.convert(mode).convert("RGB"))).permute(2, 0, 1).float() / 255
    assert torch.equal(t, expected)


def test_16_bit_png_keeps_precision(tmp_path):
    arr = (np.arange(40 * 48).reshape(40, 48) * 31).astype(np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(arr).save(path)
    t = read_image(path)
    assert t.shape == (3, 40, 48)
    torch.testing.assert_close(t[1], torch.from_numpy(arr.astype(np.float32) / 65535))
    assert torch.equal(t[0], t[2])
    # neighbouring values differ by 31/65535, far below one 8-bit step
    assert (t[0, 0, 1] - t[0, 0, 0]).item() == pytest.approx(31 / 65535, rel=1e-4)


def test_exif_orientation_is_applied(tmp_path):
    # A portrait shot stored sideways: 24 wide x 16 high, with orientation 6 ("rotate 90
    # degrees clockwise to view"). Its red left band ends up at the top.
    arr = np.zeros((16, 24, 3), dtype=np.uint8)
    arr[:, :8] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "portrait.jpg"
    Image.fromarray(arr).save(path, quality=100, exif=exif.tobytes())
    t = read_image(path)
    assert t.shape == (3, 24, 16)
    assert t[0, :6].mean() > 0.9 and t[1, :6].mean() < 0.1  # top band red
    assert t[0, -14:].mean() < 0.1  # the rest dark
    # without the tag the same pixels read as stored
    Image.fromarray(arr).save(tmp_path / "plain.jpg", quality=100)
    assert read_image(tmp_path / "plain.jpg").shape == (3, 16, 24)


@pytest.mark.parametrize("bits16", [False, True])
def test_max_side(tmp_path, write_png, bits16):
    path = tmp_path / "big.png"
    if bits16:
        Image.fromarray((np.random.default_rng(0).random((100, 60)) * 65535).astype(np.uint16)).save(path)
    else:
        write_png(path, 100, 60)
    assert read_image(path, max_side=50).shape == (3, 50, 30)
    assert read_image(path, max_side=200).shape == (3, 100, 60)  # never upscaled
    small = read_image(path, max_side=50)
    assert 0 <= small.min() and small.max() <= 1
    # area filter: the mean brightness survives downscaling
    assert small.mean().item() == pytest.approx(read_image(path).mean().item(), abs=2e-3)


def test_unreadable_file_raises(tmp_path):
    path = tmp_path / "broken.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 50)
    with pytest.raises((OSError, ValueError)):
        read_image(path)


def test_truncated_jpeg_raises(tmp_path, texture):
    path = tmp_path / "cut.jpg"
    save_image(texture(64, 64), path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises((OSError, ValueError)):
        read_image(path)


# --------------------------------------------------------------------------- dataset


def test_image_files_reports_failures(tmp_path, write_png):
    good = write_png(tmp_path / "good.png", 40, 36)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"nope")
    ds = ImageFiles([good, bad, tmp_path / "missing.png"])
    assert len(ds) == 3
    image, path, error = ds[0]
    assert image.shape == (3, 40, 36) and path == str(good) and error == ""
    image, path, error = ds[1]
    assert image is None and path == str(bad) and error.startswith("UnidentifiedImageError")
    image, _, error = ds[2]
    assert image is None and error.startswith("FileNotFoundError")
    loader = torch.utils.data.DataLoader(ds, batch_size=3, collate_fn=ImageFiles.collate)
    (batch,) = list(loader)
    assert [item[0] is None for item in batch] == [False, True, True]
