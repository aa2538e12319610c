"""Config files: finding one by name or path, reading YAML with clear errors, writing
the resolved config.

The shipped configs (``configs/*.yaml`` in a clone) are installed as package data of
``attiqa_configs``, so ``--config pretrain_synthetic`` (or ``pretrain_synthetic.yaml``)
works in an installed copy as well as in a clone; a path always wins over a name.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, List, Mapping, Union

import yaml

__all__ = ["ConfigError", "shipped_configs", "resolve_config_path", "yaml_error_line", "read_yaml_file",
           "save_config_dict", "DuplicateKeyError", "load_yaml"]

PathLike = Union[str, os.PathLike]


class ConfigError(ValueError):
    """A config file or override names an unknown key or holds a value of the wrong type."""


def _shipped_folder():
    from importlib import resources

    try:
        return resources.files("attiqa_configs")
    except ModuleNotFoundError:  # a source tree without the package installed
        return Path(__file__).resolve().parent.parent / "configs"


def shipped_configs() -> List[str]:
    """Names (without ``.yaml``) of the configs that ship with attiqa."""
    return sorted(p.name[: -len(".yaml")] for p in _shipped_folder().iterdir() if p.name.endswith(".yaml"))


def resolve_config_path(value: PathLike) -> Path:
    """``value`` as a path if that file exists, else the shipped config of that name
    (``"pretrain_synthetic"``, ``"pretrain_synthetic.yaml"`` or ``"configs/pretrain_synthetic.yaml"``).

    Raises:
        FileNotFoundError: neither; the message lists the shipped names.
    """
    path = Path(value)
    if path.is_file():
        return path
    name = path.name if path.suffix in (".yaml", ".yml", ".json") else f"{path.name}.yaml"
    if path.parent in (Path("."), Path("configs")):
        shipped = _shipped_folder() / name
        if shipped.is_file():
            return Path(str(shipped))
    raise FileNotFoundError(f"config file not found: {value} (not a file, nor a shipped config; shipped: "
                            f"{', '.join(shipped_configs())})")


class DuplicateKeyError(yaml.constructor.ConstructorError):
    """A YAML mapping that holds the same key twice (``train:`` twice): plain
    ``yaml.safe_load`` keeps the last one and silently drops the first."""

    def __init__(self, key: Any, first: "yaml.Mark", again: "yaml.Mark") -> None:
        super().__init__(None, None, f"duplicate key {key!r} (first at line {first.line + 1})", again)
        self.key = key


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping (a ``<<`` merge
    may still be overridden by a key of the mapping itself, as YAML intends)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.setdefault(key, key_node.start_mark)
                except TypeError:  # an unhashable key: the base constructor names it
                    continue
                if first is not key_node.start_mark:
                    raise DuplicateKeyError(key, first, key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str) -> Any:
    """``yaml.safe_load(text)``, but a mapping that holds a key twice is a
    :class:`DuplicateKeyError` (every config, prompt file and ``--set`` value is read so)."""
    return yaml.load(text, Loader=_UniqueKeyLoader)


def yaml_error_line(path: Union[str, Path], exc: Exception) -> str:
    """One line for a YAML error: ``FILE:LINE:COLUMN: what`` (line and column 1-based,
    where the parser gives them); a key given twice is ``FILE:LINE:COLUMN: duplicate key
    'train' (first at line 1)``, at the second one."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
    if isinstance(exc, DuplicateKeyError):
        return f"{where}: {exc.problem}"
    what = getattr(exc, "problem", None) or type(exc).__name__
    context, begun = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if context and begun is not None and begun is not mark:
        what += f" ({context} begun at line {begun.line + 1})"
    what = " ".join(what.split())
    return f"{where}: invalid YAML: {what}"


def read_yaml_file(path: Union[str, Path]) -> Any:
    """:func:`load_yaml` of a file (``{}`` when empty); a syntax error, a key given twice
    or an unreadable file is a :class:`ConfigError` naming the file (and the line and
    column of the error)."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    try:
        return load_yaml(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(yaml_error_line(path, exc)) from None


def save_config_dict(data: Mapping[str, Any], path: PathLike) -> None:
    """Write a config's nested dict (:func:`attiqa_train.config.config_to_dict`) as YAML, atomically."""
    from attiqa_loss.io import atomic_write  # torch: imported here so that --help stays light

    with atomic_write(path, "w") as f:
        yaml.safe_dump(dict(data), f, sort_keys=False)
