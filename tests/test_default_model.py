"""The embedded default model: it loads offline and each score moves the right way.

Photos: scikit-image's bundled samples (installed with the dev extra), so these run on a
clone without ../shared. Directions are checked per photo, on degradations the model
was trained on and on some it never saw.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from attiqa_loss import ATTRIBUTES, AttiqaLoss, default_checkpoint_path, load_attiqa, read_checkpoint_metadata
from pretrain.degrade.families import degrade

from helpers import skimage_photos

pytestmark = pytest.mark.skipif(not default_checkpoint_path().is_file(), reason="no embedded default model")


@pytest.fixture(scope="module")
def photos():
    names = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg"]
    return skimage_photos(names, max_side=256, height=160, width=160)


@pytest.fixture(scope="module")
def net():
    return load_attiqa()


def test_default_model_metadata_describes_its_recipe():
    meta = read_checkpoint_metadata(default_checkpoint_path())
    assert meta["attributes"] == list(ATTRIBUTES)
    assert meta["backbone"] == "resnet10t"
    assert meta["training"]["teachers"] == ["synthetic"]
    assert default_checkpoint_path().stat().st_size <= 20_000_000


def test_default_model_was_trained_by_the_committed_recipe():
    """The shipped weights record the same recipe as ``configs/pretrain_synthetic.yaml``
    (the README's command), apart from the photo folder given with ``--images`` and the
    machine's settings (``train.threads``, ``train.device``), which choose where it ran,
    not what it learnt."""
    from attiqa_train.config import config_to_dict, load_config, with_current_keys
    from pretrain.diagnostics.ship_rule import RUNTIME_KEYS
    from pretrain.training.config import PretrainConfig

    recipe = config_to_dict(load_config(PretrainConfig, Path(__file__).resolve().parent.parent
                                        / "configs" / "pretrain_synthetic.yaml"))
    # (keys renamed since the model was trained, such as train.checkpoint_every, under their new names)
    recorded = with_current_keys(PretrainConfig, read_checkpoint_metadata(default_checkpoint_path())["training"]["config"])
    defaults = config_to_dict(PretrainConfig())  # keys added after the model was trained
    for section in ("model", "synthetic", "loss", "train", "hardening"):
        want = {k: v for k, v in recipe[section].items() if k not in RUNTIME_KEYS}
        got = {k: recorded.get(section, {}).get(k, defaults[section][k]) for k in want}
        assert got == want, section
        assert set(recorded.get(section, {})) <= set(want) | RUNTIME_KEYS, section


@pytest.mark.parametrize(
    "attribute, family, strength",
    [
        ("brightness", "exposure", 0.6),
        ("brightness", "gamma", 0.6),  # never seen in training
        ("sharpness", "gaussian", 0.6),
        ("sharpness", "defocus", 0.6),  # never seen
        ("sharpness", "motion", 0.6),  # never seen
        ("sharpness", "resample", 0.6),  # never seen
        ("sharpness", "texture", 0.8),
        ("sharpness", "median", 0.8),  # never seen
        ("sharpness", "pixelate", 0.6),  # never seen
        ("noisiness", "gaussian", 0.5),
        ("noisiness", "correlated", 0.5),
        ("noisiness", "pattern", 0.5),
        ("noisiness", "poisson_gaussian", 0.6),  # never seen
        ("colorfulness", "desaturate", 0.8),
        ("colorfulness", "hsv", 0.8),  # never seen
        ("contrast", "linear", 0.7),
        ("contrast", "haze", 0.7),  # never seen
    ],
)
@torch.no_grad()
def test_degrading_an_attribute_lowers_its_score_on_every_photo(net, photos, attribute, family, strength):
    a = ATTRIBUTES.index(attribute)
    before = net(photos)[:, a]
    after = net(degrade(photos, attribute, family, strength, torch.Generator().manual_seed(0)))[:, a]
    assert (after < before).all(), f"{attribute}/{family}: before {before.tolist()} after {after.tolist()}"


@pytest.mark.parametrize(
    "attribute, family",
    [("sharpness", "gaussian"), ("contrast", "linear"), ("brightness", "exposure"), ("colorfulness", "desaturate"),
     ("noisiness", "gaussian")],
)
@torch.no_grad()
def test_a_degradation_moves_its_own_score_most(net, photos, attribute, family):
    """Specificity: the other four scores move (on average over the photos) less than
    half as much as the degraded attribute's."""
    a = ATTRIBUTES.index(attribute)
    shift = (net(degrade(photos, attribute, family, 0.8, torch.Generator().manual_seed(0))) - net(photos)).mean(0)
    off = torch.cat([shift[:a], shift[a + 1:]]).abs()
    assert shift[a] < 0 and off.max() < 0.5 * shift[a].abs(), f"{attribute}/{family}: shifts {shift.tolist()}"


@torch.no_grad()
def test_jpeg_compression_lowers_the_mean_score(net, photos):
    """JPEG (never in training) at quality 10 lowers the mean of the five scores."""
    before = net(photos).mean(1)
    after = net(degrade(photos, "sharpness", "jpeg", 1.0)).mean(1)
    assert (after < before).all(), (before.tolist(), after.tolist())


@torch.no_grad()
def test_mixed_degradations_each_score_follows_its_own(net, photos):
    """Two degradations at once: blur on a noisy photo lowers sharpness on every photo
    (its noisiness may rise: blur does remove noise), noise on a blurred photo lowers
    noisiness on every photo and moves sharpness (on average) far less."""
    s, n = ATTRIBUTES.index("sharpness"), ATTRIBUTES.index("noisiness")
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    noisy = degrade(photos, "noisiness", "gaussian", 0.5, g())
    blurred = degrade(photos, "sharpness", "gaussian", 0.5, g())
    d_blur = net(degrade(noisy, "sharpness", "gaussian", 0.6, g())) - net(noisy)
    d_noise = net(degrade(blurred, "noisiness", "gaussian", 0.6, g())) - net(blurred)
    assert (d_blur[:, s] < 0).all() and (d_noise[:, n] < 0).all(), (d_blur.tolist(), d_noise.tolist())
    assert d_noise[:, s].mean().abs() < 0.4 * d_noise[:, n].mean().abs(), d_noise.mean(0).tolist()


def test_optimising_brightness_brightens_a_dark_image(photos):
    """AttiqaLoss as a training signal: gradient steps on the pixels of a dark photo,
    asking only for brightness, raise its mean luminance and its brightness score."""
    loss_fn = AttiqaLoss(weights={a: (1.0 if a == "brightness" else 0.0) for a in ATTRIBUTES})
    dark = degrade(photos[:2], "brightness", "exposure", 0.7)
    x = dark.clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=0.01)
    for _ in range(30):
        opt.zero_grad()
        loss_fn(x).backward()
        opt.step()
        with torch.no_grad():
            x.clamp_(0, 1)
    assert x.mean() > dark.mean() + 0.01
    assert (loss_fn.scores(x.detach())["brightness"] > loss_fn.scores(dark)["brightness"]).all()



def test_random_views_make_the_optimiser_change_brightness_not_a_pattern(photos):
    """Without views, pixel-space ascent raises the brightness score partly with a pattern
    tuned to the network rather than with real light; averaging random flips/shifts
    (``views=2``) must cut the score gained per unit of luminance gained by a fifth (the
    setup of ``benchmarks/views_robustness.py``). The hardened default is less
    pattern-driven without views (14.8 score per unit of luminance against the unhardened
    model's 22.5), so views now cut less (24% against 41%)."""
    from pretrain.diagnostics.views_probe import brightness_ascent

    plain, _ = brightness_ascent(photos[:2], views=0)
    viewed, _ = brightness_ascent(photos[:2], views=2)
    assert plain["luminance_gain"] > 0 and viewed["luminance_gain"] > 0 and viewed["score_gain"] > 0
    assert viewed["gain_per_luminance"] < 0.8 * plain["gain_per_luminance"], (plain, viewed)


# -- as an optimisation target (pretrain/diagnostics/robustness_report.py; README "Robustness") --
#
# These are the anchors, attack and generator targets of the robustness report, on the
# bundled photos. A model trained without anchors fails the anchor and generator tests,
# one trained without adversarial twins the attack test; for such a model they are strict
# xfails, so they flip to failures the day they pass.

_HARDENING = (read_checkpoint_metadata(default_checkpoint_path())["training"]["config"].get("hardening", {})
              if default_checkpoint_path().is_file() else {})
anchored_only = pytest.mark.xfail(not _HARDENING.get("anchors", 0), strict=True,
                                  reason="the shipped model was trained without anchors")
twins_only = pytest.mark.xfail(not _HARDENING.get("adversarial", 0), strict=True,
                               reason="the shipped model was trained without adversarial twins")


@anchored_only
def test_default_model_meets_the_physical_anchors(net):
    from pretrain.diagnostics.robustness_anchors import check_anchors

    failed = [(r["anchor"], r["attribute"], round(r["worst"], 3)) for r in check_anchors(net, sizes=(128,))
              if not r["passed"]]
    assert not failed


@twins_only
def test_a_short_4_255_attack_gains_far_less_than_the_real_fix(photos):
    """Adam on the pixels within 4/255, 20 steps: each attribute's score gain stays below
    a third of what undoing the degradation earns (the report's target is a quarter at
    60 steps)."""
    from pretrain.diagnostics.robustness_attacks import attack_rows

    rows, _ = attack_rows(load_attiqa(), photos[:, :, :128, :128], eps_list=(4 / 255,), steps=20)
    ratios = {r["attribute"]: round(r["gain_vs_fix"], 3) for r in rows}
    assert all(v < 1 / 3 for v in ratios.values()), ratios


@anchored_only
def test_a_loss_only_generator_does_not_go_flat(photos):
    """A tiny conv net trained on the loss alone, 30 steps: every output keeps at least
    half its input's RMS contrast."""
    from pretrain.diagnostics.robustness_generator import generator_probe

    rows, _ = generator_probe(load_attiqa(), photos[:, :, :128, :128], modes=("loss",), steps=30)
    assert not rows[0]["flat"], rows[0]


# -- the ship rule (pretrain/diagnostics/ship_rule.py; docs/default_model.md "The ship rule") --
#
# research/trials.csv records every judged trial; its latest row with shipped=yes is the
# embedded model. Its recorded verdict decides whether the rule's short checks below are
# tests or strict xfails: a model shipped before the rule (verdict FAIL) fails them, and
# they flip to failures the day it would pass.

TRIALS_CSV = Path(__file__).resolve().parent.parent / "research" / "trials.csv"


def _shipped_trial() -> dict:
    import csv

    shipped = [r for r in csv.DictReader(open(TRIALS_CSV, newline="")) if r["shipped"] == "yes"]
    assert shipped, f"{TRIALS_CSV} has no row with shipped=yes"
    return shipped[-1]


_RULE_PASSED = TRIALS_CSV.is_file() and _shipped_trial()["verdict"] == "PASS"
ship_rule_passed = pytest.mark.xfail(not _RULE_PASSED, strict=True,
                                     reason="the shipped model was judged FAIL by the ship rule (research/trials.csv)")


def test_the_trials_record_names_the_shipped_weights_and_their_recipe():
    """The latest shipped row of research/trials.csv is the embedded file (same SHA-256) and
    records the recipe its metadata holds."""
    import json

    from attiqa_train.files import sha256_file
    from pretrain.diagnostics.ship_rule import recipe_of

    row = _shipped_trial()
    assert row["verdict"] in ("PASS", "FAIL")
    assert row["weights_sha256"] == sha256_file(default_checkpoint_path())
    recorded = read_checkpoint_metadata(default_checkpoint_path())["training"]["config"]
    assert json.loads(row["recipe"]) == json.loads(json.dumps(recipe_of(recorded)))


@ship_rule_passed
def test_default_model_meets_every_anchor_at_128_and_256_px(net):
    from pretrain.diagnostics.robustness_anchors import check_anchors

    failed = [(r["anchor"], r["attribute"], r["size"], round(r["worst"], 3))
              for r in check_anchors(net, sizes=(128, 256)) if not r["passed"]]
    assert not failed


@ship_rule_passed
def test_a_short_4_255_attack_earns_about_what_an_honest_step_earns(photos):
    """Adam on the pixels within 4/255, 20 steps, on the bundled photos: each attribute's
    gain stays within twice what the real fix clipped to the same ball earns (the rule:
    1.5x at 60 steps on held-out photos)."""
    from pretrain.diagnostics.robustness_attacks import attack_rows

    rows, _ = attack_rows(load_attiqa(), photos[:, :, :128, :128], eps_list=(4 / 255,), steps=20)
    ratios = {r["attribute"]: round(r["gain_vs_fix"] / r["clip_fix_vs_fix"], 2) for r in rows}
    assert all(0 < v <= 2.0 for v in ratios.values()), ratios


def test_a_loss_only_generator_with_typical_targets_stays_a_photo(photos):
    """A tiny conv net trained 60 steps on the loss alone, targets at the clean crops'
    median scores, on five bundled crops each degraded along one attribute: every crop's
    degraded attribute moves the right way by its independent measure, and no output is
    flat, embossed or single-hue. (The rule's longer run on held-out photos asks more:
    the model shipped before the rule fails it there on PSNR and contrast.)"""
    from pretrain.diagnostics.robustness_generator import generator_probe

    crops = torch.cat([photos[:, :, :128, :128], photos[:1, :, 32:160, 32:160]])
    rows, _ = generator_probe(load_attiqa(), crops, modes=("loss@median",), steps=60)
    row = rows[0]
    assert row["right_way"] == 1.0, row
    assert not (row["flat"] or row["embossed"] or row["single_hue"]), row
    assert row["rms_ratio"] >= 0.8, row
