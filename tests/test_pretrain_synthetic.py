"""The synthetic teacher and the degradations it learns from: directions, labels, determinism."""

from __future__ import annotations

import math

import pytest
import torch

from attiqa_loss import ATTRIBUTES
from pretrain.degradations import FAMILIES, degrade, graded_strengths, list_families
from pretrain.handcrafted import handcrafted_scores
from pretrain.synthetic import SyntheticTeacher, split_holdout
from pretrain.validity import spearman

from conftest import make_texture


def _photo(seed=0, h=160, w=200):
    # A photo-like image: smooth structure, moderate saturation, some fine detail.
    return make_texture(h, w, seed, smoothness=6)


@pytest.mark.parametrize("family", list_families(), ids=lambda f: f"{f.attribute}-{f.name}")
def test_every_family_lowers_its_handcrafted_measure(family):
    """Each degradation moves the simple measure of its attribute the bad way, monotonically."""
    x = _photo(1)[None]
    a = ATTRIBUTES.index(family.attribute)
    strengths = graded_strengths(5)
    vals = torch.stack(
        [handcrafted_scores(degrade(x, family.attribute, family.name, float(s), torch.Generator().manual_seed(0)))[0, a]
         for s in strengths]
    )
    if family.name == "jpeg":
        # JPEG smooths noise away, so the handcrafted noise measure is fooled: it is the
        # case the learned model must handle. Here just check the image really changes.
        y = degrade(x, "noisiness", "jpeg", 1.0)
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
    on the degraded attribute, for each of the five attributes."""
    t = _teacher(levels=3, nuisance_prob=0.0, scale_range=(1.0, 1.0))
    seen = set()
    g = torch.Generator().manual_seed(1)
    for _ in range(12):
        b = t.sample(4, g)
        hc = handcrafted_scores(b.images)
        for grp in b.groups.unique():
            idx = (b.groups == grp).nonzero().flatten()[:-1]  # the levels, without the consistency crop
            a = int(b.target[idx[0]])
            labels = b.labels[idx, a]
            assert spearman(hc[idx, a], labels) > 0.99, (ATTRIBUTES[a], labels.tolist(), hc[idx, a].tolist())
            seen.add(a)
    assert seen == set(range(5))


def test_synthetic_sampling_is_a_function_of_the_generator():
    t = _teacher()
    a = t.sample(2, torch.Generator().manual_seed(3))
    b = t.sample(2, torch.Generator().manual_seed(3))
    assert torch.equal(a.images, b.images) and torch.equal(a.labels.nan_to_num(), b.labels.nan_to_num())


def test_split_holdout_is_deterministic_and_disjoint(tmp_path):
    files = [tmp_path / f"{i:02d}.png" for i in range(10)]
    train, held = split_holdout(list(reversed(files)), 5)
    assert held == [files[4], files[9]]
    assert set(train).isdisjoint(held) and len(train) + len(held) == 10
    assert split_holdout(files, 0) == (files, [])


def test_teacher_rejects_bad_settings():
    with pytest.raises(ValueError, match="at least one photo"):
        SyntheticTeacher([])
    with pytest.raises(ValueError, match="levels must be >= 2, got 1"):
        _teacher(levels=1)
    with pytest.raises(ValueError, match=r"min_gap \* \(levels - 1\) must be <= 1"):
        _teacher(levels=4, min_gap=0.5)
