"""Reference losses the benchmarks compare :class:`attiqa_loss.AttiqaLoss` against.

Both take ``(B, 3, H, W)`` float RGB in [0, 1] and are frozen (no parameter requires
grad), so a backward pass computes the gradient to the input only, as a training loss
on a generator's output would.
"""

from __future__ import annotations

import logging
import warnings
from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ClipIqaStyleLoss", "LpipsToReference", "register_clip_config"]

#: CLIP-IQA's antonym pair (Wang et al., AAAI 2023).
CLIP_IQA_PROMPTS = ("Good photo.", "Bad photo.")
#: Trained CLIP's logit scale; a random model's own scale (1/0.07) would not match real use.
CLIP_LOGIT_SCALE = 100.0


def register_clip_config(path: Optional[str]) -> None:
    """Make an open_clip model config JSON (``NAME.json`` -> model ``NAME``) available."""
    if path:
        import open_clip

        open_clip.add_model_config(path)


class ClipIqaStyleLoss(nn.Module):
    """``1 - softmax(100 * [cos(f, t+), cos(f, t-)])[0]`` with a CLIP image encoder.

    Text features of the antonym prompts are computed once; the text tower is then
    dropped. The input is resized (bilinear, antialiased) to the encoder's fixed input
    size (224 for RN50, whose attention pool has a fixed size) and CLIP-normalised.

    Args:
        model_name: an open_clip architecture name, e.g. ``"RN50"``.
        pretrained: an open_clip pretrained tag or file, ``None`` for random weights.
        prompts: ``(positive, negative)`` texts.

    Shape:
        - Input: ``(B, 3, H, W)`` float RGB in [0, 1].
        - Output: scalar (mean over the batch); lower is better.
    """

    def __init__(self, model_name: str = "RN50", pretrained: Optional[str] = None,
                 prompts: Tuple[str, str] = CLIP_IQA_PROMPTS) -> None:
        super().__init__()
        import open_clip

        # open_clip warns about every random-weight model; the benchmark reports that itself.
        logging.disable(logging.WARNING)
        try:
            model = open_clip.create_model(model_name, pretrained=pretrained)
        finally:
            logging.disable(logging.NOTSET)
        model.eval()
        tokenizer = open_clip.get_tokenizer(model_name)
        with torch.no_grad():
            text = F.normalize(model.encode_text(tokenizer(list(prompts))).float(), dim=-1)
        self.visual = model.visual
        self.visual.requires_grad_(False)
        size = self.visual.image_size
        self.image_size = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
        self.register_buffer("text", text, persistent=False)
        self.register_buffer("mean", torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(images, size=self.image_size, mode="bilinear", align_corners=False, antialias=True)
        f = F.normalize(self.visual((x - self.mean) / self.std).float(), dim=-1)
        p_good = torch.softmax(CLIP_LOGIT_SCALE * f @ self.text.t(), dim=-1)[:, 0]
        return (1 - p_good).mean()


class LpipsToReference(nn.Module):
    """LPIPS (the ``lpips`` package) of the input against a fixed reference batch.

    Built with ``pretrained=False, pnet_rand=True``: random trunk and linear layers, so
    nothing is downloaded; the cost is that of the real metric. The reference is a
    fixed random image per input shape and the call is the usual ``lpips(x, ref)``, so
    both branches run every step.

    Shape:
        - Input: ``(B, 3, H, W)`` float RGB in [0, 1].
        - Output: scalar (mean over the batch).
    """

    def __init__(self, net: str = "alex") -> None:
        super().__init__()
        import lpips

        with warnings.catch_warnings():
            # torchvision's deprecation notice for lpips's `pretrained=` argument.
            warnings.simplefilter("ignore", UserWarning)
            self.metric = lpips.LPIPS(net=net, pretrained=False, pnet_rand=True, verbose=False)
        self.metric.eval()
        self.metric.requires_grad_(False)
        self._references: Dict[Tuple, torch.Tensor] = {}

    def reference(self, images: torch.Tensor) -> torch.Tensor:
        key = (tuple(images.shape), images.device, images.dtype)
        if key not in self._references:
            g = torch.Generator().manual_seed(0)
            ref = torch.rand(images.shape, generator=g).to(images.device, images.dtype)
            self._references[key] = ref.contiguous(memory_format=torch.channels_last) if (
                images.is_contiguous(memory_format=torch.channels_last) and not images.is_contiguous()
            ) else ref
        return self._references[key]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.metric(images, self.reference(images), normalize=True).mean()
