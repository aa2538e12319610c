"""The five quality attributes: names, order and CLIP prompt pairs (one source of truth).

Every attribute score in this project is in [0, 1] and *quality-aligned*: 1 is the
desirable pole. ``noisiness = 0.95`` therefore means "clean", not "noisy".
"""

from __future__ import annotations

import math
import numbers
from types import MappingProxyType
from typing import Iterable, Mapping, Tuple

import numpy as np

__all__ = ["ATTRIBUTES", "AttributeSet", "DEFAULT_TEMPLATES", "validate_attribute_mapping"]

# Desirable pole first: (positive prompt word, negative prompt word).
_PROMPTS = {
    "sharpness": ("sharp", "blurry"),
    "contrast": ("high contrast", "low contrast"),
    "brightness": ("bright", "dark"),
    "colorfulness": ("colorful", "dull"),
    "noisiness": ("clean", "noisy"),
}

# Templates the default prompt pair is averaged over (pretrain/clip/prompts.py has the
# candidate lists that prompt selection chooses from).
DEFAULT_TEMPLATES: Tuple[str, ...] = (
    "a {} photo.",
    "a photo that is {}.",
    "a {} image.",
)

_DESCRIPTIONS = {
    "sharpness": "1 = sharp, 0 = blurry",
    "contrast": "1 = high contrast, 0 = flat / washed out",
    "brightness": "1 = well lit, 0 = dark",
    "colorfulness": "1 = colourful, 0 = dull / grey",
    "noisiness": "1 = clean (noise-free), 0 = noisy",
}


class AttributeSet(tuple):
    """An ordered tuple of attribute names that also carries their prompt pairs.

    It compares equal to the plain tuple of names, so
    ``ATTRIBUTES == ("sharpness", "contrast", "brightness", "colorfulness", "noisiness")``.

    Attributes:
        prompts: read-only mapping ``name -> (positive, negative)``; the positive word
            is the desirable pole (score 1).
        descriptions: read-only mapping ``name -> "1 = ..., 0 = ..."`` for help texts.
    """

    prompts: Mapping[str, Tuple[str, str]]
    descriptions: Mapping[str, str]

    def __new__(cls, prompts: Mapping[str, Tuple[str, str]], descriptions: Mapping[str, str]):
        self = super().__new__(cls, tuple(prompts))
        self.prompts = MappingProxyType(dict(prompts))
        self.descriptions = MappingProxyType(dict(descriptions))
        return self

    def index_of(self, name: str) -> int:
        """Position of ``name`` in the fixed order; ``ValueError`` naming the choices if unknown."""
        if name not in self:
            raise ValueError(f"unknown attribute {name!r}; expected one of {list(self)}")
        return self.index(name)


ATTRIBUTES = AttributeSet(_PROMPTS, _DESCRIPTIONS)


def validate_attribute_mapping(
    mapping: Mapping[str, float] | None,
    what: str,
    *,
    low: float,
    high: float | None,
    default: float,
    names: Iterable[str] = ATTRIBUTES,
) -> Tuple[float, ...]:
    """Resolve a ``{name: value}`` mapping to a tuple in attribute order.

    Names that the mapping leaves out keep ``default``. Unknown names, non-numbers
    (numpy scalars count as numbers, bools do not), NaN, infinities and values outside
    ``[low, high]`` raise ``ValueError``/``TypeError`` naming the
    rule and the value.
    """
    names = tuple(names)
    if mapping is None:
        return tuple(float(default) for _ in names)
    if not isinstance(mapping, Mapping):
        raise TypeError(f"{what} must be a mapping from attribute name to float, got {type(mapping).__name__}")
    unknown = [k for k in mapping if k not in names]
    if unknown:
        raise ValueError(f"unknown attribute name(s) in {what}: {unknown}; expected a subset of {list(names)}")
    out = []
    for name in names:
        value = mapping.get(name, default)
        # numbers.Real admits numpy scalars (values read from arrays or configs); bool is excluded
        # because {"noisiness": True} is far more likely a mistake than a weight of 1.
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
            raise TypeError(f"{what}[{name!r}] must be a float, got {type(value).__name__} {value!r}")
        value = float(value)
        # Infinite weights must be rejected too: the normalised loss would become inf/inf = NaN.
        if not math.isfinite(value) or value < low or (high is not None and value > high):
            rng = f"in [{low}, {high}]" if high is not None else f">= {low}"
            raise ValueError(f"{what}[{name!r}] must be a finite number {rng}, got {value}")
        out.append(value)
    return tuple(out)
