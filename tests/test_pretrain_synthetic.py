"""The synthetic teacher and the degradations it learns from: directions, labels, determinism."""

from __future__ import annotations

import kornia
import pytest
import torch
import torch.nn.functional as F

from attiqa_loss import ATTRIBUTES
from attiqa_loss.measures import luminance
from attiqa_train.sampling import split_every_nth
from pretrain.degrade.families import FAMILIES, degrade, graded_strengths, list_families
from pretrain.diagnostics.handcrafted import handcrafted_scores
from pretrain.synthetic.graded import family_srcc, spearman
from pretrain.synthetic.teacher import SyntheticTeacher, resolve_families

from helpers import make_texture


def _photo(seed=0, h=160, w=200):
    # A photo-like image: smooth structure, moderate saturation, some fine detail.
    return make_texture(h, w, seed, smoothness=6)


@pytest.mark.parametrize("family", list_families(), ids=lambda f: f"{f.attribute}-{f.name}")
def test_every_family_lowers_its_handcrafted_measure(family):
    """Each degradation moves the simple measure of its attribute the bad way, monotonically."""
    x = _photo(1)[None]
    a = ATTRIBUTES.index(family.attribute)
    strengths = graded_strengths(5)

    def measure(y):
        if family.name == "pixelate":
            # Block edges keep the Laplacian variance up; count the detail left instead.
            return _changing_neighbours(y)[0]
        if family.name in ("wavelet", "median"):
            # Block edges and median steps keep the Laplacian variance up too: measure how
            # much of the photo's own fine detail is left.
            return _detail_kept(y, x)[0]
        if family.name in ("correlated", "pattern", "block"):
            # Immerkaer's mask cancels smooth structure, and with it noise correlated over
            # pixels, constant along rows and columns or constant over blocks.
            return -_noise_energy(y)[0]
        return handcrafted_scores(y)[0, a]

    vals = torch.stack(
        [measure(degrade(x, family.attribute, family.name, float(s), torch.Generator().manual_seed(0)))
         for s in strengths]
    )
    if family.name == "jpeg":
        # JPEG's 8 px block edges raise the Laplacian variance the handcrafted detail
        # measure reads, while it drops fine detail: the case the learned model must
        # handle. Here just check the image really changes.
        y = degrade(x, "sharpness", "jpeg", 1.0)
        assert (y - x).abs().mean() > 0.005
        return
    rho = float(spearman(vals, -strengths))
    assert rho > 0.95, f"{family.attribute}/{family.name}: measure vs quality level SRCC {rho:.3f}, values {vals.tolist()}"


def test_zero_strength_is_identity_and_bad_arguments_raise():
    x = _photo(2)[None]
    for f in list_families():
        assert torch.equal(degrade(x, f.attribute, f.name, 0.0), x)
    with pytest.raises(ValueError, match=r"strength must be in \[0, 1\], got 1.5"):
        degrade(x, "sharpness", "gaussian", 1.5)
    with pytest.raises(ValueError, match="unknown sharpness family 'box'"):
        degrade(x, "sharpness", "box", 0.5)
    with pytest.raises(ValueError, match="unknown attribute 'hue'"):
        degrade(x, "hue", "gaussian", 0.5)


def test_linear_contrast_changes_luminance_only():
    """Lowering contrast keeps chroma: R-G and B-G are untouched where nothing clips, so
    the contrast family does not also desaturate."""
    x = 0.25 + 0.5 * _photo(4)[None]  # in [0.25, 0.75]: no clipping at this strength
    y = degrade(x, "contrast", "linear", 0.6)
    assert torch.allclose(y[:, 0] - y[:, 1], x[:, 0] - x[:, 1], atol=1e-6)
    assert torch.allclose(y[:, 2] - y[:, 1], x[:, 2] - x[:, 1], atol=1e-6)
    assert handcrafted_scores(y)[0, 1] < 0.6 * handcrafted_scores(x)[0, 1]  # RMS contrast x (1 - 0.8 * 0.6)


def test_texture_loss_flattens_fine_detail_and_keeps_strong_edges():
    g = torch.Generator().manual_seed(0)
    x = torch.full((1, 3, 64, 64), 0.2)
    x[..., 32:] = 0.8  # one strong vertical edge
    x = x + 0.02 * torch.randn(x.shape, generator=g)  # fine, low-amplitude texture
    y = degrade(x, "sharpness", "texture", 1.0)
    flat = (slice(None), slice(None), slice(8, 56), slice(4, 24))
    assert y[flat].std() < 0.5 * x[flat].std()
    # The edge stays a step from one pixel to the next; Gaussian blur spreads it out.
    def step(img):
        return float((img[..., 8:56, 32] - img[..., 8:56, 31]).mean())

    assert step(y) > 0.3
    assert step(degrade(x, "sharpness", "gaussian", 1.0)) < 0.1


@pytest.mark.parametrize("seed", range(4))
def test_block_noise_is_constant_over_square_tiles(seed):
    """Block noise changes only at tile borders, every 4, 8 or 16 px, in both directions,
    and mostly in luma (the channels share most of each tile's offset)."""
    x = torch.full((1, 3, 96, 96), 0.5)
    d = degrade(x, "noisiness", "block", 0.5, torch.Generator().manual_seed(seed)) - x
    assert 0.02 < float(d.std()) < 0.06  # sigma 0.08 * 0.5, nothing clipped
    borders = []
    for dim in (-1, -2):
        steps = d.diff(dim=dim).abs().amax(dim=tuple(i for i in range(-4, 0) if i != dim)) > 1e-6
        pos = steps.nonzero().flatten()
        gaps = pos.diff().unique().tolist()
        assert len(gaps) == 1 and gaps[0] in (4, 8, 16), gaps
        borders.append(gaps[0])
    assert borders[0] == borders[1]  # square tiles
    red, green, _ = d[0].flatten(1)
    assert float(torch.corrcoef(torch.stack([red, green]))[0, 1]) > 0.8


def _edge_with_texture(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.full((1, 3, 64, 64), 0.3)
    x[..., 32:] = 0.7  # one strong vertical edge
    return x + 0.03 * torch.randn(x.shape, generator=g)  # fine, low-amplitude texture


def test_median_filter_flattens_fine_detail_and_keeps_strong_edges():
    x = _edge_with_texture()
    y = degrade(x, "sharpness", "median", 1.0)
    flat = (slice(None), slice(None), slice(8, 56), slice(4, 24))
    assert y[flat].std() < 0.4 * x[flat].std()
    step = float((y[..., 8:56, 32] - y[..., 8:56, 31]).mean())
    assert step > 0.3  # still a one-pixel step, not a ramp
    # the strengths in between blend successive passes: detail falls monotonically
    stds = [degrade(x, "sharpness", "median", s)[flat].std().item() for s in (0.0, 0.1, 0.2, 0.3, 0.6, 1.0)]
    assert stds == sorted(stds, reverse=True) and len(set(stds)) == len(stds)


def test_ringing_overshoots_at_edges_where_gaussian_blur_does_not():
    x = torch.full((1, 3, 64, 96), 0.3)
    x[..., 48:] = 0.7
    y = degrade(x, "sharpness", "ringing", 1.0)
    row = y[0, 1, 32]
    assert row[40:48].min() < 0.3 - 0.02 and row[48:56].max() > 0.7 + 0.02  # Gibbs over/undershoot
    assert float(row[48] - row[47]) < 0.2  # and the step is spread out (band-limited)
    blurred = degrade(x, "sharpness", "gaussian", 1.0)[0, 1, 32]
    assert blurred.min() >= 0.3 - 1e-4 and blurred.max() <= 0.7 + 1e-4


def test_correlated_noise_is_spatially_correlated():
    x = torch.full((1, 3, 96, 96), 0.5)
    n = degrade(x, "noisiness", "correlated", 1.0, torch.Generator().manual_seed(0)) - x
    assert 0.08 < float(n.std()) < 0.16
    lag1 = float((n[..., :, 1:] * n[..., :, :-1]).mean() / n.var())
    assert lag1 > 0.5  # white noise would be ~0
    white = degrade(x, "noisiness", "gaussian", 1.0, torch.Generator().manual_seed(0)) - x
    assert abs(float((white[..., :, 1:] * white[..., :, :-1]).mean() / white.var())) < 0.05


def test_pattern_noise_has_row_and_column_structure():
    x = torch.full((1, 3, 96, 96), 0.5)
    n = degrade(x, "noisiness", "pattern", 1.0, torch.Generator().manual_seed(0)) - x
    assert 0.07 < float(n.std()) < 0.13
    # Averaging along a row keeps the row offset and cancels the white part.
    assert float(n.mean(dim=-1).std()) > 0.4 * float(n.std())
    white = degrade(x, "noisiness", "gaussian", 1.0, torch.Generator().manual_seed(0)) - x
    assert float(white.mean(dim=-1).std()) < 0.15 * float(white.std())


def test_a_no_op_degradation_teaches_nothing_and_is_left_out_of_validity():
    """Desaturating a grey photo changes nothing: the teacher drops that group's labels
    (rather than teach a false order) and the validity SRCC leaves the photo out."""
    grey = _photo(5, 180, 220).mean(0, keepdim=True).expand(3, -1, -1)
    t = SyntheticTeacher([(grey * 255).round().byte()], crop=64, levels=3, nuisance_prob=0.0,
                         families={"colorfulness": ["desaturate"], **{a: [] for a in ATTRIBUTES if a != "colorfulness"}})
    b = t.sample(3, torch.Generator().manual_seed(0))
    assert torch.isnan(b.labels).all()
    colour = _photo(5, 64, 64)

    def scorer(y):
        return handcrafted_scores(y)

    r = family_srcc(scorer, [grey[:, :64, :64], colour], "colorfulness", "desaturate", 4)
    assert torch.isnan(r["srcc"][0]).all() and torch.isnan(r["shift"][0]).all()
    assert r["srcc"][1, ATTRIBUTES.index("colorfulness")] > 0.99


def test_every_attribute_has_trained_and_unseen_families():
    for a in ATTRIBUTES:
        assert list_families(a, trained=True), a
        assert list_families(a, trained=False), a
    assert set(FAMILIES) == set(ATTRIBUTES)


def test_noise_is_reproducible_from_the_generator():
    x = _photo(3)[None]
    a = degrade(x, "noisiness", "gaussian", 0.5, torch.Generator().manual_seed(7))
    b = degrade(x, "noisiness", "gaussian", 0.5, torch.Generator().manual_seed(7))
    c = degrade(x, "noisiness", "gaussian", 0.5, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def _noise_energy(x):
    """Mean absolute Laplacian at half resolution: grows with white, correlated and
    row/column noise alike (Immerkaer's separable mask cancels the last two); only for
    comparing versions of one crop, as image structure adds to it."""
    k = x.new_tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]).view(1, 1, 3, 3)
    y = F.avg_pool2d(luminance(x), 2)
    return F.conv2d(y, k).abs().flatten(1).mean(1)


def _changing_neighbours(x):
    """Fraction of horizontally adjacent pixels that differ: 1 for a detailed photo,
    about 1/b for a mosaic of b-pixel blocks."""
    return ((x[..., 1:] - x[..., :-1]).abs().amax(1) > 1e-6).flatten(1).float().mean(1)


def _detail_kept(y, ref):
    """Correlation of the Laplacian-of-Gaussian (sigma 1 px) responses of ``y`` and
    ``ref``, ``(B,)``: 1 when ``y`` keeps all of ``ref``'s detail, falling as it goes
    (new block edges do not count: they do not correlate with the photo's detail)."""
    def log(t):
        return kornia.filters.laplacian(kornia.filters.gaussian_blur2d(luminance(t), (7, 7), (1.0, 1.0)), 3)

    a = log(y).flatten(1)
    b = log(ref).flatten(1).expand_as(a)
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp(min=1e-12)


def _teacher(**kw):
    photos = [(_photo(s, 180, 220) * 255).round().byte() for s in range(3)]
    return SyntheticTeacher(photos, crop=64, **kw)


def test_synthetic_batch_layout_and_masking():
    t = _teacher(levels=3)
    b = t.sample(4, torch.Generator().manual_seed(0))
    n = 4 * t.group_size
    assert b.images.shape == (n, 3, 64, 64)
    assert b.images.min() >= 0 and b.images.max() <= 1
    assert b.labels.shape == (n, 5) and b.groups.shape == (n,) and b.target.shape == (n,)
    assert b.pairs.shape == (4, 2)
    # Exactly one labelled attribute per image: the group's target.
    labelled = ~torch.isnan(b.labels)
    assert labelled.sum(1).eq(1).all()
    assert torch.equal(labelled.float().argmax(1), b.target)
    # Consistency pairs share group and label.
    for i, j in b.pairs.tolist():
        assert b.groups[i] == b.groups[j]
        assert torch.equal(b.labels[i].nan_to_num(-1), b.labels[j].nan_to_num(-1))


def test_synthetic_pairs_are_ordered_the_right_way_for_every_attribute():
    """Within a group, the image with the higher (quality-aligned) label measures better
    on the degraded attribute, for each of the five attributes (families whose block
    edges fool the Laplacian measure: next test)."""
    blocky = ("pixelate", "wavelet", "median")
    families = {a: [f.name for f in list_families(a, trained=True) if f.name not in blocky] for a in ATTRIBUTES}
    t = _teacher(levels=3, nuisance_prob=0.0, scale_range=(1.0, 1.0), families=families)
    seen = set()
    g = torch.Generator().manual_seed(1)
    for _ in range(12):
        b = t.sample(4, g)
        hc = handcrafted_scores(b.images)
        hc[:, 4] = -_noise_energy(b.images)
        for grp in b.groups.unique():
            idx = (b.groups == grp).nonzero().flatten()[:-1]  # the levels, without the consistency crop
            a = int(b.target[idx[0]])
            labels = b.labels[idx, a]
            assert spearman(hc[idx, a], labels) > 0.99, (ATTRIBUTES[a], labels.tolist(), hc[idx, a].tolist())
            seen.add(a)
    assert seen == set(range(5))


@pytest.mark.parametrize("family", ["pixelate", "wavelet", "median"])
def test_blocky_groups_are_ordered_by_the_detail_they_keep(family):
    """Within a group, the image with the higher label keeps more of the fine detail of
    the group's least degraded image."""
    t = _teacher(levels=3, nuisance_prob=0.0, scale_range=(1.0, 1.0), families={"sharpness": [family]})
    b = t.sample(6, torch.Generator().manual_seed(2))
    for grp in b.groups.unique():
        idx = (b.groups == grp).nonzero().flatten()[:-1]
        if family == "pixelate":  # blocks of another size and phase: count the changes instead
            detail = _changing_neighbours(b.images[idx])
        else:
            best = idx[b.labels[idx, 0].argmax()]
            detail = _detail_kept(b.images[idx], b.images[best][None])
        assert spearman(detail, b.labels[idx, 0]) > 0.99, (b.labels[idx, 0].tolist(), detail.tolist())


def test_levels_of_a_group_share_one_noise_pattern():
    """Only the strength differs inside a group: the same noise field, scaled."""
    t = _teacher(levels=3, nuisance_prob=0.0, families={"noisiness": ["gaussian"]})
    photos = [torch.full((3, 180, 220), 128, dtype=torch.uint8)]  # mid-grey: no clipping
    t.photos = photos
    b = t.sample(2, torch.Generator().manual_seed(4))
    for grp in (0, 1):
        x1, x2, x3 = b.images[b.groups == grp][:3]
        d21, d32 = (x2 - x1).flatten(), (x3 - x2).flatten()
        assert torch.corrcoef(torch.stack([d21, d32]))[0, 1] > 0.99


def test_resolve_families_defaults_overrides_and_errors():
    defaults = resolve_families()
    assert defaults == {a: [f.name for f in list_families(a, trained=True)] for a in ATTRIBUTES}
    assert "jpeg" not in defaults["sharpness"] and "cast" not in defaults["colorfulness"] and "pixelate" not in defaults["sharpness"]
    custom = resolve_families({"sharpness": ["gaussian", "ringing", "gaussian"], "colorfulness": []})
    assert custom["sharpness"] == ["gaussian", "ringing"] and custom["colorfulness"] == []
    assert custom["noisiness"] == defaults["noisiness"]
    with pytest.raises(ValueError, match=r"synthetic.families.noisiness: unknown family 'salt'"):
        resolve_families({"noisiness": ["salt"]})
    with pytest.raises(ValueError, match=r"synthetic.families.noisiness must be a list of family names, got 'jpeg'"):
        resolve_families({"noisiness": "jpeg"})
    with pytest.raises(ValueError, match="at least one family"):
        resolve_families({a: [] for a in ATTRIBUTES})


def test_nuisance_weights_bias_which_attribute_is_the_nuisance():
    others = ["sharpness", "contrast", "brightness", "noisiness"]
    g = torch.Generator().manual_seed(0)
    t = _teacher(nuisance_weights={"noisiness": 3.0, "contrast": 0.0})
    picks = [t._pick_nuisance(others, g) for _ in range(3000)]
    share = {b: picks.count(b) / len(picks) for b in others}
    assert share["contrast"] == 0
    assert share["noisiness"] == pytest.approx(0.6, abs=0.04)  # 3 / (1 + 0 + 1 + 3)
    assert share["sharpness"] == pytest.approx(0.2, abs=0.04)
    assert _teacher(nuisance_weights={a: 0.0 for a in ATTRIBUTES})._pick_nuisance(others, g) is None
    uniform = _teacher()
    picks = [uniform._pick_nuisance(others, g) for _ in range(2000)]
    assert all(abs(picks.count(b) / 2000 - 0.25) < 0.04 for b in others)
    with pytest.raises(ValueError, match="synthetic.nuisance_weights"):
        _teacher(nuisance_weights={"noisiness": -1.0})
    with pytest.raises(ValueError, match="unknown attribute name"):
        _teacher(nuisance_weights={"noise": 2.0})


def test_a_single_trained_attribute_gets_no_nuisance():
    t = _teacher(levels=3, nuisance_prob=1.0, families={"noisiness": ["gaussian"]})
    b = t.sample(3, torch.Generator().manual_seed(0))
    assert (b.target == ATTRIBUTES.index("noisiness")).all()


def test_synthetic_sampling_is_a_function_of_the_generator():
    t = _teacher()
    a = t.sample(2, torch.Generator().manual_seed(3))
    b = t.sample(2, torch.Generator().manual_seed(3))
    assert torch.equal(a.images, b.images) and torch.equal(a.labels.nan_to_num(), b.labels.nan_to_num())


def test_split_holdout_is_deterministic_and_disjoint(tmp_path):
    files = [tmp_path / f"{i:02d}.png" for i in range(10)]
    train, held = split_every_nth(list(reversed(files)), 5)
    assert held == [files[4], files[9]]
    assert set(train).isdisjoint(held) and len(train) + len(held) == 10
    assert split_every_nth(files, 0) == (files, [])


def test_teacher_rejects_bad_settings():
    with pytest.raises(ValueError, match="at least one photo"):
        SyntheticTeacher([])
    with pytest.raises(ValueError, match="levels must be >= 2, got 1"):
        _teacher(levels=1)
    with pytest.raises(ValueError, match=r"min_gap \* \(levels - 1\) must be <= 1"):
        _teacher(levels=4, min_gap=0.5)


@pytest.mark.parametrize("with_jpeg", [False, True])
def test_validity_report_marks_what_the_model_never_saw(with_jpeg):
    """The report labels every family the checkpoint did not train on "(unseen)", the
    JPEG line included, and its numbers are real SRCCs (mean luminance follows exposure)."""
    from pretrain.diagnostics.validity_report import _markdown, build_report

    trained = resolve_families({"sharpness": ["gaussian", "jpeg"]} if with_jpeg else None)
    imgs = [_photo(s, 48, 56) for s in range(2)]
    md = _markdown(build_report({"attiqa": handcrafted_scores, "handcrafted": handcrafted_scores}, imgs, 3, trained))
    assert "| brightness/exposure | 1.000 | 1.000 |" in md
    assert "| brightness/gamma (unseen) |" in md and "| noisiness/poisson_gaussian (unseen) |" in md
    if with_jpeg:
        assert "| sharpness/jpeg |" in md and "JPEG quality 95 -> 10 (trained on):" in md
    else:
        assert "| sharpness/jpeg (unseen) |" in md and "JPEG quality 95 -> 10 (never seen in training):" in md
