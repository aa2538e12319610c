"""Plain-text ``--help`` for the command-line tools (no torch import here).

Module docstrings double as command descriptions; they are written in reStructuredText
(````name````, ``:mod:`pkg.module```). :class:`PlainHelpFormatter` strips that markup so a
terminal shows ``name`` and ``pkg.module`` instead of the raw markup.
"""

from __future__ import annotations

import argparse
import re

__all__ = ["plain_text", "PlainHelpFormatter"]

# :role:`target` or :role:`~pkg.module.name` (Sphinx cross-references)
_ROLE = re.compile(r":(?:[a-z]+:)?[a-z]+:`~?([^`<]*?)(?:\s*<[^>]*>)?`")
_LITERAL = re.compile(r"``(.+?)``", re.DOTALL)


def _role_text(match: "re.Match[str]") -> str:
    target = match.group(1).strip()
    tilde = match.group(0).split("`", 1)[1].startswith("~")
    return target.rsplit(".", 1)[-1] if tilde else target


def plain_text(text: str) -> str:
    """``text`` without reStructuredText inline markup: ````x```` -> ``x``, ``:mod:`a.b``` -> ``a.b``,
    ``:func:`~a.b``` -> ``b``. Anything else (single backticks, ``%(default)s``) is kept."""
    if not text:
        return text
    return _LITERAL.sub(r"\1", _ROLE.sub(_role_text, text))


class PlainHelpFormatter(argparse.RawDescriptionHelpFormatter):
    """``RawDescriptionHelpFormatter`` (descriptions keep their line breaks) whose texts,
    descriptions, epilogs and option help alike, are passed through :func:`plain_text`."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return super()._fill_text(plain_text(text), width, indent)

    def _get_help_string(self, action: argparse.Action) -> str:
        return plain_text(super()._get_help_string(action) or "")
