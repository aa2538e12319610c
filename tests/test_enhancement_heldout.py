"""Validation figures: the model-independent ones (input, reference) are computed once per run."""

import pytest
import torch

from attiqa_loss import AttiqaLoss
from enhancement.heldout import evaluate
from enhancement.unet import create_unet


@pytest.fixture(scope="module")
def quality():
    return AttiqaLoss()


def _samples(with_target=True):
    torch.manual_seed(0)
    clean = torch.rand(3, 3, 48, 56).clamp(0.1, 0.9)
    return [{"input": c * 0.3, **({"target": c} if with_target else {})} for c in clean]


def _net(seed):
    torch.manual_seed(seed)
    net = create_unet(width=4, depth=2, blocks=1, output="gain", gain_scale=2)
    with torch.no_grad():
        net.head.weight.normal_(std=0.1)
    return net


@pytest.mark.parametrize("with_target", [True, False])
def test_a_cache_changes_no_figure_and_scores_only_the_output_after_the_first_call(quality, monkeypatch, with_target):
    samples, cpu = _samples(with_target), torch.device("cpu")
    cache = {}
    evaluate(_net(1), samples, quality=quality, device=cpu, cache=cache)  # fills the cache
    calls = []
    scores = quality.scores
    monkeypatch.setattr(quality, "scores", lambda images: calls.append(images) or scores(images))
    cached = evaluate(_net(2), samples, quality=quality, device=cpu, cache=cache, keep=2)
    assert len(calls) == len(samples)  # the output only (without a cache: input, output, reference)
    fresh = evaluate(_net(2), samples, quality=quality, device=cpu, keep=2)
    assert len(calls) == len(samples) * (3 if with_target else 2) + len(samples)
    assert cached[0] == fresh[0] and cached[1] == fresh[1]
    assert list(cached[1]) == (["input", "output", "reference"] if with_target else ["input", "output"])
    assert set(cached[0]) == ({"psnr", "ssim", "psnr_input", "ssim_input"} if with_target else set())
    assert all(torch.equal(a, b) for ka, kb in zip(cached[2], fresh[2]) for a, b in zip(ka, kb))
