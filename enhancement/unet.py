"""The enhancement U-Net: a residual image-to-image network whose output stays in [0, 1]."""

from __future__ import annotations

from typing import Any, Dict, List

import torch
import torch.nn.functional as F
from torch import nn

from attiqa_loss.checks import check_images

__all__ = ["UNet", "create_unet", "bounded_residual"]


def bounded_residual(images: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    """Apply a residual in (-1, 1) so the result stays in [0, 1] without clamping.

    A positive ``r`` moves a pixel the fraction ``r`` of its way up to 1, a negative one
    the fraction ``|r|`` of its way down to 0: ``x + relu(r) * (1 - x) - relu(-r) * x``.
    Unlike a clamp this never cuts the gradient: ``d out / d r`` is ``1 - x`` or ``x``
    and ``d out / d x = 1 - |r|``.

    Args:
        images: ``(B, 3, H, W)`` float RGB in [0, 1].
        residual: same shape, values in (-1, 1) (e.g. after ``tanh``).

    Returns:
        ``(B, 3, H, W)`` in [0, 1].
    """
    return images + F.relu(residual) * (1 - images) - F.relu(-residual) * images


def _conv_block(c_in: int, c_out: int, blocks: int) -> nn.Sequential:
    layers: List[nn.Module] = []
    for i in range(blocks):
        layers += [nn.Conv2d(c_in if i == 0 else c_out, c_out, 3, padding=1), nn.LeakyReLU(0.2, inplace=True)]
    return nn.Sequential(*layers)


class UNet(nn.Module):
    """U-Net enhancer with a bounded residual output (docs/method.md, section 9).

    ``depth`` stride-2 downsamplings, channel width ``width * 2**level`` (capped at
    ``max_width``), bilinear upsampling with skip connections, and a ``tanh`` head whose
    output is applied to the input by :func:`bounded_residual`. No normalisation layers,
    so a batch of one behaves like a batch of many and DDP needs no synchronised
    statistics. Inputs of any size work: the image is padded (reflect, or replicate for
    tiny images) to a multiple of ``2**depth`` inside and cropped back.

    Args:
        width: channels at full resolution.
        depth: number of down/up-sampling levels.
        blocks: 3x3 convolutions per level.
        max_width: cap on the channel count.

    Shape:
        - Input: ``(B, 3, H, W)`` float RGB in [0, 1], any ``H, W >= 1``.
        - Output: ``(B, 3, H, W)`` float RGB in [0, 1].

    Example:
        >>> net = create_unet(width=16, depth=2)
        >>> net(torch.rand(1, 3, 37, 50)).shape
        torch.Size([1, 3, 37, 50])
    """

    def __init__(self, width: int = 32, depth: int = 3, blocks: int = 2, max_width: int = 256) -> None:
        super().__init__()
        if min(width, depth, blocks, max_width) < 1:
            raise ValueError(
                f"width, depth, blocks and max_width must be >= 1, got {width}, {depth}, {blocks}, {max_width}"
            )
        self.width, self.depth, self.blocks, self.max_width = width, depth, blocks, max_width
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
        self.reduce = nn.ModuleList(nn.Conv2d(widths[i + 1], widths[i], 1) for i in range(depth))
        self.up = nn.ModuleList(_conv_block(2 * widths[i], widths[i], blocks) for i in range(depth))
        self.head = nn.Conv2d(widths[0], 3, 3, padding=1)
        # Small, not zero: the network starts close to the identity, yet every layer
        # receives a gradient from the first step on.
        nn.init.normal_(self.head.weight, std=1e-3)
        nn.init.zeros_(self.head.bias)

    def config(self) -> Dict[str, Any]:
        """Constructor arguments (stored beside exported weights)."""
        return {"width": self.width, "depth": self.depth, "blocks": self.blocks, "max_width": self.max_width}

    def forward(self, images: torch.Tensor, *, check: bool = True) -> torch.Tensor:
        """``(B, 3, H, W)`` in [0, 1] -> enhanced ``(B, 3, H, W)`` in [0, 1]."""
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
        for i in reversed(range(self.depth)):
            skip = feats.pop()
            y = F.interpolate(self.reduce[i](y), size=skip.shape[-2:], mode="bilinear", align_corners=False)
            y = self.up[i](torch.cat([y, skip], dim=1))
        residual = torch.tanh(self.head(y))[..., :h, :w]
        return bounded_residual(images, residual.to(images.dtype))


def create_unet(width: int = 32, depth: int = 3, blocks: int = 2, max_width: int = 256) -> UNet:
    """Build a freshly initialised :class:`UNet` (see its docstring for the arguments)."""
    return UNet(width=width, depth=depth, blocks=blocks, max_width=max_width)
