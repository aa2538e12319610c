"""Input contracts of the core package: image checks (docs/method.md, section 1) and attribute mappings (section 2)."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from attiqa_loss import ATTRIBUTES, MIN_SIZE, check_images
from attiqa_loss.attributes import validate_attribute_mapping
from attiqa_loss.checks import RANGE_TOLERANCE


class TestAttributes:
    def test_fixed_order(self):
        assert ATTRIBUTES == ("sharpness", "contrast", "brightness", "colorfulness", "noisiness")
        assert isinstance(ATTRIBUTES, tuple)

    def test_prompts_and_descriptions_cover_every_attribute(self):
        assert tuple(ATTRIBUTES.prompts) == tuple(ATTRIBUTES)
        assert tuple(ATTRIBUTES.descriptions) == tuple(ATTRIBUTES)
        for name in ATTRIBUTES:
            pos, neg = ATTRIBUTES.prompts[name]
            assert pos and neg and pos != neg
            # quality-aligned: the description starts with the desirable pole at 1
            assert ATTRIBUTES.descriptions[name].startswith("1 = ")
        # the noisiness pole is "clean", so a high noisiness score means noise-free
        assert ATTRIBUTES.prompts["noisiness"][0] == "clean"

    def test_read_only(self):
        with pytest.raises(TypeError):
            ATTRIBUTES.prompts["sharpness"] = ("a", "b")

    def test_index_of(self):
        assert [ATTRIBUTES.index_of(n) for n in ATTRIBUTES] == [0, 1, 2, 3, 4]
        with pytest.raises(ValueError, match=r"unknown attribute 'sharpnes'.*sharpness"):
            ATTRIBUTES.index_of("sharpnes")


class TestValidateAttributeMapping:
    def test_none_gives_defaults(self):
        assert validate_attribute_mapping(None, "w", low=0, high=None, default=1.0) == (1.0,) * 5

    def test_resolves_in_attribute_order(self):
        out = validate_attribute_mapping({"noisiness": 0.2, "sharpness": 0.9}, "t", low=0, high=1, default=1.0)
        assert out == (0.9, 1.0, 1.0, 1.0, 0.2)

    def test_accepts_numpy_scalars(self):
        out = validate_attribute_mapping({"contrast": np.float32(0.5), "brightness": np.int64(2)}, "w",
                                         low=0, high=None, default=1.0)
        assert out == (1.0, 0.5, 2.0, 1.0, 1.0)
        assert all(type(v) is float for v in out)

    def test_unknown_names_listed(self):
        with pytest.raises(ValueError, match=r"unknown attribute name\(s\) in weights: \['sharp', 'noise'\]"):
            validate_attribute_mapping({"sharp": 1, "noise": 1}, "weights", low=0, high=None, default=1)

    @pytest.mark.parametrize("bad", [[("sharpness", 1.0)], 1.0, "sharpness"])
    def test_non_mapping(self, bad):
        with pytest.raises(TypeError, match=f"weights must be a mapping.*got {type(bad).__name__}"):
            validate_attribute_mapping(bad, "weights", low=0, high=None, default=1)

    @pytest.mark.parametrize("bad", ["1.0", None, True, np.bool_(True), [1.0], torch.tensor(1.0)])
    def test_non_number(self, bad):
        with pytest.raises(TypeError, match=r"weights\['contrast'\] must be a float"):
            validate_attribute_mapping({"contrast": bad}, "weights", low=0, high=None, default=1)

    @pytest.mark.parametrize("bad", [-0.1, math.nan])
    def test_below_low_or_nan(self, bad):
        with pytest.raises(ValueError, match=rf"weights\['contrast'\] must be a finite number >= 0.0, got {bad}"):
            validate_attribute_mapping({"contrast": bad}, "weights", low=0.0, high=None, default=1)

    @pytest.mark.parametrize("bad", [math.inf, -math.inf])
    def test_infinite_rejected_even_without_upper_bound(self, bad):
        # an infinite weight would turn the normalised loss into inf/inf = NaN
        with pytest.raises(ValueError, match=rf"weights\['contrast'\] must be a finite number >= 0.0, got {bad}"):
            validate_attribute_mapping({"contrast": bad}, "weights", low=0.0, high=None, default=1)

    @pytest.mark.parametrize("bad", [1.5, -0.01])
    def test_outside_closed_range(self, bad):
        with pytest.raises(ValueError, match=rf"targets\['brightness'\] must be a finite number in \[0.0, 1.0\], got {bad}"):
            validate_attribute_mapping({"brightness": bad}, "targets", low=0.0, high=1.0, default=1)

    def test_bounds_inclusive(self):
        out = validate_attribute_mapping({"brightness": 0, "contrast": 1}, "targets", low=0.0, high=1.0, default=1)
        assert out == (1.0, 1.0, 0.0, 1.0, 1.0)


def _batch(*shape, dtype=torch.float32):
    return torch.rand(*shape, dtype=dtype)


class TestCheckImages:
    @pytest.mark.parametrize("shape", [(1, 3, 32, 32), (2, 3, 32, 47), (3, 3, 97, 64)])
    @pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
    def test_accepts_valid(self, shape, dtype):
        check_images(_batch(*shape).to(dtype))

    def test_accepts_small_overshoot_and_exact_bounds(self):
        x = torch.zeros(1, 3, 32, 32)
        x[..., 0, 0] = 1.0 + RANGE_TOLERANCE / 2
        x[..., 0, 1] = -RANGE_TOLERANCE / 2
        check_images(x)
        check_images(torch.zeros(1, 3, 32, 32))
        check_images(torch.ones(1, 3, 32, 32))

    def test_accepts_channels_last_and_non_contiguous(self):
        check_images(_batch(2, 3, 40, 36).to(memory_format=torch.channels_last))
        check_images(_batch(2, 3, 40, 72)[..., ::2])

    @pytest.mark.parametrize("bad", [np.zeros((1, 3, 32, 32), np.float32), [[0.5]], None])
    def test_non_tensor(self, bad):
        with pytest.raises(TypeError, match=rf"images must be a torch.Tensor.*got {type(bad).__name__}"):
            check_images(bad)

    @pytest.mark.parametrize("dtype", [torch.uint8, torch.int32, torch.int64, torch.bool])
    def test_integer_dtype(self, dtype):
        x = torch.zeros(1, 3, 32, 32, dtype=dtype)
        with pytest.raises(TypeError, match=rf"floating-point.*got dtype={re.escape(str(dtype))}.*/ 255"):
            check_images(x)

    @pytest.mark.parametrize("shape", [(3, 32, 32), (1, 1, 3, 32, 32), (32, 32)])
    def test_wrong_rank(self, shape):
        with pytest.raises(ValueError, match=rf"4 dimensions \(B, 3, H, W\), got shape {re.escape(str(shape))}"):
            check_images(torch.rand(*shape))

    @pytest.mark.parametrize("channels", [1, 4])
    def test_wrong_channels(self, channels):
        with pytest.raises(ValueError, match=rf"3 \(RGB\) channels.*got shape \(1, {channels}, 32, 32\)"):
            check_images(torch.rand(1, channels, 32, 32))

    def test_channels_last_layout_tensor_is_not_mistaken_for_bchw(self):
        # a (B, H, W, 3) tensor: a common mistake when converting from numpy/PIL
        with pytest.raises(ValueError, match=r"channels in dim 1, got shape \(1, 32, 32, 3\)"):
            check_images(torch.rand(1, 32, 32, 3))

    def test_empty_batch(self):
        with pytest.raises(ValueError, match=r"at least one image, got shape \(0, 3, 32, 32\)"):
            check_images(torch.rand(0, 3, 32, 32))

    @pytest.mark.parametrize("hw", [(31, 64), (64, 31), (8, 8)])
    def test_too_small(self, hw):
        h, w = hw
        with pytest.raises(ValueError, match=rf"at least {MIN_SIZE}x{MIN_SIZE} pixels, got H={h}, W={w}"):
            check_images(torch.rand(1, 3, h, w))

    def test_min_size_override(self):
        check_images(torch.rand(1, 3, 16, 16), min_size=16)
        with pytest.raises(ValueError, match="at least 64x64"):
            check_images(torch.rand(1, 3, 32, 32), min_size=64)

    @pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
    def test_non_finite(self, value):
        x = torch.rand(2, 3, 32, 32)
        x[1, 2, 5, 7] = value
        with pytest.raises(ValueError, match=r"must be finite, found NaN or Inf \(min="):
            check_images(x)

    def test_minus_one_to_one(self):
        x = torch.rand(1, 3, 32, 32) * 2 - 1
        x[0, 0, 0, 0] = -1.0
        with pytest.raises(ValueError, match=r"in \[0, 1\].*not \[-1, 1\].*got min=-1, max="):
            check_images(x)

    def test_zero_to_255(self):
        x = torch.rand(1, 3, 32, 32) * 255
        x[0, 0, 0, 0] = 255.0
        with pytest.raises(ValueError, match=r"in \[0, 1\].*\[0, 255\].*max=255"):
            check_images(x)

    def test_just_beyond_tolerance(self):
        x = torch.rand(1, 3, 32, 32) * 0.5
        x[0, 1, 3, 3] = 1 + 2 * RANGE_TOLERANCE
        with pytest.raises(ValueError, match=r"got min=.*, max=1.1"):
            check_images(x)

    def test_custom_name_in_message(self):
        with pytest.raises(TypeError, match="^output must be"):
            check_images(torch.zeros(1, 3, 32, 32, dtype=torch.uint8), name="output")

    def test_does_not_touch_autograd(self):
        x = torch.rand(1, 3, 32, 32, requires_grad=True)
        check_images(x)
        assert x.grad is None and x.requires_grad
