"""attiqa_loss.measures: the classic no-reference measures and NIQE (fast, CPU, no downloads)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

import attiqa_loss
from attiqa_loss import measures as M
from helpers import make_texture


def _gamma(v: float) -> float:
    return math.gamma(v)


def _ggd_samples(alpha: float, n: int, seed: int) -> torch.Tensor:
    """Unit-scale GGD: |x| = Gamma(1/alpha, 1)^(1/alpha), random signs."""
    torch.manual_seed(seed)
    g = torch.distributions.Gamma(torch.tensor(1 / alpha, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64))
    magnitude = g.sample((n,)) ** (1 / alpha)
    return magnitude * torch.where(torch.rand(n) < 0.5, -1.0, 1.0).double()


@pytest.mark.parametrize("alpha", [0.8, 1.0, 2.0])
def test_ggd_moment_matching_recovers_the_shape(alpha):
    x = _ggd_samples(alpha, 200_000, seed=int(alpha * 10))
    shape, var = M.ggd_fit(x)
    assert shape.dtype == torch.float64
    # within 4 %: the three shapes are 20 % or more apart, so a wrong ratio formula fails
    assert float(shape) == pytest.approx(alpha, rel=0.04)
    assert float(var) == pytest.approx(_gamma(3 / alpha) / _gamma(1 / alpha), rel=0.02)  # b = 1


def test_ggd_fit_is_batched_over_the_last_dimension():
    x = torch.stack([_ggd_samples(1.0, 50_000, 1), _ggd_samples(2.0, 50_000, 2)])
    shape, var = M.ggd_fit(x)
    assert shape.shape == (2,) and var.shape == (2,)
    assert shape[0] == pytest.approx(1.0, rel=0.05) and shape[1] == pytest.approx(2.0, rel=0.05)
    assert torch.isnan(M.ggd_fit(torch.zeros(10))[0])  # all-zero sample: undefined shape


def test_aggd_fit_recovers_left_and_right_variances():
    nu, bl, br, n = 1.5, 0.5, 1.5, 300_000
    torch.manual_seed(3)
    g = torch.distributions.Gamma(torch.tensor(1 / nu, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64))
    magnitude = g.sample((n,)) ** (1 / nu)
    left = torch.rand(n, dtype=torch.float64) < bl / (bl + br)  # an AGGD's mass on each side
    x = torch.where(left, -bl * magnitude, br * magnitude)
    shape, eta, lvar, rvar = M.aggd_fit(x)
    ratio = _gamma(3 / nu) / _gamma(1 / nu)
    assert float(lvar) == pytest.approx(bl**2 * ratio, rel=0.03)
    assert float(rvar) == pytest.approx(br**2 * ratio, rel=0.03)
    assert float(shape) == pytest.approx(nu, rel=0.05)
    assert float(eta) == pytest.approx((br - bl) * _gamma(2 / nu) / _gamma(1 / nu), rel=0.05)
    assert float(eta) == pytest.approx(float(x.mean()), rel=0.05)  # eta is the mean of the AGGD
    # mirrored sample: variances swap, mean flips sign, shape unchanged
    s2, e2, l2, r2 = M.aggd_fit(-x)
    assert float(l2) == pytest.approx(float(rvar)) and float(r2) == pytest.approx(float(lvar))
    assert float(e2) == pytest.approx(-float(eta)) and float(s2) == pytest.approx(float(shape))


def test_aggd_fit_one_sided_sample_has_zero_variance_on_the_empty_side():
    x = _ggd_samples(1.0, 10_000, 4).abs()
    shape, eta, lvar, rvar = M.aggd_fit(x)
    assert float(lvar) == 0 and float(rvar) > 0 and float(eta) > 0 and torch.isfinite(shape)


def test_mscn_of_a_constant_image_is_zero():
    y = torch.full((2, 1, 40, 50), 173.0, dtype=torch.float64)
    m, sigma = M.mscn(y)
    assert m.shape == y.shape and torch.equal(m, torch.zeros_like(m)) and torch.equal(sigma, torch.zeros_like(sigma))
    y[..., 20, 25] += 1.0  # one bright pixel: non-zero only within the window around it
    m, sigma = M.mscn(y)
    assert float(m[0, 0, 20, 25]) > 0 and float(m[0, 0, 20, 29]) == 0 and float(m[0, 0, 16, 25]) == 0
    assert float(m[0, 0, 20, 28]) < 0 and float(sigma[0, 0, 17, 22]) > 0


def test_mscn_matches_the_formula_at_an_interior_pixel():
    torch.manual_seed(0)
    y = torch.rand(1, 1, 21, 21, dtype=torch.float64) * 255
    m, sigma = M.mscn(y)
    i = j = 10
    k = torch.arange(-3, 4, dtype=torch.float64)
    w = torch.exp(-(k[:, None] ** 2 + k[None, :] ** 2) / (2 * (7 / 6) ** 2))
    w = w / w.sum()
    block = y[0, 0, i - 3:i + 4, j - 3:j + 4]
    mu = (w * block).sum()
    sd = (w * (block - mu) ** 2).sum().sqrt()
    assert float(sigma[0, 0, i, j]) == pytest.approx(float(sd), rel=1e-9)
    assert float(m[0, 0, i, j]) == pytest.approx(float((y[0, 0, i, j] - mu) / (sd + 1)), rel=1e-9)


def test_niqe_distance_closed_forms():
    a, b = torch.tensor([1.0, 4.0, 2.0], dtype=torch.float64), torch.tensor([0.5, 1.0, 3.0], dtype=torch.float64)
    d = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)
    m1 = torch.tensor([0.3, 0.1, -1.0], dtype=torch.float64)
    expected = math.sqrt(sum(float(d[i]) ** 2 / ((float(a[i]) + float(b[i])) / 2) for i in range(3)))
    got = M.niqe_distance(m1 + d, torch.diag(a), m1, torch.diag(b))
    assert got.dtype == torch.float64 and float(got) == pytest.approx(expected, rel=1e-12)
    assert float(M.niqe_distance(m1, torch.diag(b), m1 + d, torch.diag(a))) == pytest.approx(expected, rel=1e-12)
    assert float(M.niqe_distance(m1, torch.diag(a), m1, torch.diag(b))) == 0.0
    # the pseudo-inverse ignores the direction without variance: only the first component counts
    s = torch.diag(torch.tensor([1.0, 0.0]))
    assert float(M.niqe_distance(torch.tensor([3.0, 5.0]), s, torch.zeros(2), s)) == pytest.approx(3.0, rel=1e-12)


def test_niqe_is_zero_against_a_model_at_the_images_own_feature_mean():
    x = make_texture(64, 80, seed=1)[None]
    feats, _ = M.niqe_features(x, patch=16)
    assert feats.shape == (1, 4 * 5, M.NIQE_FEATURES) and bool(torch.isfinite(feats).all())
    own = M.NiqeModel(mean=feats[0].mean(0), cov=torch.eye(M.NIQE_FEATURES, dtype=torch.float64), patch=16)
    assert float(M.niqe(x, own)[0]) == pytest.approx(0.0, abs=1e-9)
    shifted = M.NiqeModel(mean=own.mean + 0.1, cov=own.cov, patch=16)
    assert float(M.niqe(x, shifted)[0]) > 0.1


def test_niqe_features_patch_layout_and_crop():
    # 70 x 90 with patch 16: cropped to 64 x 80, 4 x 5 patches; the cropped-off border changes nothing
    x = make_texture(70, 90, seed=2)[None]
    feats, sharp = M.niqe_features(x, patch=16)
    assert feats.shape == (1, 20, 36) and sharp.shape == (1, 20)
    torch.testing.assert_close(M.niqe_features(x[..., :64, :80], patch=16)[0], feats, rtol=0, atol=0)


def test_niqe_rejects_images_smaller_than_two_patches():
    with pytest.raises(ValueError, match=r"at least 192 x 192 pixels \(2 patches of 96 per side\), got 100 x 300"):
        M.niqe_features(torch.rand(1, 3, 100, 300), patch=96)
    model = M.NiqeModel(mean=torch.zeros(36, dtype=torch.float64), cov=torch.eye(36, dtype=torch.float64), patch=96)
    with pytest.raises(ValueError, match="got 191 x 400"):
        M.niqe(torch.rand(1, 3, 191, 400), model)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        M.niqe(torch.rand(3, 200, 200), model)


def test_fit_keeps_only_the_sharp_patches():
    # left half flat, right half noise: only the 4 x 2 textured patches pass 0.75 x the sharpest
    torch.manual_seed(0)
    x = torch.full((3, 64, 64), 0.5)
    x[:, :, 32:] = torch.rand(1, 64, 32).expand(3, -1, -1)
    model = M.fit_niqe([x], patch=16, sharpness_threshold=0.75)
    assert (model.metadata["n_images"], model.metadata["n_patches"], model.metadata["n_patches_seen"]) == (1, 8, 16)
    feats, sharp = M.niqe_features(x[None], patch=16)
    keep = sharp[0] > 0.75 * sharp[0].max()
    assert keep.view(4, 4)[:, 2:].all() and not keep.view(4, 4)[:, :2].any()
    torch.testing.assert_close(model.mean, feats[0, keep].mean(0))
    torch.testing.assert_close(model.cov, torch.cov(feats[0, keep].T))


def test_fit_save_load_round_trip_is_exact(tmp_path):
    images = [make_texture(64, 64, seed=s) for s in range(3)] + [torch.stack([make_texture(48, 80, seed=9)] * 2)]
    model = M.fit_niqe(images, patch=16, sharpness_threshold=0.5)
    assert model.metadata["n_images"] == 5 and model.metadata["patch"] == 16
    model.metadata["command"] = "fit on textures"
    path = model.save(tmp_path / "sub" / "niqe.safetensors")
    loaded = M.NiqeModel.load(path)
    assert torch.equal(loaded.mean, model.mean) and torch.equal(loaded.cov, model.cov)
    assert loaded.patch == 16 and loaded.metadata == model.metadata
    x = make_texture(64, 64, seed=7)[None]
    assert torch.equal(M.niqe(x, loaded), M.niqe(x, model))
    assert not [p for p in path.parent.iterdir() if p != path]  # no temporary file left


def _write_model(path: Path, mean: torch.Tensor, cov: torch.Tensor, **meta) -> Path:
    metadata = {"format": "attiqa-niqe", "format_version": "1", "patch": "96", "info": "{}", **meta}
    save_file({"mean": mean, "cov": cov}, str(path), metadata=metadata)
    return path


def test_strict_load_names_the_file_and_the_rule(tmp_path):
    good_mean, good_cov = torch.zeros(36, dtype=torch.float64), torch.eye(36, dtype=torch.float64)
    assert M.NiqeModel.load(_write_model(tmp_path / "ok.safetensors", good_mean, good_cov)).patch == 96
    cases = {
        "shape.safetensors": ((torch.zeros(35, dtype=torch.float64), good_cov, {}),
                              r"'mean' has shape \(35,\), expected \(36,\)"),
        "cov.safetensors": ((good_mean, torch.eye(36, 35, dtype=torch.float64), {}), r"'cov' has shape \(36, 35\)"),
        "nan.safetensors": ((good_mean.clone().index_fill_(0, torch.tensor([3]), float("nan")), good_cov, {}),
                            "'mean' holds non-finite values"),
        "asym.safetensors": ((good_mean, good_cov + torch.triu(torch.ones(36, 36, dtype=torch.float64), 1), {}),
                             "'cov' is not symmetric"),
        "format.safetensors": ((good_mean, good_cov, {"format": "attiqa"}), "is not a NIQE model"),
        "version.safetensors": ((good_mean, good_cov, {"format_version": "2"}), "format_version='2'"),
        "patch.safetensors": ((good_mean, good_cov, {"patch": "95"}), "malformed metadata"),
    }
    for name, ((mean, cov, meta), message) in cases.items():
        path = _write_model(tmp_path / name, mean, cov, **meta)
        with pytest.raises(ValueError, match=message) as info:
            M.NiqeModel.load(path)
        assert str(path) in str(info.value)
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="junk.safetensors is not a readable safetensors file"):
        M.NiqeModel.load(tmp_path / "junk.safetensors")
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        M.NiqeModel.load(tmp_path / "missing.safetensors")
    with pytest.raises(ValueError, match="non-finite"):
        M.NiqeModel(mean=good_mean * float("nan"), cov=good_cov).save(tmp_path / "bad.safetensors")
    assert not (tmp_path / "bad.safetensors").exists()


def test_shipped_model_loads_and_records_its_fit():
    path = M.default_niqe_path()
    assert path.is_file() and path.stat().st_size < 20_000
    model = M.NiqeModel.load(path)
    meta = model.metadata
    assert model.patch == 96 and meta["sharpness_threshold"] == 0.75
    assert meta["n_images"] == 230 and meta["n_patches"] > 1000
    assert meta["command"].startswith("python benchmarks/fit_niqe.py --images ")
    assert M._default_model() is M._default_model()  # loaded once
    assert attiqa_loss.niqe is M.niqe and attiqa_loss.NiqeModel is M.NiqeModel and attiqa_loss.fit_niqe is M.fit_niqe


def test_niqe_flat_patches_are_left_out_and_a_flat_image_is_nan():
    model = M.NiqeModel(mean=torch.zeros(36, dtype=torch.float64), cov=torch.eye(36, dtype=torch.float64), patch=16)
    x = make_texture(64, 64, seed=3)[None].repeat(2, 1, 1, 1)
    x[1] = 0.5
    s = M.niqe(x, model)
    assert s.dtype == torch.float64 and s.shape == (2,)
    assert math.isfinite(float(s[0])) and math.isnan(float(s[1]))


# ----------------------------------------------------------------------------- simple measures


def test_noise_sigma_estimates_added_gaussian_noise_on_a_flat_image():
    torch.manual_seed(0)
    for sigma in (0.01, 0.05):
        noise = torch.randn(2, 1, 256, 256) * sigma
        x = (0.5 + noise).expand(-1, 3, -1, -1)  # grey noise: the luminance carries all of it
        est = M.noise_sigma(x)
        assert est.shape == (2,)
        assert torch.all((est - sigma).abs() < 0.1 * sigma), (sigma, est)


def test_clipped_fraction():
    x = torch.full((1, 3, 10, 20), 0.5)
    x[..., :5, :] = 1.0
    assert M.clipped_fraction(x).dtype == torch.float64
    assert float(M.clipped_fraction(x)[0]) == 0.5
    y = torch.full((1, 3, 4, 4), 0.5)
    y[0, 2, 0, 0] = 0.0  # one channel crushed counts the pixel
    y[0, 0, 0, 1] = 1 / 255  # 8-bit level 1: at the default limit
    y[0, 1, 0, 2] = 2 / 255  # level 2: not clipped
    y[0, 0, 0, 3] = 254 / 255  # level 254: at the upper limit
    y[0, :, 1, 0] = 253 / 255
    assert float(M.clipped_fraction(y)[0]) == 3 / 16
    assert float(M.clipped_fraction(y, low=0.0, high=1.0)[0]) == 1 / 16
    with pytest.raises(ValueError, match="low < high"):
        M.clipped_fraction(y, low=0.6, high=0.4)


def test_mean_luminance_and_rms_contrast_by_hand():
    x = torch.zeros(1, 3, 2, 2)
    x[0, 0] = 1.0  # pure red: Y = 0.299
    assert float(M.mean_luminance(x)[0]) == pytest.approx(0.299)
    x[0, :, 0, :] = 1.0  # top row white: Y = (1, 1, 0.299, 0.299)
    assert float(M.mean_luminance(x)[0]) == pytest.approx((2 + 2 * 0.299) / 4)
    assert float(M.rms_contrast(x)[0]) == pytest.approx(float(torch.tensor([1, 1, 0.299, 0.299]).std()))
    assert float(M.colourfulness(torch.full((1, 3, 8, 8), 0.3))[0]) == 0.0  # grey


def test_colour_cast_by_hand_and_a_tint_moves_only_the_cast_term():
    tint = torch.tensor([0.6, 0.4, 0.5]).view(1, 3, 1, 1).expand(1, 3, 4, 4)  # rg = 0.2, yb = 0.5 - 0.5 = 0
    assert float(M.colour_cast(tint)[0]) == pytest.approx(0.2)
    assert float(M.colour_cast(torch.full((1, 3, 4, 4), 0.7))[0]) == 0.0  # grey
    # a textured grey-world image, then the same with a uniform yellow tint (R, G up, B down):
    g = torch.Generator().manual_seed(0)
    x = 0.3 + 0.4 * torch.rand(1, 3, 16, 16, generator=g)
    x = x - x.mean(dim=(2, 3), keepdim=True) + 0.5  # every channel's mean 0.5: no cast
    tinted = x + torch.tensor([0.05, 0.05, -0.1]).view(1, 3, 1, 1)  # yb mean 0.15, rg mean 0
    assert float(M.colour_cast(x)[0]) == pytest.approx(0.0, abs=1e-6)
    assert float(M.colour_cast(tinted)[0]) == pytest.approx(0.15, abs=1e-6)
    # colourfulness = spread + 0.3 cast, and the tint leaves the spread alone
    spread = lambda im: float(M.colourfulness(im)[0] - 0.3 * M.colour_cast(im)[0])  # noqa: E731
    assert spread(tinted) == pytest.approx(spread(x), abs=1e-6)
    assert float(M.colourfulness(tinted)[0] - M.colourfulness(x)[0]) == pytest.approx(0.3 * 0.15, abs=1e-6)


def test_handcrafted_pretrain_measures_are_these():
    pytest.importorskip("kornia")
    from pretrain.diagnostics.handcrafted import handcrafted_scores

    x = torch.stack([make_texture(40, 48, seed=s) for s in range(3)])
    expected = torch.stack([M.laplacian_variance(x), M.rms_contrast(x), M.mean_luminance(x), M.colourfulness(x),
                            -M.noise_sigma(x)], dim=1)
    assert torch.equal(handcrafted_scores(x), expected)


# ----------------------------------------------------------------------------- directions on photos


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    r = int(3 * sigma + 0.5)
    t = torch.arange(-r, r + 1, dtype=x.dtype)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = k / k.sum()
    x = F.pad(x, (r, r, r, r), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).repeat(3, 1, 1, 1), groups=3)
    return F.conv2d(x, k.view(1, 1, -1, 1).repeat(3, 1, 1, 1), groups=3)


@pytest.fixture(scope="module")
def photos():
    from helpers import skimage_photos

    return skimage_photos(("astronaut.png", "chelsea.png", "coffee.png"), height=288, width=384)


def test_niqe_rises_under_blur_and_strong_noise(photos):
    g = torch.Generator().manual_seed(0)
    clean = M.niqe(photos)
    blurred = M.niqe(_blur(photos, 2.0))
    noisy = M.niqe((photos + 0.15 * torch.randn(photos.shape, generator=g)).clamp(0, 1))
    assert clean.shape == (3,) and bool(torch.isfinite(clean).all())
    assert torch.all(blurred > clean + 2), (clean, blurred)
    assert torch.all(noisy > clean + 2), (clean, noisy)


def test_simple_measures_follow_their_degradation(photos):
    y = M.luminance(photos)
    grey = 0.3 * photos + 0.7 * y  # desaturated
    assert torch.all(M.colourfulness(grey) < 0.5 * M.colourfulness(photos))
    assert torch.all(M.laplacian_variance(_blur(photos, 1.5)) < 0.5 * M.laplacian_variance(photos))
    assert torch.all(M.rms_contrast(0.5 + 0.5 * (photos - 0.5)) < M.rms_contrast(photos))
    assert torch.all(M.mean_luminance(photos * 0.5) < M.mean_luminance(photos))


def test_fit_niqe_script(tmp_path, monkeypatch, write_png, capsys):
    import importlib

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent.parent))
    script = importlib.import_module("benchmarks.fit_niqe")
    for i in range(3):
        write_png(tmp_path / "photos" / f"p{i}.png", 64, 72, seed=i)
    write_png(tmp_path / "photos" / "small.png", 20, 72, seed=5)
    out = tmp_path / "model.safetensors"
    args = ["--images", str(tmp_path / "photos"), "--out", str(out), "--patch", "16", "--no-progress", "--threads", "1"]
    assert script.main(args) == 0
    model = M.NiqeModel.load(out)
    meta = model.metadata
    assert model.patch == 16 and meta["n_images"] == 3 and meta["n_skipped_too_small"] == 1
    assert meta["command"] == "python benchmarks/fit_niqe.py " + " ".join(args)
    printed = capsys.readouterr()
    assert "3 photos (1 skipped)" in printed.out and "small.png (72 x 20)" in printed.err
    with pytest.raises(SystemExit) as info:
        script.main(["--help"])
    assert info.value.code == 0 and "--max-side" in capsys.readouterr().out
