"""Degradations go in the configured direction; augmentation keeps input and target aligned;
per-step randomness is a pure function of (seed, step, rank)."""

import pytest
import torch

from attiqa_train.sampling import StepBatchSampler
from enhancement.data import EnhanceDataset, list_items, list_pairs, load_validation, split_random_holdout
from enhancement.synthesis import (
    add_gaussian_noise,
    add_poisson_gaussian_noise,
    apply_color_cast,
    augment_together,
    darken,
    synthesize_low_light,
    synthesize_low_light_pair,
    synthesize_noise,
)

from enhancement_helpers import SHARED_DATA, smooth_texture, write_images, write_pairs


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.fixture
def clean():
    return torch.stack([smooth_texture(48, 64, seed=i) for i in range(4)])


def test_darken_known_value_and_direction(clean):
    out = darken(clean, torch.full((4,), 0.25), torch.full((4,), 1.0))
    assert torch.allclose(out, 0.25 * clean, atol=1e-6)
    darker = darken(clean, torch.full((4,), 0.25), torch.full((4,), 2.0))
    assert (darker <= out + 1e-6).all() and darker.mean() < out.mean()


@pytest.mark.parametrize("exposure", [(0.05, 0.1), (0.3, 0.5)])
def test_low_light_darkens_by_the_exposure_range(clean, exposure):
    low = synthesize_low_light(clean, gen(), exposure=exposure, gamma=(1.0, 1.0), color_cast=0.0)
    ratio = low.mean(dim=(1, 2, 3)) / clean.mean(dim=(1, 2, 3))
    # Noise averages out over the image; clipping at 0 can only add a little.
    assert (ratio > exposure[0] - 0.02).all() and (ratio < exposure[1] + 0.02).all()


def test_keep_leaves_some_images_at_their_exposure_and_changes_nothing_when_zero(clean):
    """``keep``: a kept image gets noise only (its mean stays), the others are darkened;
    ``keep=0`` draws nothing extra (the same images as before the option)."""
    batch = clean.repeat(8, 1, 1, 1)  # 32 images
    low = synthesize_low_light(batch, gen(2), exposure=(0.1, 0.2), shot_noise=(0, 0), read_noise=(0.001, 0.001),
                               keep=0.5)
    ratio = low.mean(dim=(1, 2, 3)) / batch.mean(dim=(1, 2, 3))
    kept = ratio > 0.9
    assert 4 <= int(kept.sum()) <= 28 and (ratio[~kept] < 0.25).all()
    assert (low[kept] - batch[kept]).abs().max() < 0.01  # noise only, no cast
    assert torch.equal(synthesize_low_light(clean, gen(3)), synthesize_low_light(clean, gen(3), keep=0.0))


def test_light_sources_are_bright_in_the_dark_shot_and_the_same_in_the_target(clean):
    """A lamp stays near white in the dark shot (the scene around it is darkened) and is
    pasted identically into the target; images without one are as before; 0 draws nothing."""
    batch = clean.repeat(4, 1, 1, 1)  # 16 images
    no_noise = dict(shot_noise=(0, 0), read_noise=(0, 0), color_cast=0.0, exposure=(0.1, 0.1), gamma=(1, 1))
    low, target = synthesize_low_light_pair(batch, gen(5), light_sources=0.5, **no_noise)
    plain = synthesize_low_light(batch, gen(5), **no_noise)
    lit = (target - batch).abs().flatten(1).amax(1) > 0  # images that got a light source
    assert 3 <= int(lit.sum()) <= 13
    assert torch.equal(target[~lit], batch[~lit]) and torch.allclose(low[~lit], plain[~lit])
    lamp = (low.amax(1) > 0.8) & lit[:, None, None]  # the lamps' cores in the dark shots
    assert lamp.any() and (plain.amax(1) < 0.11).all()  # without lamps nothing is that bright
    diff = (low - target).abs().amax(1)
    assert diff[lamp].max() < 0.15  # the lamp is the same in both (its soft edge blends a little)
    assert (diff[lit].mean() > 0.3) and low[lit].mean() < 0.5 * target[lit].mean()  # the scene is still dark
    assert torch.equal(synthesize_low_light(clean, gen(3)), synthesize_low_light(clean, gen(3), light_sources=0.0))


def test_the_single_output_synthesis_refuses_light_sources(clean):
    with pytest.raises(ValueError, match=r"light_sources > 0 paints the target too: use synthesize_low_light_pair, "
                                         r"got light_sources=0.3"):
        synthesize_low_light(clean, gen(), light_sources=0.3)


def test_bright_regions_keep_a_large_part_of_some_images_at_its_exposure(clean):
    """A backlit scene: inside one large region the dark shot is the clean photo, outside
    it is darkened as before; the target is untouched; 0 draws nothing."""
    batch = clean.repeat(4, 1, 1, 1)
    no_noise = dict(shot_noise=(0, 0), read_noise=(0, 0), color_cast=0.0, exposure=(0.1, 0.1), gamma=(1, 1))
    low = synthesize_low_light(batch, gen(4), bright_regions=0.5, **no_noise)
    plain = synthesize_low_light(batch, gen(4), **no_noise)
    restored = (low - batch).abs().amax(1) < 1e-6  # (B, H, W): pixels at their exposure
    share = restored.flatten(1).float().mean(1)
    lit = share > 0
    assert 3 <= int(lit.sum()) <= 13 and (share[lit] > 0.03).all() and (share < 0.5).all()
    untouched = (low - plain).abs().amax(1) < 1e-6
    assert (restored | untouched).flatten(1).float().mean(1).min() > 0.85  # the rest: a soft edge only
    assert torch.equal(low[~lit], plain[~lit])
    assert torch.equal(synthesize_low_light(clean, gen(3)), synthesize_low_light(clean, gen(3), bright_regions=0.0))


def test_a_synthesis_that_changes_the_target_reaches_the_dataset_and_validation(tmp_path):
    import functools

    write_images(tmp_path, 2, size=(48, 60))
    degrade = functools.partial(synthesize_low_light_pair, light_sources=1.0, exposure=(0.1, 0.1))
    ds = EnhanceDataset(list_items(tmp_path, "synthetic"), "synthetic", 32, degrade=degrade)
    item = ds[(0, 99)]
    from attiqa_loss.io import read_image

    (crop,) = augment_together([read_image(ds.items[0])], 32, gen(99))
    assert not torch.equal(item["target"], crop) and item["input"].amax() > 0.8  # a lamp in both
    val = load_validation(list_items(tmp_path, "synthetic"), "synthetic", degrade=degrade)
    assert all(v["input"].amax() > 0.8 and v["target"].shape == v["input"].shape for v in val)


def test_lower_exposure_range_is_darker(clean):
    dim = synthesize_low_light(clean, gen(1), exposure=(0.05, 0.1))
    bright = synthesize_low_light(clean, gen(1), exposure=(0.4, 0.5))
    assert dim.mean() < bright.mean() < clean.mean()


def test_color_cast_shifts_channels_not_mean(clean):
    gains = torch.tensor([[1.2, 1.0, 0.8]] * 4)
    out = apply_color_cast(clean * 0.5, gains)
    means = out.mean(dim=(0, 2, 3)) / (clean * 0.5).mean(dim=(0, 2, 3))
    assert torch.allclose(means, gains[0], atol=1e-5)
    no_noise = {"read_noise": (0, 0), "shot_noise": (0, 0)}
    low = synthesize_low_light(clean, gen(), exposure=(0.5, 0.5), gamma=(1, 1), color_cast=0.3, **no_noise)
    per_channel = low.mean(dim=(2, 3)) / (0.5 * clean).mean(dim=(2, 3))
    assert (per_channel.max(dim=1).values - per_channel.min(dim=1).values > 0.02).all()
    assert torch.allclose(low.mean(), 0.5 * clean.mean(), rtol=0.1)


def test_poisson_gaussian_variance_follows_signal():
    a, b = 0.02, 0.01
    levels = torch.tensor([0.1, 0.4, 0.8]).view(3, 1, 1, 1).expand(3, 3, 64, 64).contiguous()
    noisy = add_poisson_gaussian_noise(levels, torch.full((3,), a), torch.full((3,), b), gen())
    var = (noisy - levels).var(dim=(1, 2, 3))
    expected = a * torch.tensor([0.1, 0.4, 0.8]) + b * b
    assert torch.allclose(var, expected, rtol=0.1)
    assert var[0] < var[1] < var[2]


def test_gaussian_noise_has_the_configured_sigma():
    grey = torch.full((2, 3, 64, 64), 0.5)
    for sigma in (0.02, 0.08):
        noisy = synthesize_noise(grey, gen(), sigma=(sigma, sigma), poisson_probability=0.0)
        assert abs(float((noisy - grey).std()) - sigma) < 0.1 * sigma
    assert torch.equal(add_gaussian_noise(grey, torch.zeros(2), gen()), grey)


def test_more_noise_with_higher_levels(clean):
    weak = synthesize_noise(clean, gen(3), sigma=(0.01, 0.02), shot_noise=(0.001, 0.002), read_noise=(0.0, 0.01))
    strong = synthesize_noise(clean, gen(3), sigma=(0.1, 0.2), shot_noise=(0.03, 0.05), read_noise=(0.03, 0.05))
    assert (strong - clean).abs().mean() > 3 * (weak - clean).abs().mean()


def test_same_generator_same_result(clean):
    a = synthesize_low_light(clean, gen(7))
    assert torch.equal(a, synthesize_low_light(clean, gen(7)))
    assert not torch.equal(a, synthesize_low_light(clean, gen(8)))


def _coordinates(h, w):
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    return torch.stack([ys / h, xs / w, torch.zeros_like(ys)])


def test_augmentation_is_identical_for_input_and_target():
    target = _coordinates(40, 52)
    inp = target**2 + 0.1  # any pixel-wise function of the target
    seen = set()
    for seed in range(12):
        a, b = augment_together([inp, target], 24, gen(seed))
        assert a.shape == b.shape == (3, 24, 24)
        assert torch.equal(a, b**2 + 0.1)
        corner = (round(float(b[0, 0, 0]) * 40), round(float(b[1, 0, 0]) * 52))
        seen.add((corner, bool(b[0, 0, 1] != b[0, 0, 0])))
    assert len(seen) > 4  # crops, flips and turns really vary


def test_augmentation_switches_and_upscaling():
    image = _coordinates(40, 52)
    for seed in range(8):
        (out,) = augment_together([image], 24, gen(seed), flips=False, rot90=False)
        # Without flips/turns a crop keeps rows increasing downwards and columns rightwards.
        assert (out[0, 1:, 0] > out[0, :-1, 0]).all() and (out[1, 0, 1:] > out[1, 0, :-1]).all()
    (small,) = augment_together([torch.rand(3, 20, 30)], 32, gen())
    assert small.shape == (3, 32, 32)
    with pytest.raises(ValueError, match="must share one shape"):
        augment_together([torch.rand(3, 40, 40), torch.rand(3, 40, 41)], 32, gen())


def test_synthetic_dataset_degrades_the_input_only(tmp_path):
    write_images(tmp_path, 2, size=(48, 60))
    ds = EnhanceDataset(list_items(tmp_path, "synthetic"), "synthetic", 32, degrade=synthesize_low_light)
    item = ds[(1, 1234)]
    from attiqa_loss.io import read_image

    (expected,) = augment_together([read_image(ds.items[1])], 32, gen(1234))
    assert torch.equal(item["target"], expected)  # the clean crop, untouched
    assert item["input"].mean() < 0.6 * item["target"].mean()
    assert torch.equal(ds[(1, 1234)]["input"], item["input"])  # (index, seed) fixes everything


def test_paired_dataset_keeps_pairs_aligned(tmp_path):
    write_pairs(tmp_path, 3, size=(40, 50))
    ds = EnhanceDataset(list_items(tmp_path, "paired"), "paired", 32)
    for seed in range(4):
        item = ds[(seed % 3, seed)]
        assert (item["input"] - 0.5 * item["target"]).abs().max() <= 1.01 / 255
    unpaired = EnhanceDataset(list_items(tmp_path / "low", "unpaired"), "unpaired", 32)
    assert set(unpaired[(0, 0)]) == {"input"}


def test_list_pairs_reports_unmatched_names(tmp_path):
    write_pairs(tmp_path, 2)
    (tmp_path / "high" / "p01.png").rename(tmp_path / "high" / "other.png")
    with pytest.raises(ValueError, match=r"only in low/: \['p01'\], only in high/: \['other'\]"):
        list_pairs(tmp_path)
    with pytest.raises(FileNotFoundError, match="paired data needs"):
        list_pairs(tmp_path / "high")


def test_holdout_split_is_disjoint_and_checked(tmp_path):
    items = write_images(tmp_path, 5, size=(36, 36))
    train, val = split_random_holdout(items, 2, seed=0)
    assert len(val) == 2 and not set(train) & set(val) and set(train) | set(val) == set(items)
    assert split_random_holdout(items, 2, seed=0) == (train, val)
    with pytest.raises(ValueError, match="needs at least 6 images, found 5"):
        split_random_holdout(items, 5, seed=0)


def test_step_batches_depend_only_on_seed_step_rank():
    full = list(StepBatchSampler(10, 3, seed=1, rank=0, start_step=0, steps=6))
    resumed = list(StepBatchSampler(10, 3, seed=1, rank=0, start_step=4, steps=6))
    assert resumed == full[4:] and len(full) == 6
    other_rank = list(StepBatchSampler(10, 3, seed=1, rank=1, start_step=0, steps=6))
    assert other_rank != full


def test_validation_inputs_are_fixed(tmp_path):
    items = write_images(tmp_path, 2, size=(50, 70))
    a = load_validation(items, "synthetic", crop_size=40, degrade=synthesize_noise, seed=3)
    b = load_validation(items, "synthetic", crop_size=40, degrade=synthesize_noise, seed=3)
    assert a[0]["input"].shape == (3, 40, 40)
    assert all(torch.equal(x["input"], y["input"]) for x, y in zip(a, b))
    assert not torch.equal(a[0]["input"], a[0]["target"])


@pytest.mark.skipif(not (SHARED_DATA / "pristine" / "bsd300_test").is_dir(), reason="../shared/data is not present")
def test_real_photo_low_light_is_darker_and_noisier():
    items = list_items(SHARED_DATA / "pristine" / "bsd300_test", "synthetic")[:2]
    ds = EnhanceDataset(items, "synthetic", 128, degrade=synthesize_low_light)
    for i in range(2):
        item = ds[(i, i)]
        assert item["input"].mean() < 0.6 * item["target"].mean()
