"""CLIP prompts for the five attributes: candidates, the default set, and the YAML file format.

A *prompt* is one antonym pair in one template, e.g. ``("sharp", "blurry", "a {} photo.")``.
A *prompt set* maps every attribute (in :data:`ATTRIBUTES` order) to one or more prompts;
the text feature of a pole is the L2-normalised mean of the L2-normalised features of
its prompts (docs/method.md, section 4), so several prompts form an ensemble.

The positive word is always the desirable pole, so pseudo-labels are quality-aligned:
1 = sharp, high contrast, well lit, colourful, noise-free.

Prompt-set YAML (written by ``attiqa-pretrain select-prompts``, read by ``label``)::

    format: attiqa-prompts
    version: 1
    selection: {...}                # how it was chosen (free form)
    attributes:
      sharpness:
        proxy_srcc: 0.91            # optional: score of the whole ensemble
        prompts:
          - {positive: sharp, negative: blurry, template: "a photo that is {}.", proxy_srcc: 0.90}
      contrast: ...
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import yaml

from attiqa_loss.attributes import ATTRIBUTES, DEFAULT_TEMPLATES
from attiqa_loss.io import atomic_write

__all__ = [
    "Prompt",
    "PromptSet",
    "CANDIDATE_PAIRS",
    "CANDIDATE_TEMPLATES",
    "PROMPTS_FORMAT",
    "list_candidates",
    "default_prompt_set",
    "load_candidates",
    "load_prompt_set",
    "save_prompt_set",
    "prompt_set_to_dict",
]

PROMPTS_FORMAT = "attiqa-prompts"
PathLike = Union[str, os.PathLike]

# Desirable pole first. The first pair of each list is the library default
# (attiqa_loss.ATTRIBUTES.prompts), so selection can only match or beat it.
CANDIDATE_PAIRS: Dict[str, Tuple[Tuple[str, str], ...]] = {
    "sharpness": (
        ("sharp", "blurry"),
        ("clear", "blurred"),
        ("in-focus", "out-of-focus"),
        ("crisp", "fuzzy"),
        ("detailed", "smeared"),
    ),
    "contrast": (
        ("high contrast", "low contrast"),
        ("contrasty", "flat"),
        ("punchy", "washed out"),
        ("well contrasted", "faded"),
        ("crisp", "hazy"),
    ),
    "brightness": (
        ("bright", "dark"),
        ("well lit", "underexposed"),
        ("well-exposed", "dim"),
        ("brightly lit", "poorly lit"),
        ("light", "gloomy"),
    ),
    "colorfulness": (
        ("colorful", "dull"),
        ("vibrant", "muted"),
        ("saturated", "desaturated"),
        ("vivid", "colorless"),
        ("rich in color", "grayish"),
    ),
    "noisiness": (
        ("clean", "noisy"),
        ("noise-free", "grainy"),
        ("smooth", "speckled"),
        ("clear", "noisy"),
        ("pristine", "grainy"),
    ),
}

CANDIDATE_TEMPLATES: Tuple[str, ...] = tuple(DEFAULT_TEMPLATES) + tuple(
    t for t in ("this image is {}.", "a {} picture.", "this photo looks {}.") if t not in DEFAULT_TEMPLATES
)


@dataclass(frozen=True)
class Prompt:
    """One antonym pair in one template; ``positive`` is the desirable (score 1) pole."""

    positive: str
    negative: str
    template: str

    def __post_init__(self) -> None:
        for name in ("positive", "negative", "template"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"prompt {name} must be a non-empty string, got {value!r}")
        if self.template.count("{}") != 1:
            raise ValueError(f"a prompt template must contain '{{}}' exactly once, got {self.template!r}")
        if self.positive == self.negative:
            raise ValueError(f"a prompt pair needs two different words, got {self.positive!r} twice")

    def texts(self) -> Tuple[str, str]:
        """``(positive sentence, negative sentence)``."""
        return self.template.format(self.positive), self.template.format(self.negative)

    def swapped(self) -> "Prompt":
        """The same prompt with the poles exchanged (its pseudo-label is ``1 - p``)."""
        return Prompt(self.negative, self.positive, self.template)


#: attribute -> prompts ensembled for it, for every attribute in ATTRIBUTES order.
PromptSet = Dict[str, Tuple[Prompt, ...]]


def list_candidates(
    attribute: str,
    pairs: Optional[Sequence[Tuple[str, str]]] = None,
    templates: Optional[Sequence[str]] = None,
) -> List[Prompt]:
    """All ``pair x template`` candidates of one attribute (pairs outer, templates inner).

    Args:
        attribute: one of :data:`ATTRIBUTES`.
        pairs: ``(positive, negative)`` pairs; default :data:`CANDIDATE_PAIRS` of the attribute.
        templates: templates with one ``{}``; default :data:`CANDIDATE_TEMPLATES`.
    """
    ATTRIBUTES.index_of(attribute)
    pairs = CANDIDATE_PAIRS[attribute] if pairs is None else pairs
    templates = CANDIDATE_TEMPLATES if templates is None else templates
    return [Prompt(str(p), str(n), str(t)) for p, n in pairs for t in templates]


def default_prompt_set() -> PromptSet:
    """The library default: ``ATTRIBUTES.prompts`` in every ``DEFAULT_TEMPLATES`` template."""
    return {a: tuple(Prompt(*ATTRIBUTES.prompts[a], t) for t in DEFAULT_TEMPLATES) for a in ATTRIBUTES}


def _read_yaml(path: PathLike) -> Any:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompt file not found: {path}")
    from attiqa_train.config_files import load_yaml

    try:
        return load_yaml(path.read_text())
    except yaml.YAMLError as exc:
        from attiqa_train.config import yaml_error_line

        raise ValueError(yaml_error_line(path, exc)) from None


def load_candidates(path: PathLike) -> Dict[str, List[Prompt]]:
    """Candidate lists from a YAML file ``{templates: [...], pairs: {attribute: [[pos, neg], ...]}}``.

    Attributes the file leaves out keep the built-in :data:`CANDIDATE_PAIRS`; a missing
    ``templates`` keeps :data:`CANDIDATE_TEMPLATES`.
    """
    data = _read_yaml(path) or {}
    if not isinstance(data, dict) or set(data) - {"templates", "pairs"}:
        raise ValueError(f"{path}: a candidate file holds only 'templates' and 'pairs', got {sorted(data)}")
    templates = data.get("templates", CANDIDATE_TEMPLATES)
    pairs = data.get("pairs", {}) or {}
    unknown = [a for a in pairs if a not in ATTRIBUTES]
    if unknown:
        raise ValueError(f"{path}: unknown attribute(s) {unknown}; expected a subset of {list(ATTRIBUTES)}")
    out = {}
    for a in ATTRIBUTES:
        chosen = pairs.get(a, CANDIDATE_PAIRS[a])
        bad = [p for p in chosen if not isinstance(p, (list, tuple)) or len(p) != 2]
        if bad:
            raise ValueError(f"{path}: pairs of {a!r} must be [positive, negative] lists, got {bad}")
        out[a] = list_candidates(a, [tuple(p) for p in chosen], templates)
    return out


def load_prompt_set(path: PathLike) -> PromptSet:
    """Read a prompt-set YAML (see the module docstring); every attribute must be present.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: another format, a missing or unknown attribute, an empty prompt list,
            or a malformed prompt (each message names the file and the offending entry).
    """
    data = _read_yaml(path)
    if not isinstance(data, dict) or data.get("format") != PROMPTS_FORMAT:
        got = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"{path} is not an {PROMPTS_FORMAT} file (format={got!r})")
    attrs = data.get("attributes")
    if not isinstance(attrs, dict):
        raise ValueError(f"{path}: 'attributes' must map attribute names to prompt lists")
    unknown = [a for a in attrs if a not in ATTRIBUTES]
    missing = [a for a in ATTRIBUTES if a not in attrs]
    if unknown or missing:
        raise ValueError(f"{path}: attributes must be exactly {list(ATTRIBUTES)}; missing {missing}, unknown {unknown}")
    out: PromptSet = {}
    for a in ATTRIBUTES:
        entries = (attrs[a] or {}).get("prompts") if isinstance(attrs[a], dict) else None
        if not entries:
            raise ValueError(f"{path}: attribute {a!r} needs a non-empty 'prompts' list")
        prompts = []
        for i, e in enumerate(entries):
            if not isinstance(e, dict) or not {"positive", "negative", "template"} <= set(e):
                raise ValueError(f"{path}: {a}.prompts[{i}] needs positive, negative and template, got {e!r}")
            try:
                prompts.append(Prompt(e["positive"], e["negative"], e["template"]))
            except ValueError as exc:
                raise ValueError(f"{path}: {a}.prompts[{i}]: {exc}") from None
        out[a] = tuple(prompts)
    return out


def prompt_set_to_dict(
    prompt_set: Mapping[str, Sequence[Prompt]],
    *,
    scores: Optional[Mapping[str, Sequence[float]]] = None,
    ensemble_scores: Optional[Mapping[str, float]] = None,
    selection: Optional[Mapping[str, Any]] = None,
) -> Dict[str, Any]:
    """The YAML document of a prompt set, with optional per-prompt and per-ensemble proxy SRCC."""
    attributes: Dict[str, Any] = {}
    for a in ATTRIBUTES:
        entry: Dict[str, Any] = {}
        if ensemble_scores is not None and a in ensemble_scores:
            entry["proxy_srcc"] = round(float(ensemble_scores[a]), 6)
        rows = []
        for i, p in enumerate(prompt_set[a]):
            row: Dict[str, Any] = {"positive": p.positive, "negative": p.negative, "template": p.template}
            if scores is not None and a in scores:
                row["proxy_srcc"] = round(float(scores[a][i]), 6)
            rows.append(row)
        entry["prompts"] = rows
        attributes[a] = entry
    doc: Dict[str, Any] = {"format": PROMPTS_FORMAT, "version": 1}
    if selection is not None:
        doc["selection"] = dict(selection)
    doc["attributes"] = attributes
    return doc


def save_prompt_set(path: PathLike, prompt_set: Mapping[str, Sequence[Prompt]], **kwargs: Any) -> Path:
    """Write a prompt set as YAML atomically; ``kwargs`` as in :func:`prompt_set_to_dict`."""
    doc = prompt_set_to_dict(prompt_set, **kwargs)
    with atomic_write(path, "w") as f:
        yaml.safe_dump(doc, f, sort_keys=False, allow_unicode=True, width=120)
    return Path(path)

