"""The enhancement U-Net: an image-to-image network whose output stays in [0, 1]; its last
layer is turned into the image by one of the formulations of :mod:`enhancement.outputs`."""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Mapping, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from attiqa_loss.checks import check_images

from .outputs import (GAIN_PARAMS, OUTPUTS, apply_curves, apply_gain, apply_gain_denoise, bounded_residual, head_channels,
                      log_gain)

__all__ = ["UNet", "create_unet", "bounded_residual", "UNET_LIMITS", "check_unet_config"]


def _integer(low: int, high: int) -> Tuple[Callable[[Any], bool], str]:
    return (lambda v: isinstance(v, int) and not isinstance(v, bool) and low <= v <= high), f"an integer in [{low}, {high}]"


def _number(ok: Callable[[float], bool], expected: str) -> Tuple[Callable[[Any], bool], str]:
    return (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and ok(v)), expected


#: Every :class:`UNet` constructor argument with the values a config may set and an
#: exported file may hold (``enhancement.config.UNetConfig`` and
#: :func:`enhancement.weights.load_enhancer` both check them). The upper bounds lie far
#: above every shipped config (width 16-32, depth 3, max_width 256) and keep a file's
#: metadata from describing a network of many gigabytes.
UNET_LIMITS: Dict[str, Tuple[Callable[[Any], bool], str]] = {
    "width": _integer(1, 1024),
    "depth": _integer(1, 8),
    "blocks": _integer(1, 8),
    "max_width": _integer(1, 4096),
    "output": ((lambda v: v in OUTPUTS), f"one of {list(OUTPUTS)}"),
    "curve_iterations": _integer(1, 64),
    "gain_scale": _integer(1, 256),
    "gain_max": _number(lambda v: 1 < v <= 1024, "a number in (1, 1024]"),
    "gain_residual": _number(lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "gain_param": ((lambda v: v in GAIN_PARAMS), f"one of {list(GAIN_PARAMS)}"),
    "global_context": ((lambda v: isinstance(v, bool)), "true or false"),
    "gain_residual_highpass": ((lambda v: isinstance(v, int) and not isinstance(v, bool)
                                and (v == 0 or (3 <= v <= 63 and v % 2 == 1))),
                               "0 (a free residual) or an odd integer in [3, 63]"),
    "denoise_strength": _number(lambda v: 0 <= v <= 1, "a number in [0, 1]"),
    "denoise_radius": _integer(1, 16),
}


def check_unet_config(config: Any, source: str = "unet") -> Dict[str, Any]:
    """Return ``config`` as a dict if it only holds :data:`UNET_LIMITS` keys with accepted
    values (missing keys take the constructor's defaults); else raise a one-line
    ``ValueError`` naming ``source``, the key and the value."""
    if not isinstance(config, Mapping):
        raise ValueError(f"{source} must be a JSON object of U-Net constructor arguments, got {config!r}")
    for key, value in config.items():
        if key not in UNET_LIMITS:
            raise ValueError(f"{source} holds {key!r}={value!r}, which is not a U-Net argument; "
                             f"allowed: {sorted(UNET_LIMITS)}")
        ok, expected = UNET_LIMITS[key]
        if not ok(value):
            raise ValueError(f"{source}.{key} must be {expected}, got {value!r}")
    return dict(config)


def _conv_block(c_in: int, c_out: int, blocks: int) -> nn.Sequential:
    layers: List[nn.Module] = []
    for i in range(blocks):
        layers += [nn.Conv2d(c_in if i == 0 else c_out, c_out, 3, padding=1), nn.LeakyReLU(0.2, inplace=True)]
    return nn.Sequential(*layers)


class UNet(nn.Module):
    """U-Net enhancer (docs/method.md, section 9).

    ``depth`` stride-2 downsamplings, channel width ``width * 2**level`` (capped at
    ``max_width``), bilinear upsampling with skip connections, and a head whose output
    becomes the image through ``output`` (:mod:`enhancement.outputs`: a bounded
    residual, Zero-DCE-style curves, or a smooth edge-aware gain map). No normalisation layers,
    so a batch of one behaves like a batch of many and DDP needs no synchronised
    statistics. Inputs of any size work: the image is padded (reflect, or replicate for
    tiny images) to a multiple of ``2**depth`` inside and cropped back.

    Args:
        width: channels at full resolution.
        depth: number of down/up-sampling levels.
        blocks: 3x3 convolutions per level.
        max_width: cap on the channel count.
        output: ``"residual"``, ``"curves"``, ``"gain"`` or ``"gain_denoise"`` (``gain``
            followed by a noise-aware luma/chroma denoising stage, :func:`apply_gain_denoise`).
        curve_iterations: curves applied one after another (``curves``).
        gain_scale, gain_max, gain_residual: block size and range of the gain map, and
            the amplitude of its optional extra residual (``gain``; see :func:`apply_gain`).
        gain_residual_highpass: 0, a free residual, or an odd window ``k >= 3``: the
            residual loses its ``k`` x ``k`` local mean, so it cannot shift exposure or colour.
        gain_param: ``"log"`` (the head's channel is the log-gain) or ``"tanh"`` (the
            first version, which saturates at ``gain_max``; files without the key use it).
        global_context: add an image-level context to the bottleneck: its features are
            averaged over the whole image, passed through two 1x1 convolutions (the last
            zero-initialised, so the network starts as without it) and added back at every
            position. Every pixel then knows how dark the *whole* image is, not only its
            receptive field: a dark pixel next to a lamp is brightened like the rest of a
            dark shot instead of read as part of a well-exposed scene (the dark halos
            around bright objects of a purely local network). Files without the key: off.
        denoise_strength: ``gain_denoise``: the largest weight with which the smoothed
            luma and chroma replace the gained ones, in [0, 1]; 0 is the ``gain`` output exactly.
        denoise_radius: ``gain_denoise``: the luma guided filter's window radius
            (``(2r+1)^2`` pixels; chroma uses ``2r``).

    Shape:
        - Input: ``(B, 3, H, W)`` float RGB in [0, 1], any ``H, W >= 1``.
        - Output: ``(B, 3, H, W)`` float RGB in [0, 1].

    Example:
        >>> net = create_unet(width=16, depth=2)
        >>> net(torch.rand(1, 3, 37, 50)).shape
        torch.Size([1, 3, 37, 50])
    """

    def __init__(self, width: int = 32, depth: int = 3, blocks: int = 2, max_width: int = 256,
                 output: str = "residual", curve_iterations: int = 8, gain_scale: int = 8, gain_max: float = 16.0,
                 gain_residual: float = 0.0, gain_param: str = "log", global_context: bool = False,
                 gain_residual_highpass: int = 0, denoise_strength: float = 1.0, denoise_radius: int = 2) -> None:
        super().__init__()
        if min(width, depth, blocks, max_width) < 1:
            raise ValueError(
                f"width, depth, blocks and max_width must be >= 1, got {width}, {depth}, {blocks}, {max_width}"
            )
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {list(OUTPUTS)}, got {output!r}")
        if gain_param not in GAIN_PARAMS:
            raise ValueError(f"gain_param must be one of {list(GAIN_PARAMS)}, got {gain_param!r}")
        if curve_iterations < 1 or gain_scale < 1 or not gain_max > 1 or not 0 <= gain_residual < 1:
            raise ValueError("need curve_iterations >= 1, gain_scale >= 1, gain_max > 1 and 0 <= gain_residual < 1, "
                             f"got {curve_iterations}, {gain_scale}, {gain_max}, {gain_residual}")
        self.width, self.depth, self.blocks, self.max_width = width, depth, blocks, max_width
        self.output, self.curve_iterations = output, curve_iterations
        self.gain_scale, self.gain_max, self.gain_residual = gain_scale, float(gain_max), float(gain_residual)
        if gain_residual_highpass != 0 and (gain_residual_highpass < 3 or gain_residual_highpass % 2 == 0):
            raise ValueError(f"gain_residual_highpass must be 0 (a free residual) or an odd size >= 3, got {gain_residual_highpass}")
        self.gain_param, self.global_context = gain_param, bool(global_context)
        self.gain_residual_highpass = int(gain_residual_highpass)
        if not 0 <= denoise_strength <= 1 or denoise_radius < 1:
            raise ValueError("need 0 <= denoise_strength <= 1 and denoise_radius >= 1, "
                             f"got {denoise_strength} and {denoise_radius}")
        if output == "gain_denoise" and gain_residual > 0:
            raise ValueError(f"output 'gain_denoise' takes no residual (its denoising stage replaces it): "
                             f"gain_residual must be 0, got {gain_residual}")
        self.denoise_strength, self.denoise_radius = float(denoise_strength), int(denoise_radius)
        widths = [min(width * 2**i, max_width) for i in range(depth + 1)]
        self.stem = _conv_block(3, widths[0], blocks)
        self.down = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(widths[i], widths[i + 1], 3, stride=2, padding=1),
                nn.LeakyReLU(0.2, inplace=True),
                _conv_block(widths[i + 1], widths[i + 1], blocks),
            )
            for i in range(depth)
        )
        self.context = None
        if self.global_context:
            self.context = nn.Sequential(nn.Conv2d(widths[-1], widths[-1], 1), nn.LeakyReLU(0.2, inplace=True),
                                         nn.Conv2d(widths[-1], widths[-1], 1))
            nn.init.zeros_(self.context[-1].weight)
            nn.init.zeros_(self.context[-1].bias)
        self.reduce = nn.ModuleList(nn.Conv2d(widths[i + 1], widths[i], 1) for i in range(depth))
        self.up = nn.ModuleList(_conv_block(2 * widths[i], widths[i], blocks) for i in range(depth))
        self.head = nn.Conv2d(widths[0], head_channels(output, curve_iterations, gain_residual), 3, padding=1)
        # Small, not zero: the network starts close to the identity, yet every layer
        # receives a gradient from the first step on.
        nn.init.normal_(self.head.weight, std=1e-3)
        nn.init.zeros_(self.head.bias)

    def config(self) -> Dict[str, Any]:
        """Constructor arguments (stored beside exported weights)."""
        return {"width": self.width, "depth": self.depth, "blocks": self.blocks, "max_width": self.max_width,
                "output": self.output, "curve_iterations": self.curve_iterations, "gain_scale": self.gain_scale,
                "gain_max": self.gain_max, "gain_residual": self.gain_residual, "gain_param": self.gain_param,
                "global_context": self.global_context, "gain_residual_highpass": self.gain_residual_highpass,
                "denoise_strength": self.denoise_strength, "denoise_radius": self.denoise_radius}

    def forward(self, images: torch.Tensor, *, check: bool = True, return_maps: bool = False):
        """``(B, 3, H, W)`` in [0, 1] -> enhanced ``(B, 3, H, W)`` in [0, 1]; with
        ``return_maps``, ``(enhanced, maps)``: the head's maps in [-1, 1] (the curve
        parameters of ``curves``, the log-gain over ``log(gain_max)`` of ``gain`` and
        ``gain_denoise``, ``(B, 1, H, W)``), for regularisers."""
        if check:
            check_images(images, min_size=1)
        h, w = images.shape[-2:]
        multiple = 2**self.depth
        pad_h, pad_w = (-h) % multiple, (-w) % multiple
        x = images
        if pad_h or pad_w:
            mode = "reflect" if pad_h < h and pad_w < w else "replicate"
            x = F.pad(images, (0, pad_w, 0, pad_h), mode=mode)
        feats = [self.stem(x)]
        for down in self.down:
            feats.append(down(feats[-1]))
        y = feats.pop()
        if self.context is not None:  # (B, C, 1, 1) image-level features, broadcast to every position
            y = y + self.context(y.mean(dim=(2, 3), keepdim=True))
        for i in reversed(range(self.depth)):
            skip = feats.pop()
            y = F.interpolate(self.reduce[i](y), size=skip.shape[-2:], mode="bilinear", align_corners=False)
            y = self.up[i](torch.cat([y, skip], dim=1))
        head = self.head(y)[..., :h, :w]
        if self.output == "curves":
            out = apply_curves(images, torch.tanh(head.float())).to(images.dtype)
        elif self.output == "gain":
            out = apply_gain(images, head, scale=self.gain_scale, gain_max=self.gain_max,
                             residual=self.gain_residual, gain_param=self.gain_param,
                             highpass=self.gain_residual_highpass).to(images.dtype)
        elif self.output == "gain_denoise":
            out = apply_gain_denoise(images, head, scale=self.gain_scale, gain_max=self.gain_max,
                                     gain_param=self.gain_param, strength=self.denoise_strength,
                                     radius=self.denoise_radius).to(images.dtype)
        else:
            out = bounded_residual(images, torch.tanh(head).to(images.dtype))
        if return_maps:
            if self.output in ("gain", "gain_denoise"):  # the log-gain over its bound, in [-1, 1] (tanh(logit) for "tanh")
                bound = math.log(self.gain_max)
                return out, log_gain(head.float()[:, :1], self.gain_max, self.gain_param) / bound
            return out, torch.tanh(head.float())
        return out


def create_unet(width: int = 32, depth: int = 3, blocks: int = 2, max_width: int = 256, **output) -> UNet:
    """Build a freshly initialised :class:`UNet` (see its docstring for the arguments;
    ``output`` takes its output formulation's keywords)."""
    return UNet(width, depth, blocks, max_width, **output)
