"""Typed configuration of ``attiqa-enhance train`` (YAML -> dataclasses, see :mod:`attiqa_train.config`).

Every section rejects unknown keys (``attiqa_train.config`` does that) and checks its values
in ``__post_init__``, so a bad value fails at start-up with a message naming the key,
not an hour into training.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Dict, Literal, Optional, Tuple

from attiqa_loss.attributes import validate_attribute_mapping
from attiqa_train.config import (AMP_VALUE_ALIASES, check_betas, check_lr_range, check_minimums, check_positive,
                                 check_train_minimums)

__all__ = [
    "UNetConfig",
    "LowLightSynthesisConfig",
    "NoiseSynthesisConfig",
    "DataConfig",
    "EnhanceLossConfig",
    "EnhanceTrainConfig",
    "EnhanceValConfig",
    "EnhanceConfig",
]

MIN_CROP = 32  # the quality network's smallest accepted input
#: loss terms that need no reference image (``loss.<name>_weight``): the only ones unpaired images train
NO_REFERENCE_TERMS = ("attiqa", "exposure", "tv", "spatial", "color", "smooth")


def _check_range(name: str, value: Tuple[float, float], low: float, high: Optional[float] = None) -> None:
    if len(value) != 2 or value[0] > value[1]:
        raise ValueError(f"{name} must be a [min, max] pair with min <= max, got {list(value)}")
    if value[0] < low or (high is not None and value[1] > high):
        bound = f"[{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{name} must lie in {bound}, got {list(value)}")


@dataclass
class UNetConfig:
    """U-Net shape: ``width`` channels at full resolution, doubled at each of ``depth`` levels;
    ``output``: how its last layer becomes the image (:mod:`enhancement.outputs`):
    ``residual`` (a bounded residual), ``curves`` (``curve_iterations`` Zero-DCE-style
    curves per pixel and channel) or ``gain`` (one smooth, edge-aware exposure gain per
    pixel on ``gain_scale``-pixel blocks, within ``[1/gain_max, gain_max]``, plus a residual
    of amplitude ``gain_residual`` when > 0, free or, with ``gain_residual_highpass = k``
    (odd, >= 3), stripped of its ``k`` x ``k`` local mean, so it can remove noise but
    cannot paint a colour cast or move exposure; ``gain_param``: ``log``, the head's channel is
    the log-gain, or ``tanh``, the first version, which can stick at ``gain_max``);
    ``global_context``: the bottleneck also sees the whole image's averaged features
    (how dark the whole shot is; against halos next to bright objects).
    ``gain_denoise``: ``gain`` (no residual) followed by a noise-aware luma/chroma
    denoising stage whose blending weights grow with the applied gain, capped at
    ``denoise_strength`` (in [0, 1]; 0 = ``gain`` exactly), with guided-filter windows of
    radius ``denoise_radius`` (luma; chroma twice that).
    ``init_checkpoint``: start from trained enhancer weights (an ``enhancer.safetensors``
    file or run folder; ``default``: the enhancer shipped in the package) instead of a
    fresh initialisation, to fine-tune; its stored U-Net shape must equal this section's."""

    width: int = 32
    depth: int = 3
    blocks: int = 2
    max_width: int = 256
    output: Literal["residual", "curves", "gain", "gain_denoise"] = "residual"
    curve_iterations: int = 8
    gain_scale: int = 8
    gain_max: float = 16.0
    gain_residual: float = 0.0
    gain_param: Literal["log", "tanh"] = "log"
    gain_residual_highpass: int = 0
    global_context: bool = False
    denoise_strength: float = 1.0
    denoise_radius: int = 2
    init_checkpoint: Optional[str] = None

    def unet_kwargs(self) -> Dict[str, Any]:
        """The :func:`enhancement.unet.create_unet` arguments (every key but ``init_checkpoint``)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "init_checkpoint"}

    def __post_init__(self) -> None:
        check_minimums("model", self, width=1, depth=1, blocks=1, max_width=1, curve_iterations=1, gain_scale=1)
        if not self.gain_max > 1:
            raise ValueError(f"model.gain_max must be > 1, got {self.gain_max}")
        if not 0 <= self.gain_residual < 1:
            raise ValueError(f"model.gain_residual must be in [0, 1), got {self.gain_residual}")
        if self.gain_residual_highpass != 0 and (self.gain_residual_highpass < 3 or self.gain_residual_highpass % 2 == 0):
            raise ValueError("model.gain_residual_highpass must be 0 (a free residual) or an odd window >= 3, "
                             f"got {self.gain_residual_highpass}")
        if not 0 <= self.denoise_strength <= 1:
            raise ValueError(f"model.denoise_strength must be in [0, 1], got {self.denoise_strength}")
        if self.output == "gain_denoise" and self.gain_residual > 0:
            raise ValueError("model.output 'gain_denoise' takes no residual (its denoising stage replaces it): "
                             f"model.gain_residual must be 0, got {self.gain_residual}")
        # the upper bounds an exported enhancer file must keep to (enhancement.unet.UNET_LIMITS),
        # so that what trains here can be loaded again
        from .unet import check_unet_config

        check_unet_config(self.unet_kwargs(), "model")


@dataclass
class LowLightSynthesisConfig:
    """Low-light synthesis: ``gain * x ** gamma`` with a colour cast, then sensor noise.

    ``shot_noise`` is the Poisson scale ``a`` and ``read_noise`` the Gaussian sigma ``b`` of
    the Poisson-Gaussian model ``var = a * y + b ** 2`` on the darkened signal ``y``: its
    sRGB values (``noise_space: display``) or its linear light (``linear``). With
    ``quantize_bits: 8`` the dark shot is rounded to 8-bit levels.
    """

    exposure: Tuple[float, float] = (0.05, 0.5)
    gamma: Tuple[float, float] = (1.0, 2.5)
    color_cast: float = 0.1
    shot_noise: Tuple[float, float] = (0.0, 0.01)
    read_noise: Tuple[float, float] = (0.0, 0.02)
    #: chance that a training image keeps its exposure (no darkening or cast, noise only)
    keep: float = 0.0
    #: chance that a training image gets bright light sources (lamps), the same in the
    #: target and the dark shot: a bright region must not mean "well exposed"
    light_sources: float = 0.0
    #: chance that a training image keeps its exposure in one large region (a backlit
    #: scene: a sunlit window in a dark room), the rest darkened
    bright_regions: float = 0.0
    #: where the sensor noise is added: ``display`` (to the sRGB values, the first
    #: version) or ``linear`` (in linear light before the sRGB curve, as a camera makes
    #: it; shot_noise and read_noise are then linear-light values)
    noise_space: Literal["display", "linear"] = "display"
    #: 0: float dark shots; 8: rounded to the levels of an 8-bit file (1 to 16 bits)
    quantize_bits: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.quantize_bits, bool) or not isinstance(self.quantize_bits, int) \
                or not 0 <= self.quantize_bits <= 16:
            raise ValueError(f"lowlight.quantize_bits must be 0 (no rounding) or an integer in [1, 16], "
                             f"got {self.quantize_bits!r}")
        if not 0 <= self.keep < 1:
            raise ValueError(f"lowlight.keep must be in [0, 1), got {self.keep}")
        for name in ("light_sources", "bright_regions"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"lowlight.{name} must be in [0, 1], got {getattr(self, name)}")
        _check_range("lowlight.exposure", self.exposure, 1e-4, 1.0)
        _check_range("lowlight.gamma", self.gamma, 1e-2)
        _check_range("lowlight.shot_noise", self.shot_noise, 0.0)
        _check_range("lowlight.read_noise", self.read_noise, 0.0)
        if not 0 <= self.color_cast < 1:
            raise ValueError(f"lowlight.color_cast must be in [0, 1), got {self.color_cast}")


@dataclass
class NoiseSynthesisConfig:
    """Noise synthesis: Gaussian ``sigma`` or, with probability ``poisson_probability``,
    Poisson-Gaussian ``var = shot_noise * x + read_noise ** 2``; levels drawn uniformly."""

    sigma: Tuple[float, float] = (0.01, 0.2)
    shot_noise: Tuple[float, float] = (0.001, 0.05)
    read_noise: Tuple[float, float] = (0.0, 0.05)
    poisson_probability: float = 0.5

    def __post_init__(self) -> None:
        _check_range("noise.sigma", self.sigma, 0.0)
        _check_range("noise.shot_noise", self.shot_noise, 0.0)
        _check_range("noise.read_noise", self.read_noise, 0.0)
        if not 0 <= self.poisson_probability <= 1:
            raise ValueError(f"noise.poisson_probability must be in [0, 1], got {self.poisson_probability}")


@dataclass
class DataConfig:
    """Where training pairs come from.

    ``mode``: ``paired`` (``train_dir`` holds ``low/`` and ``high/`` with matching names),
    ``synthetic`` (clean photos in ``train_dir``, degraded on the fly as ``task`` says) or
    ``unpaired`` (low-light photos in ``train_dir``, no reference). ``--data DIR`` on the
    command line replaces ``train_dir``. Validation uses ``val_dir`` (same layout) or,
    when it is empty, ``val_images`` files held out of ``train_dir``. ``exclude_every``
    N > 0 never uses every N-th file of ``train_dir`` in sorted order (training or
    validation): the hold-out rule of ``benchmarks/enhance_quality.py`` (and of
    ``synthetic.holdout_every`` in pretraining), so its held-out images stay unseen.
    """

    mode: Literal["paired", "synthetic", "unpaired"] = "synthetic"
    task: Literal["lowlight", "denoise"] = "lowlight"
    train_dir: str = ""
    val_dir: str = ""
    unpaired_dir: str = ""
    unpaired_batch: int = 0
    val_images: int = 4
    exclude_every: int = 0
    crop_size: int = 128
    max_side: Optional[int] = None
    flips: bool = True
    rot90: bool = True
    num_workers: int = 0
    lowlight: LowLightSynthesisConfig = field(default_factory=LowLightSynthesisConfig)
    noise: NoiseSynthesisConfig = field(default_factory=NoiseSynthesisConfig)

    def __post_init__(self) -> None:
        if self.crop_size < MIN_CROP:
            raise ValueError(
                f"data.crop_size must be >= {MIN_CROP} (the quality network's minimum), got {self.crop_size}"
            )
        if self.max_side is not None and self.max_side < self.crop_size:
            raise ValueError(f"data.max_side must be >= data.crop_size ({self.crop_size}), got {self.max_side}")
        if self.exclude_every == 1 or self.exclude_every < 0:
            raise ValueError(f"data.exclude_every must be 0 (off) or >= 2, got {self.exclude_every}")
        check_minimums("data", self, unpaired_batch=0, val_images=0, num_workers=0)
        if self.unpaired_dir and self.unpaired_batch == 0:
            raise ValueError(f"data.unpaired_dir needs data.unpaired_batch >= 1 (how many of its photos join each "
                             f"step), got unpaired_dir={self.unpaired_dir!r} and unpaired_batch=0")
        if (self.unpaired_dir or self.unpaired_batch) and self.mode == "unpaired":
            raise ValueError("data.unpaired_dir/unpaired_batch mix unpaired photos into paired or synthetic training; "
                             "in data.mode 'unpaired' put them in data.train_dir (got unpaired_dir="
                             f"{self.unpaired_dir!r}, unpaired_batch={self.unpaired_batch})")


@dataclass
class EnhanceLossConfig:
    """Objective terms, each with its own weight (0 switches a term off).

    Reference terms (need a target; ``paired``/``synthetic`` only): ``fidelity`` (L1 or
    Charbonnier), ``ssim`` (1 - SSIM), ``lpips``. No-reference terms: ``attiqa``
    (:class:`attiqa_loss.AttiqaLoss` with per-attribute ``attiqa_weights`` and
    ``attiqa_targets``; scores are quality-aligned, 1 = desirable), ``exposure`` (mean
    patch brightness towards ``exposure_level``), ``tv`` (total variation) and Zero-DCE's
    ``spatial`` (spatial consistency with the input), ``color`` (colour constancy) and
    ``smooth`` (smoothness of the network's curve or gain maps).
    ``attiqa_checkpoint``: a ``.safetensors`` quality model, or null for the model
    embedded in the package. ``attiqa_views``: average the quality scores over that
    many random flips/shifts of each batch (``AttiqaLoss(views=...)``; 0 = off), which
    keeps the generator from raising a score with a pixel pattern instead of the
    attribute; most useful without reference terms (unpaired).
    ``lpips_allow_missing``: true = when the backbone weights lpips needs are not on the
    machine (torch hub cache), train without the LPIPS term and metric, downloading
    nothing; false (with ``lpips_weight`` > 0) = lpips may download them, and a failure
    is an error (:func:`enhancement.objectives.resolve_lpips`).
    """

    fidelity: Literal["l1", "charbonnier"] = "charbonnier"
    fidelity_weight: float = 1.0
    charbonnier_eps: float = 1e-3
    ssim_weight: float = 0.2
    ssim_window: int = 11
    lpips_weight: float = 0.0
    lpips_net: Literal["alex", "vgg", "squeeze"] = "alex"
    lpips_allow_missing: bool = False
    attiqa_weight: float = 0.1
    attiqa_checkpoint: Optional[str] = None
    attiqa_weights: Dict[str, float] = field(default_factory=dict)
    attiqa_targets: Dict[str, float] = field(default_factory=dict)
    attiqa_views: int = 0
    exposure_weight: float = 0.0
    exposure_level: float = 0.6
    exposure_patch: int = 16
    tv_weight: float = 0.0
    spatial_weight: float = 0.0
    color_weight: float = 0.0
    smooth_weight: float = 0.0

    def __post_init__(self) -> None:
        check_minimums("loss", self, **{name: 0 for name in (
            "fidelity_weight", "ssim_weight", "lpips_weight", "attiqa_weight", "exposure_weight", "tv_weight",
            "spatial_weight", "color_weight", "smooth_weight")})
        check_positive("loss", self, "charbonnier_eps")
        if self.ssim_window < 3 or self.ssim_window % 2 == 0:
            raise ValueError(f"loss.ssim_window must be an odd integer >= 3, got {self.ssim_window}")
        if not 0 < self.exposure_level < 1:
            raise ValueError(f"loss.exposure_level must be in (0, 1), got {self.exposure_level}")
        check_minimums("loss", self, exposure_patch=1)
        if isinstance(self.attiqa_views, bool) or not isinstance(self.attiqa_views, int) or self.attiqa_views < 0:
            raise ValueError(f"loss.attiqa_views must be an integer >= 0, got {self.attiqa_views!r}")
        validate_attribute_mapping(self.attiqa_weights, "loss.attiqa_weights", low=0.0, high=None, default=1.0)
        validate_attribute_mapping(self.attiqa_targets, "loss.attiqa_targets", low=0.0, high=1.0, default=1.0)


@dataclass
class EnhanceTrainConfig:
    """Optimisation: AdamW, linear warmup then cosine decay to ``min_lr``, gradient
    clipping (``grad_clip`` = 0 disables it), optional EMA of the weights (``ema_decay`` =
    0 disables it). ``batch_size`` is per process: under torchrun the global batch is
    ``batch_size * world_size``. ``amp``: true = bfloat16 autocast on CUDA devices that
    support it, never on CPU (as in ``attiqa-pretrain``; the earlier strings ``auto``,
    ``bf16`` are read as true, ``off`` as false). ``steps`` counts optimiser steps;
    validation runs every ``val_every`` steps and at the end (``val.every``, its earlier
    place, is still read); the resumable state is saved every ``state_every`` steps
    (``ckpt_every``, its earlier name, is still read). The shared rules are
    :data:`attiqa_train.config.TRAIN_MINIMUMS`; ``lr`` must also be > 0 here and
    ``min_lr`` <= ``lr`` (the schedule decays to ``min_lr / lr`` of it); ``betas`` are
    AdamW's, each in [0, 1)."""

    #: earlier spellings of renamed keys (still read from config files and --set)
    KEY_ALIASES: ClassVar[Dict[str, str]] = {"ckpt_every": "state_every"}
    #: earlier values of keys whose type changed (``amp`` was "auto", "bf16" or "off")
    VALUE_ALIASES: ClassVar[Dict[str, Dict[Any, Any]]] = {"amp": AMP_VALUE_ALIASES}

    steps: int = 20000
    batch_size: int = 8
    lr: float = 2e-4
    min_lr: float = 1e-6
    weight_decay: float = 1e-4
    betas: Tuple[float, float] = (0.9, 0.99)
    warmup_steps: int = 500
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    amp: bool = True
    device: str = "auto"
    seed: int = 0
    log_every: int = 10
    val_every: int = 500
    state_every: int = 500
    progress: bool = True

    def __post_init__(self) -> None:
        check_train_minimums(self, min_lr=0.0)
        check_positive("train", self, "lr")
        check_lr_range("train", self)
        check_betas("train", self)
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"train.ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.device != "auto":  # whether this machine has it is checked when training starts
            import torch

            try:
                torch.device(self.device)
            except (RuntimeError, TypeError, ValueError):
                raise ValueError(
                    f"train.device must be 'auto' or a torch device name (cpu, cuda, cuda:1), got {self.device!r}"
                ) from None


@dataclass
class EnhanceValConfig:
    """Validation (every ``train.val_every`` steps and at the end): PSNR/SSIM (LPIPS when it
    can be loaded and ``lpips`` is true) and attribute scores of input, output and target.
    ``at_start``: also validate the untrained network at step 0 (a fresh run only), so
    the TensorBoard lines start where training starts.
    Validation images are centre-cropped to ``crop_size`` (0 = whole image); ``grid_images``
    of them go into the TensorBoard image grid."""

    at_start: bool = False
    crop_size: int = 256
    grid_images: int = 4
    lpips: bool = True

    def __post_init__(self) -> None:
        if self.crop_size != 0 and self.crop_size < MIN_CROP:
            raise ValueError(f"val.crop_size must be 0 (whole image) or >= {MIN_CROP}, got {self.crop_size}")
        check_minimums("val", self, grid_images=0)


@dataclass
class EnhanceConfig:
    """The whole ``attiqa-enhance train`` configuration (see ``configs/enhance_*.yaml``)."""

    #: keys moved to another section (still read from config files and --set): the
    #: validation interval is ``train.val_every``, as in ``attiqa-pretrain train``
    KEY_ALIASES: ClassVar[Dict[str, str]] = {"val.every": "train.val_every"}

    model: UNetConfig = field(default_factory=UNetConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: EnhanceLossConfig = field(default_factory=EnhanceLossConfig)
    train: EnhanceTrainConfig = field(default_factory=EnhanceTrainConfig)
    val: EnhanceValConfig = field(default_factory=EnhanceValConfig)

    def __post_init__(self) -> None:
        if self.data.mode == "unpaired":
            used = [n for n in ("fidelity_weight", "ssim_weight", "lpips_weight") if getattr(self.loss, n) > 0]
            if used:
                raise ValueError(
                    f"data.mode 'unpaired' has no reference images, so reference terms must be 0; "
                    f"got {', '.join(f'loss.{n}={getattr(self.loss, n)}' for n in used)}"
                )
        if self.data.unpaired_batch and not any(getattr(self.loss, f"{n}_weight") > 0 for n in NO_REFERENCE_TERMS):
            raise ValueError(
                f"data.unpaired_dir photos have no references, so only no-reference terms train on them, "
                f"but every one is 0: set one of {', '.join(f'loss.{n}_weight' for n in NO_REFERENCE_TERMS)} > 0 "
                "(or leave data.unpaired_dir empty)"
            )
