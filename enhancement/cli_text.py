"""Text shared by the ``attiqa-enhance`` commands: the attribute legend of their help and
the one-line messages on stderr."""

from __future__ import annotations

import sys

from attiqa_loss.attributes import ATTRIBUTES

__all__ = ["SCORES", "say"]

SCORES = "Attribute scores are in [0, 1] and quality-aligned, 1 = the desirable pole:\n" + "\n".join(
    f"  {name:<13} {ATTRIBUTES.descriptions[name]}" for name in ATTRIBUTES
)


def say(message: str) -> None:
    """``attiqa-enhance <message>`` on stderr."""
    print(f"attiqa-enhance {message}", file=sys.stderr)
