"""Optional dependencies, grouped by the pip "extra" that installs them (no torch import here).

attiqa is installed from its repository (it is not on the package index): ``pip install
.`` in a clone's root gives the loss (:class:`attiqa_loss.AttiqaLoss`), scoring and the
``attiqa-score`` tool. The training tools need more: ``pip install -e '.[pretrain]'``
for ``attiqa-pretrain``, ``'.[enhance]'`` for ``attiqa-enhance``, ``'.[all]'`` for both
(where attiqa is installed already, ``pip install 'attiqa[enhance]'`` adds an extra's
packages to it). Each tool calls :func:`require_extra` before importing its modules, so
a missing package is one line that says what to install, not a traceback.
"""

from __future__ import annotations

import importlib.util
from typing import Dict, List, Sequence, Tuple

__all__ = ["EXTRAS", "install_hint", "missing_modules", "require_extra"]

#: extra name -> ((import name, pip distribution), ...) that the extra installs.
EXTRAS: Dict[str, Tuple[Tuple[str, str], ...]] = {
    "pretrain": (("open_clip", "open_clip_torch"), ("kornia", "kornia"), ("yaml", "pyyaml"),
                 ("tensorboard", "tensorboard"), ("scipy", "scipy")),
    "enhance": (("kornia", "kornia"), ("yaml", "pyyaml"), ("tensorboard", "tensorboard"), ("lpips", "lpips")),
    "tensorboard": (("tensorboard", "tensorboard"),),
}


def missing_modules(modules: Sequence[Tuple[str, str]]) -> List[str]:
    """The pip distributions of ``(import name, distribution)`` pairs whose module cannot be found."""
    missing = []
    for module, dist in modules:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a parent package missing, or a broken __spec__
            found = False
        if not found:
            missing.append(dist)
    return missing


def require_extra(tool: str, extra: str) -> None:
    """Exit with one line naming the missing packages and the pip command when ``extra``'s
    modules are not all installed.

    Raises:
        SystemExit: ``"<tool> needs the optional dependencies of attiqa[<extra>] (missing:
            ...); install them with: <install_hint(extra)>"``.
        KeyError: an unknown ``extra`` (a programming error).
    """
    missing = missing_modules(EXTRAS[extra])
    if missing:
        raise SystemExit(
            f"{tool} needs the optional dependencies of attiqa[{extra}] (missing: {', '.join(missing)}); "
            f"install them with: {install_hint(extra)}"
        )


def install_hint(extra: str) -> str:
    """How to install ``extra``'s packages, for a clone and for an installed copy (attiqa
    is not on the package index, so ``pip install 'attiqa[...]'`` alone only works where
    attiqa is installed already)."""
    return (f"pip install -e '.[{extra}]' in the root of the attiqa repository (a clone), "
            f"or pip install 'attiqa[{extra}]' where attiqa is installed already")
