"""The enhancer shipped in the package: it loads offline, was trained by the committed
recipe, brightens a dark photo towards its clean version without clipping or a colour
shift, and leaves a well-exposed photo and a flat field alone.

Photos: scikit-image's bundled samples (installed with the dev extra), so these run on a
clone without ../shared. The darkening here is not the training synthesis (no noise, no
colour cast, one exposure and gamma), so these are held-out conditions too.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from attiqa_loss.measures import luminance
from enhancement.heldout import psnr
from enhancement.weights import DEFAULT_ENHANCER_PATH, load_enhancer

from helpers import skimage_photos

RECIPE = Path(__file__).resolve().parent.parent / "configs" / "enhance_shipped.yaml"


@pytest.fixture(scope="module")
def enhancer():
    return load_enhancer()


@pytest.fixture(scope="module")
def photos():
    # well-exposed daylight photos (mean luminance 0.39 to 0.49); rocket.jpg, a dusk shot at 0.24,
    # is brightened by the enhancer and is not one
    names = ["astronaut.png", "chelsea.png", "coffee.png", "motorcycle_left.png"]
    return skimage_photos(names, max_side=256, height=160, width=160)


def test_the_shipped_enhancer_is_in_the_package_and_small():
    assert DEFAULT_ENHANCER_PATH.is_file()
    assert DEFAULT_ENHANCER_PATH.stat().st_size <= 5_000_000


def test_the_shipped_enhancer_was_trained_by_the_committed_recipe(enhancer):
    """The weights record ``configs/enhance_shipped.yaml`` (the README's command), apart
    from the photo folder given with ``--data`` and the progress bar."""
    from attiqa_train.config import config_to_dict, load_config, with_current_keys

    from enhancement.config import EnhanceConfig

    recipe = config_to_dict(load_config(EnhanceConfig, RECIPE))
    defaults = config_to_dict(EnhanceConfig())  # keys added after the weights were trained read as their defaults
    # (keys renamed or moved since, such as val.every and amp: auto, under their current names and values)
    recorded = with_current_keys(EnhanceConfig, enhancer.training_info["config"])
    for section in ("model", "data", "loss", "train"):
        free = {"train_dir", "val_dir"} if section == "data" else {"progress"}
        want = {k: v for k, v in recipe[section].items() if k not in free}
        got = {k: recorded[section].get(k, defaults[section][k]) for k in want}
        for k, v in got.items():  # a nested section (data.lowlight): its later keys read as their defaults too
            if isinstance(v, dict) and isinstance(defaults[section][k], dict):
                got[k] = {**defaults[section][k], **v}
        assert got == want, section
    assert enhancer.training_info["steps"] == recipe["train"]["steps"]
    assert enhancer.output == "gain" and enhancer.gain_param == "log" and enhancer.global_context


def test_a_dark_photo_comes_out_brighter_closer_to_the_clean_one_and_unclipped(enhancer, photos):
    dark = (photos * 0.12).pow(1.3)
    with torch.no_grad():
        out = enhancer(dark)
    lum_dark, lum_out, lum_clean = (luminance(t).flatten(1).mean(1) for t in (dark, out, photos))
    assert bool((lum_out > lum_dark + 0.1).all()), (lum_dark, lum_out)
    assert bool((lum_out < lum_clean + 0.15).all()), (lum_out, lum_clean)  # not over-exposed
    assert bool((psnr(out, photos) > psnr(dark, photos) + 5).all())
    # no clipping: hardly a pixel at white that was not white in the clean photo
    assert float((out.amax(1) > 0.99).float().mean()) <= float((photos.amax(1) > 0.99).float().mean()) + 0.01


def test_a_dark_photo_keeps_its_colours(enhancer, photos):
    """A gain scales R, G and B alike (up to the small residual): chromaticity is kept."""
    dark = photos * 0.15
    with torch.no_grad():
        out = enhancer(dark)

    def chroma(x):  # r and g over the sum, where a pixel is not near black
        total = x.sum(1, keepdim=True)
        return (x[:, :2] / total.clamp_min(1e-3)), total

    c_dark, total = chroma(dark)
    c_out, _ = chroma(out)
    lit = (total > 0.15).expand_as(c_dark)
    assert float((c_out - c_dark).abs()[lit].mean()) < 0.02


def test_a_well_exposed_photo_is_left_nearly_alone(enhancer, photos):
    with torch.no_grad():
        out = enhancer(photos)
    assert bool((psnr(out, photos) > 20).all()), psnr(out, photos)


def test_a_flat_field_stays_flat(enhancer):
    flat = torch.full((1, 3, 96, 96), 0.08) * torch.tensor([1.0, 0.8, 0.6]).view(1, 3, 1, 1)
    with torch.no_grad():
        out = enhancer(flat)
    assert float(out.mean()) > float(flat.mean())  # brightened ...
    assert float(out[..., 8:-8, 8:-8].std(dim=(-2, -1)).max()) < 0.01  # ... and still flat inside


def test_a_bright_object_does_not_darken_the_dark_background_around_it(enhancer):
    """The same dark background should get the same gain next to a bright square as far
    from it (no halo). The first shipped enhancer gave it 1.05 next to the square and 9.8
    in the corners: it read a bright neighbourhood as "already well exposed". The global
    context and the light sources of the recipe fixed it (docs/enhancement.md, "Halos")."""
    dark = torch.full((1, 3, 256, 256), 0.05) * torch.tensor([1.0, 0.9, 0.8]).view(1, 3, 1, 1)
    dark[..., 104:152, 104:152] = 0.9
    with torch.no_grad():
        gain = (enhancer(dark) / dark).mean(1)[0]
    near = torch.zeros(256, 256, dtype=torch.bool)
    near[88:168, 88:168] = True
    near[100:156, 100:156] = False  # a ring of background 4 to 16 px from the square
    far = gain[:40, :40]
    assert float(gain[near].mean()) >= 0.7 * float(far.mean())
