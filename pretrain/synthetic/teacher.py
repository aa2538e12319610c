"""The synthetic teacher (docs/method.md, section 6): graded degradations of pristine photos.

Every step draws ``sources`` crops. For each crop one attribute is degraded at
``levels`` distinct strengths (its ordinal label is ``1 - strength``; the other four
attributes carry no label), optionally on top of a fixed *nuisance* degradation of
another attribute shared by the whole group (so the network learns each attribute
under the others). One extra, overlapping crop of the same photo at the same strength
is added per group for the consistency term.

Degradations are applied in a fixed, camera-like order (optics blur, contrast,
colour, exposure, then sensor noise) so that a nuisance never changes the amount of
the target degradation: noise is always added last, on top of darkening.

The photos come from :mod:`pretrain.synthetic.photos` (hold-out split, decoding, the
unusable ones sorted out).
"""

from __future__ import annotations

import bisect
import itertools
import math
from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F

from attiqa_loss.attributes import ATTRIBUTES, validate_attribute_mapping

from ..degrade.families import FAMILIES, degrade, list_families

__all__ = [
    "NO_OP_TOLERANCE",
    "PIPELINE_ORDER",
    "apply_plan",
    "resolve_families",
    "SyntheticBatch",
    "SyntheticTeacher",
]

#: Largest pixel change (in [0, 1]) between the weakest and strongest level below which
#: a degradation counts as a no-op on that image (two 8-bit steps).
NO_OP_TOLERANCE = 2.0 / 255

#: Order in which degradations are composed (a physical camera pipeline).
PIPELINE_ORDER = ("sharpness", "contrast", "colorfulness", "brightness", "noisiness")


@dataclass
class SyntheticBatch:
    """One training batch.

    Attributes:
        images: ``(N, 3, crop, crop)`` float in [0, 1].
        labels: ``(N, 5)`` quality-aligned labels; NaN where an attribute has no label.
        groups: ``(N,)`` group id; ranking and specificity compare images of one group.
        pairs: ``(P, 2)`` indices of overlapping crops at the same strength (consistency).
        target: ``(N,)`` index of the attribute degraded in each image's group.
    """

    images: torch.Tensor
    labels: torch.Tensor
    groups: torch.Tensor
    pairs: torch.Tensor
    target: torch.Tensor


def apply_plan(x: torch.Tensor, plan: dict, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Apply ``plan`` (``{attribute: (family, strength)}``) in :data:`PIPELINE_ORDER`."""
    for attr in PIPELINE_ORDER:
        if attr in plan:
            family, strength = plan[attr]
            x = degrade(x, attr, family, strength, generator)
    return x


def resolve_families(overrides: Optional[Mapping[str, Sequence[str]]] = None) -> Dict[str, List[str]]:
    """The families a teacher trains on, ``{attribute: [family, ...]}`` for all five.

    The default is every family marked ``trained`` in :mod:`pretrain.degrade.families`; an
    attribute named in ``overrides`` gets exactly the families listed there (any family of
    that attribute, held-back ones included; an empty list trains nothing on it). Raises
    ``ValueError`` naming an unknown attribute or family and the known ones.
    """
    out = {a: [f.name for f in list_families(a, trained=True)] for a in ATTRIBUTES}
    for attr, names in (overrides or {}).items():
        if attr not in FAMILIES:
            raise ValueError(f"synthetic.families: unknown attribute {attr!r}; expected one of {list(ATTRIBUTES)}")
        if isinstance(names, str):
            raise ValueError(f"synthetic.families.{attr} must be a list of family names, got {names!r}")
        for n in names:
            if n not in FAMILIES[attr]:
                raise ValueError(f"synthetic.families.{attr}: unknown family {n!r}; known: {list(FAMILIES[attr])}")
        out[attr] = list(dict.fromkeys(names))
    if not any(out.values()):
        raise ValueError("synthetic.families must leave at least one family to train on, got none")
    return out


def _uniform(g: torch.Generator, lo: float = 0.0, hi: float = 1.0) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g))


def _randint(g: torch.Generator, n: int) -> int:
    return int(torch.randint(n, (), generator=g))


class SyntheticTeacher:
    """Draws :class:`SyntheticBatch` es from in-memory photos; all randomness from a generator.

    Args:
        photos: uint8 ``(3, H, W)`` tensors (see
            :func:`pretrain.synthetic.photos.load_photos`).
        crop: side of the square training crops.
        levels: strengths per group (>= 2).
        min_gap: minimum difference between two strengths of one group.
        nuisance_prob: probability that a group also carries a fixed degradation of
            another attribute.
        nuisance_max: the nuisance strength is drawn uniformly from ``[0, nuisance_max]``.
        scale_range: photos are viewed at a random scale in this range before cropping.
        families: per attribute, the family names to train on (default: the ``trained`` ones);
            an attribute missing or with an empty list is never degraded.
        nuisance_weights: ``{attribute: w >= 0}``, how likely each attribute is to be
            picked as the nuisance (relative; attributes left out weigh 1, the default
            picks uniformly). Raising ``noisiness`` puts fixed noise under more groups of
            the other attributes, so the specificity term sees more "noise fixed" cases.
    """

    def __init__(
        self,
        photos: Sequence[torch.Tensor],
        *,
        crop: int = 192,
        levels: int = 3,
        min_gap: float = 0.15,
        nuisance_prob: float = 0.8,
        nuisance_max: float = 0.8,
        scale_range: Sequence[float] = (0.5, 1.0),
        families: Optional[dict] = None,
        nuisance_weights: Optional[Mapping[str, float]] = None,
    ) -> None:
        if not photos:
            raise ValueError("the synthetic teacher needs at least one photo, got none")
        if levels < 2:
            raise ValueError(f"levels must be >= 2, got {levels}")
        if min_gap * (levels - 1) > 1:
            raise ValueError(f"min_gap * (levels - 1) must be <= 1, got {min_gap} * {levels - 1}")
        self.photos = list(photos)
        self.crop = crop
        self.levels = levels
        self.min_gap = min_gap
        self.nuisance_prob = nuisance_prob
        self.nuisance_max = nuisance_max
        weights = validate_attribute_mapping(
            nuisance_weights, "synthetic.nuisance_weights", low=0.0, high=None, default=1.0
        )
        self.nuisance_weights = dict(zip(ATTRIBUTES, weights))
        self.scale_range = tuple(scale_range)
        # Here an attribute left out of ``families`` gets none (resolve_families would
        # give it the defaults); names are checked there.
        self.families = resolve_families({**{a: [] for a in ATTRIBUTES}, **families} if families else None)
        #: attributes with at least one family: the ones a group can degrade
        self.targets = [a for a in ATTRIBUTES if self.families[a]]

    @property
    def group_size(self) -> int:
        return self.levels + 1

    def _crops(self, g: torch.Generator) -> tuple:
        photo = self.photos[_randint(g, len(self.photos))]
        h, w = photo.shape[-2:]
        scale = _uniform(g, *self.scale_range)
        region = min(h, w, max(self.crop, round(self.crop / scale)))
        top, left = _randint(g, h - region + 1), _randint(g, w - region + 1)
        # A second crop overlapping the first by at least half in each direction.
        shift = region // 4
        top2 = min(max(0, top + _randint(g, 2 * shift + 1) - shift), h - region)
        left2 = min(max(0, left + _randint(g, 2 * shift + 1) - shift), w - region)
        crops = torch.stack([photo[:, top : top + region, left : left + region],
                             photo[:, top2 : top2 + region, left2 : left2 + region]]).float() / 255
        if region != self.crop:
            crops = F.interpolate(crops, size=(self.crop, self.crop), mode="area")
        if _uniform(g) < 0.5:
            crops = crops.flip(-1)
        return crops[:1], crops[1:]

    def _strengths(self, g: torch.Generator) -> List[float]:
        for _ in range(100):
            s = sorted(_uniform(g) for _ in range(self.levels))
            if all(b - a >= self.min_gap for a, b in zip(s, s[1:])):
                return s
        return [i / (self.levels - 1) for i in range(self.levels)]

    def _pick_nuisance(self, others: List[str], g: torch.Generator) -> Optional[str]:
        """One of ``others`` by :attr:`nuisance_weights`, or None if none has weight."""
        w = [self.nuisance_weights[b] for b in others]
        if len(set(w)) == 1 and w[0] > 0:  # uniform (the default): one integer draw
            return others[_randint(g, len(others))]
        cum = list(itertools.accumulate(w))
        if not cum or cum[-1] <= 0:
            return None
        # u < cum[-1] strictly, and a zero weight never raises cum: its attribute is never hit.
        return others[bisect.bisect_right(cum, _uniform(g) * cum[-1])]

    def sample(self, sources: int, g: torch.Generator) -> SyntheticBatch:
        """Draw ``sources`` groups of ``levels + 1`` images each."""
        images, labels, groups, pairs, target = [], [], [], [], []
        for src in range(sources):
            base, other = self._crops(g)
            attr = self.targets[_randint(g, len(self.targets))]
            a = ATTRIBUTES.index(attr)
            family = self.families[attr][_randint(g, len(self.families[attr]))]
            plan = {}
            if _uniform(g) < self.nuisance_prob:
                others = [b for b in ATTRIBUTES if b != attr and self.families[b]]
                b = self._pick_nuisance(others, g)
                if b is not None:
                    plan[b] = (self.families[b][_randint(g, len(self.families[b]))], _uniform(g, 0, self.nuisance_max))
            strengths = self._strengths(g)
            # One seed per group: every level gets the same noise pattern and blur
            # direction, so only the strength differs between the images being ranked.
            seed = int(torch.randint(2**62, (), generator=g))
            pair_level = _randint(g, self.levels)
            for k, s in enumerate(strengths):
                plan[attr] = (family, s)
                images.append(apply_plan(base, plan, torch.Generator().manual_seed(seed)))
                if k == pair_level:
                    pairs.append((len(images) - 1, None))
            images.append(apply_plan(other, {**plan, attr: (family, strengths[pair_level])},
                                      torch.Generator().manual_seed(seed)))
            pairs[-1] = (pairs[-1][0], len(images) - 1)
            # A degradation that leaves the crop unchanged (desaturating a grey photo) has
            # no order to teach: the group keeps no label rather than a false one.
            first, last = images[-self.group_size], images[-2]
            labelled = bool((first - last).abs().amax() >= NO_OP_TOLERANCE)
            for s in strengths + [strengths[pair_level]]:
                row = torch.full((len(ATTRIBUTES),), math.nan)
                if labelled:
                    row[a] = 1.0 - s
                labels.append(row)
                groups.append(src)
                target.append(a)
        return SyntheticBatch(
            images=torch.cat(images),
            labels=torch.stack(labels),
            groups=torch.tensor(groups),
            pairs=torch.tensor(pairs, dtype=torch.long),
            target=torch.tensor(target),
        )
