"""The enhancement objective: fidelity, SSIM, LPIPS, AttiqaLoss and no-reference regularisers.

``total = sum_k weight_k * term_k`` over the terms with a positive weight. Reference
terms compare the output with a target; no-reference terms (``attiqa``, ``exposure``,
``tv``, and Zero-DCE's ``spatial``, ``color``, ``smooth``) need no target, so they also
serve unpaired training. The four non-reference losses of Zero-DCE (Guo et al., CVPR
2020: spatial consistency, exposure control, colour constancy, illumination smoothness)
are written here from the paper's definitions.
"""

from __future__ import annotations

import re
import sys
import time
import warnings
from pathlib import Path
from typing import Dict, Optional, Tuple

import kornia
import torch
import torch.nn.functional as F
from torch import nn

from attiqa_loss import AttiqaLoss

__all__ = [
    "REFERENCE_TERMS",
    "charbonnier_loss",
    "exposure_control_loss",
    "total_variation_loss",
    "spatial_consistency_loss",
    "colour_constancy_loss",
    "illumination_smoothness_loss",
    "LpipsUnavailable",
    "lpips_backbone_file",
    "load_lpips",
    "resolve_lpips",
    "EnhancementObjective",
]

REFERENCE_TERMS = ("fidelity", "ssim", "lpips")


def charbonnier_loss(output: torch.Tensor, target: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Mean of ``sqrt((output - target) ** 2 + eps ** 2)``: L1 with a smooth minimum.

    Shape: ``(B, C, H, W)`` twice -> scalar.
    """
    return torch.sqrt((output - target) ** 2 + eps * eps).mean()


def exposure_control_loss(images: torch.Tensor, level: float = 0.6, patch: int = 16) -> torch.Tensor:
    """Zero-DCE's exposure control: mean ``|local mean intensity - level|`` over
    ``patch x patch`` tiles (whole image if it is smaller).

    Args:
        images: ``(B, 3, H, W)`` float RGB in [0, 1].
        level: the well-exposed grey level to pull tiles towards.
        patch: tile side.

    Returns:
        Scalar; 0 when every tile's mean equals ``level``.
    """
    grey = images.mean(dim=1, keepdim=True)
    k = max(1, min(patch, *grey.shape[-2:]))
    return (F.avg_pool2d(grey, k) - level).abs().mean()


def total_variation_loss(images: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between neighbouring pixels (kornia ``total_variation``), averaged over the batch."""
    return kornia.losses.total_variation(images, reduction="mean").mean()


def spatial_consistency_loss(output: torch.Tensor, inputs: torch.Tensor, region: int = 4) -> torch.Tensor:
    """Zero-DCE's spatial consistency: the contrast between each ``region`` x ``region``
    block and its four neighbours (of the channel-mean image) should keep its size:
    ``1/K sum_i sum_{j in N(i)} (|Y_i - Y_j| - |I_i - I_j|) ** 2``, ``Y`` the output's and
    ``I`` the input's block means, ``K`` blocks (each neighbouring pair counts twice, as
    in the sum over every block's four neighbours; blocks at the border have fewer).

    Shape: ``(B, 3, H, W)`` twice -> scalar."""
    k = max(1, min(region, *output.shape[-2:]))
    y = F.avg_pool2d(output.mean(dim=1, keepdim=True), k)
    i = F.avg_pool2d(inputs.mean(dim=1, keepdim=True), k)
    total = output.new_zeros(())
    for dy, dx in ((0, 1), (1, 0)):
        h, w = y.shape[-2] - dy, y.shape[-1] - dx
        if h < 1 or w < 1:
            continue
        d_out = (y[..., dy:, dx:] - y[..., :h, :w]).abs()
        d_in = (i[..., dy:, dx:] - i[..., :h, :w]).abs()
        total = total + 2 * ((d_out - d_in) ** 2).sum(dim=(1, 2, 3))
    return (total / (y.shape[-2] * y.shape[-1])).mean()


def colour_constancy_loss(output: torch.Tensor) -> torch.Tensor:
    """Zero-DCE's colour constancy (grey world): ``sum over (p, q) in {(R, G), (R, B), (G, B)}
    of (J_p - J_q) ** 2``, ``J_p`` the mean of channel ``p``; averaged over the batch.

    Shape: ``(B, 3, H, W)`` -> scalar."""
    r, g, b = output.mean(dim=(2, 3)).unbind(dim=1)
    return ((r - g) ** 2 + (r - b) ** 2 + (g - b) ** 2).mean()


def illumination_smoothness_loss(maps: torch.Tensor) -> torch.Tensor:
    """Zero-DCE's illumination smoothness of the curve parameter maps:
    ``1/N sum_n sum_c mean((|d/dx A_n^c| + |d/dy A_n^c|) ** 2)`` over ``N`` iterations and
    the three channels (``maps``: ``(B, 3N, H, W)``; a map with fewer than 3 channels
    counts as one iteration). Averaged over the batch."""
    dx = (maps[..., :-1, 1:] - maps[..., :-1, :-1]).abs()
    dy = (maps[..., 1:, :-1] - maps[..., :-1, :-1]).abs()
    per_channel = ((dx + dy) ** 2).mean(dim=(0, 2, 3))
    return per_channel.sum() / max(1, maps.shape[1] // 3)


class LpipsUnavailable(RuntimeError):
    """The lpips package or its backbone weights cannot be loaded."""


#: the starts of the warnings torchvision gives for ``pretrained=`` (what lpips passes)
_TORCHVISION_LEGACY_WARNINGS = ("The parameter 'pretrained' is deprecated",
                                "Arguments other than a weight enum or `None` for 'weights' are deprecated")


def load_lpips(net: str = "alex") -> nn.Module:
    """A frozen ``lpips.LPIPS`` metric in eval mode.

    The lpips package ships its small linear heads, but builds the AlexNet/VGG/SqueezeNet
    backbone through torchvision, which downloads ImageNet weights on first use (cached
    under ``torch.hub.get_dir()``). Offline without that cache this fails.

    Raises:
        LpipsUnavailable: the package or the backbone weights could not be loaded; the
            message says why and how to provide the weights.
    """
    try:
        import lpips

        with warnings.catch_warnings():
            # lpips builds its backbone with torchvision's pre-0.13 ``pretrained=`` argument:
            # torchvision's two deprecation warnings about it are lpips's business, not the user's.
            for message in _TORCHVISION_LEGACY_WARNINGS:
                warnings.filterwarnings("ignore", message=re.escape(message), category=UserWarning)
            model = lpips.LPIPS(net=net, verbose=False)
    except Exception as exc:  # import error, URLError, corrupt cache file, ...
        raise LpipsUnavailable(
            f"LPIPS ({net}) is unavailable: {type(exc).__name__}: {exc}. lpips builds its backbone from "
            f"torchvision's ImageNet weights, downloaded on first use into {torch.hub.get_dir()}/checkpoints; "
            "copy them there on a machine without internet access"
        ) from exc
    model.eval().requires_grad_(False)
    return model


#: lpips's backbone per ``net``: the torchvision weights enum its ``pretrained=True`` means
_LPIPS_BACKBONES = {"alex": "AlexNet_Weights", "vgg": "VGG16_Weights", "squeeze": "SqueezeNet1_1_Weights"}


def lpips_backbone_file(net: str) -> Path:
    """The file in the torch hub cache (``torch.hub.get_dir()/checkpoints``) that holds the
    ImageNet weights of lpips's ``net`` backbone; lpips downloads it when it is missing."""
    import torchvision.models

    url = getattr(torchvision.models, _LPIPS_BACKBONES[net]).IMAGENET1K_V1.url
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def _missing_backbone(net: str) -> Optional[Path]:
    """:func:`lpips_backbone_file` when it is not on this machine; None when it is (or when
    torchvision cannot say: :func:`load_lpips` then reports why)."""
    try:
        path = lpips_backbone_file(net)
    except Exception:  # noqa: BLE001 - no torchvision, an unknown net: load_lpips says what is wrong
        return None
    return None if path.is_file() else path


def resolve_lpips(net: str, *, weight: float, allow_missing: bool, for_metrics: bool,
                  say: bool = True) -> Optional[nn.Module]:
    """Load LPIPS when the loss (``weight > 0``) or validation (``for_metrics``) wants it.

    Nothing is downloaded unless asked for: only ``weight > 0`` with ``allow_missing``
    false (``loss.lpips_weight`` > 0, ``loss.lpips_allow_missing: false``) lets lpips fetch
    its backbone weights. In every other case, when they are not in the torch hub cache
    (:func:`lpips_backbone_file`), LPIPS is off: one line on stderr says so (when ``say``:
    rank 0) and ``None`` is returned.

    When it cannot be loaded: with ``weight > 0`` and not ``allow_missing`` the error is
    raised; otherwise a message goes to stderr and ``None`` is returned (the LPIPS loss
    term and metric are then off).
    """
    if weight <= 0 and not for_metrics:
        return None
    what = ("the LPIPS loss term and metric are" if weight > 0 and for_metrics
            else "the LPIPS loss term is" if weight > 0 else "the LPIPS metric is")
    asked = weight > 0 and not allow_missing
    missing = None if asked else _missing_backbone(net)
    if missing is not None:
        if say:
            print(f"attiqa-enhance: {what} off: the ImageNet weights of LPIPS's {net} backbone are not on this machine "
                  f"({missing}) and are downloaded only when asked for; to use LPIPS, put that file there or set "
                  "loss.lpips_weight > 0 with loss.lpips_allow_missing=false", file=sys.stderr)
        return None
    try:
        return load_lpips(net)
    except LpipsUnavailable as exc:
        if asked:
            raise LpipsUnavailable(
                f"{exc}. loss.lpips_weight={weight} needs it; set loss.lpips_allow_missing=true to train without "
                "the LPIPS term, or loss.lpips_weight=0"
            ) from exc
        if say:
            print(f"attiqa-enhance: warning: {exc}; {what} disabled", file=sys.stderr)
        return None


class EnhancementObjective(nn.Module):
    """Weighted sum of enhancement loss terms (docs/method.md, section 9).

    Terms (weight 0 switches one off):

    - ``fidelity``: L1 or Charbonnier distance to the target.
    - ``ssim``: ``1 - SSIM`` (kornia ``ssim_loss`` is ``(1 - SSIM) / 2``; doubled here).
    - ``lpips``: LPIPS distance (needs ``lpips_model``; inputs mapped from [0, 1] to [-1, 1]).
    - ``attiqa``: :class:`attiqa_loss.AttiqaLoss` on the output (scores quality-aligned,
      1 = desirable; the term is the weighted distance to the attribute targets).
    - ``exposure``: :func:`exposure_control_loss`.
    - ``tv``: :func:`total_variation_loss`.
    - ``spatial``: :func:`spatial_consistency_loss` against the input (needs ``inputs``).
    - ``color``: :func:`colour_constancy_loss`.
    - ``smooth``: :func:`illumination_smoothness_loss` of the network's output maps
      (needs ``maps``: the curve parameters of a ``curves`` enhancer, ...).

    Frozen models (LPIPS, the quality network) never leave eval mode.

    Args:
        fidelity: ``"l1"`` or ``"charbonnier"``.
        weights: per-term weights, e.g. ``{"fidelity": 1.0, "attiqa": 0.1}``; missing = 0.
        charbonnier_eps, ssim_window, exposure_level, exposure_patch: term settings.
        lpips_model: a frozen LPIPS module, needed when ``weights["lpips"] > 0``.
        attiqa: an :class:`AttiqaLoss`, needed when ``weights["attiqa"] > 0``.

    Shape:
        - output, target: ``(B, 3, H, W)`` float RGB in [0, 1].
        - Returns ``(total scalar, {term: unweighted scalar})`` for the active terms.
    """

    TERMS = ("fidelity", "ssim", "lpips", "attiqa", "exposure", "tv", "spatial", "color", "smooth")

    def __init__(
        self,
        weights: Dict[str, float],
        *,
        fidelity: str = "charbonnier",
        charbonnier_eps: float = 1e-3,
        ssim_window: int = 11,
        exposure_level: float = 0.6,
        exposure_patch: int = 16,
        lpips_model: Optional[nn.Module] = None,
        attiqa: Optional[AttiqaLoss] = None,
    ) -> None:
        super().__init__()
        unknown = sorted(set(weights) - set(self.TERMS))
        if unknown:
            raise ValueError(f"unknown loss term(s) {unknown}; expected a subset of {list(self.TERMS)}")
        bad = {k: v for k, v in weights.items() if not v >= 0}
        if bad:
            raise ValueError(f"loss term weights must be >= 0, got {bad}")
        if fidelity not in ("l1", "charbonnier"):
            raise ValueError(f"fidelity must be 'l1' or 'charbonnier', got {fidelity!r}")
        self.weights = {k: float(v) for k, v in weights.items() if v > 0}
        if not self.weights:
            raise ValueError(f"at least one loss term needs a positive weight, got {dict(weights)}")
        if "lpips" in self.weights and lpips_model is None:
            raise ValueError("the lpips term has a positive weight but no LPIPS model was given")
        if "attiqa" in self.weights and attiqa is None:
            raise ValueError("the attiqa term has a positive weight but no AttiqaLoss was given")
        self.fidelity, self.charbonnier_eps, self.ssim_window = fidelity, charbonnier_eps, ssim_window
        self.exposure_level, self.exposure_patch = exposure_level, exposure_patch
        self.lpips_model, self.attiqa = lpips_model, attiqa

    @property
    def needs_target(self) -> bool:
        return any(t in self.weights for t in REFERENCE_TERMS)

    @property
    def needs_maps(self) -> bool:
        """Whether :meth:`forward` needs the network's output maps (the ``smooth`` term)."""
        return "smooth" in self.weights

    def train(self, mode: bool = True) -> "EnhancementObjective":
        super().train(mode)
        if self.lpips_model is not None:
            self.lpips_model.eval()
        return self

    def _term(self, name: str, output: torch.Tensor, target: Optional[torch.Tensor],
              inputs: Optional[torch.Tensor], maps: Optional[torch.Tensor]) -> torch.Tensor:
        if name == "fidelity":
            if self.fidelity == "l1":
                return F.l1_loss(output, target)
            return charbonnier_loss(output, target, self.charbonnier_eps)
        if name == "ssim":
            return 2 * kornia.losses.ssim_loss(output, target, self.ssim_window)
        if name == "lpips":
            return self.lpips_model(output, target, normalize=True).mean()
        if name == "attiqa":
            return self.attiqa(output)
        if name == "exposure":
            return exposure_control_loss(output, self.exposure_level, self.exposure_patch)
        if name == "spatial":
            return spatial_consistency_loss(output, inputs)
        if name == "color":
            return colour_constancy_loss(output)
        if name == "smooth":
            return illumination_smoothness_loss(maps)
        return total_variation_loss(output)

    def forward(
        self, output: torch.Tensor, target: Optional[torch.Tensor] = None, *, inputs: Optional[torch.Tensor] = None,
        maps: Optional[torch.Tensor] = None, timings: Optional[Dict[str, float]] = None,
    ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """``(total, {term: value})``; ``timings``, when given, receives each term's forward
        seconds (``benchmarks/enhance_step_profile.py``)."""
        if target is None and self.needs_target:
            used = [t for t in REFERENCE_TERMS if t in self.weights]
            raise ValueError(f"loss terms {used} compare with a target, but no target was given (unpaired data?)")
        if inputs is None and "spatial" in self.weights:
            raise ValueError("the spatial term compares with the input, but no inputs were given")
        if maps is None and self.needs_maps:
            raise ValueError("the smooth term needs the network's output maps, but no maps were given")
        output = output.float()
        target = target.float() if target is not None else None
        inputs = inputs.float() if inputs is not None else None
        maps = maps.float() if maps is not None else None
        terms = {}
        for name in self.weights:
            start = time.perf_counter() if timings is not None else 0.0
            terms[name] = self._term(name, output, target, inputs, maps).float()
            if timings is not None:
                timings[name] = time.perf_counter() - start
        total = sum(self.weights[name] * value for name, value in terms.items())
        return total, terms
