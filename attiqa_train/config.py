"""YAML -> typed dataclasses, with ``--set dotted.key=value`` overrides.

Used by every training entry point (``attiqa-pretrain``, ``attiqa-enhance``). The rules:
a YAML file only sets values the dataclass declares; an unknown key anywhere, in the
file or in ``--set``, is an error that names it and lists the known keys; values are
checked against the declared types, and a float must be finite (NaN and infinity are
refused for every float key, naming it). Config objects stop at ``main()``: code below it
takes plain arguments or built objects.

One vocabulary for every trainer: a key that means the same thing in two trainers has one
name and one type (``train.amp``, a bool; ``train.val_every``, ...), and the rules both
share live here (:data:`TRAIN_MINIMUMS`, :func:`check_train_minimums`). A renamed key keeps
working under its earlier name (``KEY_ALIASES``, also across sections), and a key whose
type changed keeps reading its earlier values (``VALUE_ALIASES``); either is said in one
warning line on stderr when a file or ``--set`` uses it (:func:`load_config`), and
:func:`with_current_keys` gives a saved config (``config.yaml``, a checkpoint's record)
its current names.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
import typing
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Type, TypeVar, Union

import yaml

from .config_files import (ConfigError, DuplicateKeyError, load_yaml, read_yaml_file, resolve_config_path,
                           save_config_dict, yaml_error_line)

__all__ = ["ConfigError", "read_yaml_file", "yaml_error_line", "check_minimums", "check_positive", "TRAIN_MINIMUMS",
           "check_train_minimums", "check_betas", "check_lr_range", "AMP_VALUE_ALIASES", "load_config",
           "config_to_dict", "save_config", "save_config_dict", "with_current_keys", "add_config_arguments",
           "config_from_args"]

T = TypeVar("T")




def check_minimums(section: str, obj: Any, **minimums: float) -> None:
    """Raise ``ValueError("<section>.<key> must be >= <min>, got <value>")`` for the first
    field of ``obj`` below its minimum; config dataclasses call it in ``__post_init__``,
    so a bad value fails when the config is read, naming the key and the value."""
    for name, low in minimums.items():
        value = getattr(obj, name)
        if value is not None and value < low:
            raise ValueError(f"{section}.{name} must be >= {low}, got {value!r}")


def check_positive(section: str, obj: Any, *names: str) -> None:
    """Raise ``ValueError("<section>.<key> must be > 0, got <value>")`` for the first field
    of ``obj`` in ``names`` that is not above 0 (a minimum of 0 is :func:`check_minimums`)."""
    for name in names:
        value = getattr(obj, name)
        if value is not None and not value > 0:
            raise ValueError(f"{section}.{name} must be > 0, got {value!r}")


#: The minimums of the ``train.*`` keys the trainers share (``attiqa-pretrain train``,
#: ``attiqa-enhance train``): one rule and one message per key. Intervals and ``steps``
#: count steps (>= 1: 0 does not mean "off"); ``lr``, ``weight_decay`` and ``grad_clip``
#: follow torch's own rule (>= 0; ``grad_clip`` 0 = no clipping). A trainer may ask more
#: of a key (``attiqa-pretrain``: ``batch_size`` >= 4; ``attiqa-enhance``: ``lr`` > 0).
TRAIN_MINIMUMS: Dict[str, float] = {
    "steps": 1, "batch_size": 1, "warmup_steps": 0, "log_every": 1, "val_every": 1, "state_every": 1,
    "lr": 0.0, "weight_decay": 0.0, "grad_clip": 0.0,
}

#: ``train.amp`` is a bool in every trainer (bfloat16 autocast on CUDA devices that
#: support it, never on CPU); the strings of ``attiqa-enhance`` before it are still read:
#: ``auto`` and ``bf16`` as true, ``off`` as false (``bf16`` forced autocast on the CPU
#: too; that is no longer offered). A config class lists it in its ``VALUE_ALIASES``.
AMP_VALUE_ALIASES: Dict[Any, Any] = {"auto": True, "bf16": True, "off": False}


def check_train_minimums(obj: Any, section: str = "train", **minimums: float) -> None:
    """:func:`check_minimums` of the :data:`TRAIN_MINIMUMS` keys ``obj`` has, with
    ``minimums`` added or raised (a trainer's own keys and stricter rules)."""
    names = {f.name for f in dataclasses.fields(obj)}
    rules = {k: v for k, v in TRAIN_MINIMUMS.items() if k in names}
    rules.update(minimums)
    check_minimums(section, obj, **rules)


def check_betas(section: str, obj: Any, name: str = "betas") -> None:
    """Raise ``ValueError("<section>.betas must be two numbers in [0, 1), got ...")`` unless
    the field is Adam's two moment decays, each in [0, 1) (torch refuses others only when
    the optimiser is built: after the run folder was written)."""
    value = getattr(obj, name)
    if len(value) != 2 or not all(0.0 <= v < 1.0 for v in value):
        raise ValueError(f"{section}.{name} must be two numbers in [0, 1), got {list(value)!r}")


def check_lr_range(section: str, obj: Any, low: str = "min_lr", high: str = "lr") -> None:
    """Raise a ``ValueError`` naming both keys when the schedule's floor ``min_lr`` is
    above its peak ``lr`` (the cosine decay would rise instead)."""
    if getattr(obj, low) > getattr(obj, high):
        raise ValueError(f"{section}.{low} must be <= {section}.{high} (the schedule decays from {high} to {low}), "
                         f"got {section}.{low}={getattr(obj, low)!r} > {section}.{high}={getattr(obj, high)!r}")


def _leaf_fields(cls: type, prefix: str = "") -> List[Tuple[str, Any]]:
    """``(dotted key, type hint)`` of every leaf field of a (nested) config dataclass."""
    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            out += _leaf_fields(hint, f"{prefix}{f.name}.")
        else:
            out.append((prefix + f.name, hint))
    return out


def _known_keys(cls: type) -> List[str]:
    return [key for key, _ in _leaf_fields(cls)]


def _is_mapping(hint: Any) -> bool:
    options = typing.get_args(hint) if typing.get_origin(hint) is Union else (hint,)
    return any(typing.get_origin(h) in (dict, Dict, Mapping) or h is dict for h in options)


def _mapping_keys(cls: type) -> List[str]:
    """Known keys whose value is a mapping (``Dict[str, ...]``): ``--set KEY.NAME=VALUE``
    sets one entry of such a mapping (e.g. ``loss.attiqa_targets.brightness=0.7``)."""
    return [key for key, hint in _leaf_fields(cls) if _is_mapping(hint)]


def _coerce(value: Any, hint: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin is Union:
        if value is None and type(None) in args:
            return None
        options = [arg for arg in args if arg is not type(None)]
        if len(options) == 1:  # Optional[X]: X's own message (e.g. "must be a finite number")
            return _coerce(value, options[0], key)
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"config key {key!r} expects {hint}, got {value!r}")
    if origin in (list, tuple, List, Sequence) or hint in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key {key!r} expects a list, got {value!r}")
        item = args[0] if args else Any
        items = [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple or hint is tuple else items
    if origin in (dict, Dict, Mapping) or hint is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key {key!r} expects a mapping, got {value!r}")
        vt = args[1] if len(args) == 2 else Any
        return {str(k): _coerce(v, vt, f"{key}.{k}") for k, v in value.items()}
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"config key {key!r} expects true/false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"config key {key!r} expects an integer, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            # One rule for every float key of every config: NaN and infinity (.nan, .inf,
            # 1e999) are refused here, before any check of the key's own range could let
            # them through (nan < 0 is False) or training diverge on them later.
            if not math.isfinite(value):
                raise ConfigError(f"config key {key!r} must be a finite number, got {value!r}")
            return float(value)
        raise ConfigError(f"config key {key!r} expects a number, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"config key {key!r} expects a string, got {value!r}")
    if typing.get_origin(hint) is typing.Literal:
        if value in args:
            return value
        raise ConfigError(f"config key {key!r} must be one of {list(args)}, got {value!r}")
    return value


def _aliases(cls: type) -> Dict[str, str]:
    """``{old name: field}`` of a config dataclass: its ``KEY_ALIASES`` class attribute,
    the earlier spellings of renamed keys, still read from files and ``--set``. A dotted
    name on either side is a path below the class: ``{"val.every": "train.val_every"}``
    on the root config moves a key to another section."""
    return dict(getattr(cls, "KEY_ALIASES", {}))


def _value_aliases(cls: type) -> Dict[str, Dict[Any, Any]]:
    """``{field: {earlier value: current value}}`` of a config dataclass: its
    ``VALUE_ALIASES`` class attribute, for a key whose type changed (``train.amp``:
    ``"auto"`` is read as true)."""
    return dict(getattr(cls, "VALUE_ALIASES", {}))


def _is_section(cls: Any) -> bool:
    return cls is not None and dataclasses.is_dataclass(cls)


def _canonical(cls: type, dotted: str) -> str:
    """``dotted`` with every renamed key replaced by its current name."""
    parts, node, i = dotted.split("."), cls, 0
    while i < len(parts):
        if not _is_section(node):
            break
        for old, new in _aliases(node).items():
            old_parts = old.split(".")
            if parts[i : i + len(old_parts)] == old_parts:
                parts = parts[:i] + new.split(".") + parts[i + len(old_parts) :]
                break
        hint = typing.get_type_hints(node).get(parts[i])
        node = hint if _is_section(hint) else None
        i += 1
    return ".".join(parts)


def _same_value(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b


def _show(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def _move(data: Mapping[str, Any], old: str, new: str, prefix: str, notes: List[str]) -> Dict[str, Any]:
    """``data`` with the value at dotted path ``old`` moved to ``new`` (nested dicts copied)."""
    data = dict(data)
    *old_path, old_key = old.split(".")
    node = data
    for part in old_path:
        if not isinstance(node.get(part), Mapping):
            return data
        node[part] = dict(node[part])
        node = node[part]
    if old_key not in node:
        return data
    value = node.pop(old_key)
    *new_path, new_key = new.split(".")
    target = data
    for part in new_path:
        child = target.get(part)
        if child is None:
            child = {}
        if not isinstance(child, Mapping):
            return data  # not a section: _build names the bad value
        target[part] = dict(child)
        target = target[part]
    if new_key in target:
        raise ConfigError(f"config key(s) {[prefix + old]} are set under their old and their new names "
                          f"({prefix + new}); keep the new ones")
    target[new_key] = value
    notes.append(f"{prefix}{old} -> {prefix}{new}")
    return data


def with_current_keys(cls: type, data: Any, prefix: str = "", notes: Optional[List[str]] = None) -> Any:
    """``data`` (a file's nested dict) with every renamed key given its current name and
    every earlier value of a key whose type changed its current value (``KEY_ALIASES``,
    ``VALUE_ALIASES`` of the config classes). ``notes``: a list to which each such change
    is added (``"val.every -> train.val_every"``), for the warning of :func:`load_config`."""
    if not isinstance(data, Mapping) or not _is_section(cls):
        return data
    notes = [] if notes is None else notes
    aliases, hints, values = _aliases(cls), typing.get_type_hints(cls), _value_aliases(cls)
    for old, new in aliases.items():
        if "." in old or "." in new:
            data = _move(data, old, new, prefix, notes)
    aliases = {old: new for old, new in aliases.items() if "." not in old and "." not in new}
    both = [prefix + old for old, new in aliases.items() if old in data and new in data]
    if both:
        raise ConfigError(f"config key(s) {both} are set under their old and their new names; keep the new ones")
    out = {}
    for key, value in data.items():
        current = aliases.get(key, key)
        if current != key:
            notes.append(f"{prefix}{key} -> {prefix}{current}")
        hint = hints.get(current)
        if _is_section(hint):
            value = with_current_keys(hint, value, f"{prefix}{current}.", notes)
        elif current in values:
            for earlier, now in values[current].items():
                if _same_value(value, earlier):
                    notes.append(f"{prefix}{current}: {_show(value)} -> {_show(now)}")
                    value = now
                    break
        out[current] = value
    return out


def _warn_deprecated(notes: Mapping[str, Sequence[str]]) -> None:
    """One line on stderr naming the earlier key names and values a config used,
    ``{where: [note, ...]}`` (rank 0 only)."""
    said = "; ".join(f"{where}: {', '.join(found)}" for where, found in notes.items() if found)
    if said and os.environ.get("RANK", "0") == "0":
        print(f"warning: deprecated config names, read as the current ones ({said}); rename them, the earlier "
              "names may go", file=sys.stderr)


def _build(cls: Type[T], data: Mapping[str, Any], prefix: str, root: type) -> T:
    if not isinstance(data, Mapping):
        raise ConfigError(f"config section {prefix.rstrip('.') or '<root>'!r} must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = [f"{prefix}{k}" for k in data if k not in names]
    if unknown:
        raise ConfigError(f"unknown config key(s) {unknown}; known keys: {_known_keys(root)}")
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value or {}, f"{prefix}{name}.", root)
        else:
            kwargs[name] = _coerce(value, hint, prefix + name)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid config section {prefix.rstrip('.') or '<root>'!r}: {exc}") from exc


def _set_dotted(data: Dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"cannot set {dotted!r}: {part!r} is not a section")
    node[parts[-1]] = value


def parse_override(text: str) -> tuple:
    """``"train.lr=2e-4"`` -> ``("train.lr", 0.0002)`` (the value is parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"--set expects dotted.key=value, got {text!r}")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set expects dotted.key=value, got {text!r}")
    try:
        value = load_yaml(raw) if raw.strip() else ""
    except DuplicateKeyError as exc:
        raise ConfigError(f"--set {key}: duplicate key {exc.key!r} in {raw.strip()!r}") from None
    except yaml.YAMLError:
        value = raw
    # YAML 1.1 reads "2e-4" as a string; numbers written that way are meant as floats.
    if isinstance(value, str):
        try:
            value = float(value) if any(c in value.lower() for c in ".e") else value
        except ValueError:
            pass
    return key, value


def load_config(cls: Type[T], path: Union[None, str, Path] = None, overrides: Sequence[str] = (),
                values: Optional[Mapping[str, Any]] = None) -> T:
    """Build ``cls`` (a dataclass) from its defaults, a YAML file and ``key=value`` overrides.

    Later sources win: defaults < file < ``overrides`` (``"dotted.key=value"`` strings,
    values parsed as YAML) < ``values`` (``{dotted key: Python value}``: what a CLI flag
    such as ``--images`` sets). The result is validated once, after all of them. Unknown
    keys and wrongly typed values raise :class:`ConfigError` naming them.
    """
    data: Dict[str, Any] = {}
    in_file: List[str] = []
    notes: List[str] = []  # --set
    if path is not None:
        path = resolve_config_path(path)
        loaded = read_yaml_file(path)
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path} must hold a YAML mapping at the top level, got {type(loaded).__name__}")
        data = with_current_keys(cls, loaded, notes=in_file)
    known = set(_known_keys(cls))
    mappings = _mapping_keys(cls)
    for text in overrides:
        key, value = parse_override(text)
        current = _canonical(cls, key)
        if current != key:
            notes.append(f"{key} -> {current}")
        key = current
        entry = any(key.startswith(m + ".") and len(key) > len(m) + 1 and "." not in key[len(m) + 1 :] for m in mappings)
        if key not in known and not entry and not any(k.startswith(key + ".") for k in known):
            raise ConfigError(f"unknown config key {key!r} in --set; known keys: {sorted(known)}")
        _set_dotted(data, key, value)
    for key, value in (values or {}).items():
        key = _canonical(cls, key)
        if key not in known:
            raise ConfigError(f"unknown config key {key!r}; known keys: {sorted(known)}")
        _set_dotted(data, key, value)
    data = with_current_keys(cls, data, notes=notes)  # earlier values given with --set (train.amp=auto)
    _warn_deprecated({str(path): in_file, "--set": notes})
    return _build(cls, data, "", cls)


def config_to_dict(cfg: Any) -> Dict[str, Any]:
    """Plain nested dict of a config dataclass (tuples become lists)."""

    def plain(v):
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, Path):
            return str(v)
        return v

    return plain(dataclasses.asdict(cfg))


def save_config(cfg: Any, path: Union[str, Path]) -> None:
    """Write the resolved config (a dataclass) as YAML, atomically."""
    save_config_dict(config_to_dict(cfg), path)


def add_config_arguments(parser: argparse.ArgumentParser, *, default_config: Optional[str] = None) -> None:
    """Add ``--config FILE``, ``--set dotted.key=value`` (repeatable) and ``--out DIR``."""
    parser.add_argument("--config", type=Path, default=default_config,
                        help="YAML config file, or the name of a shipped one (e.g. pretrain_synthetic)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config value, e.g. --set train.lr=2e-4 (repeatable; unknown keys are an error)",
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder for results, logs and checkpoints")


def config_from_args(cls: Type[T], args: argparse.Namespace, values: Optional[Mapping[str, Any]] = None) -> T:
    """``load_config(cls, args.config, args.overrides, values)``, exiting with the message on a bad config."""
    try:
        return load_config(cls, args.config, args.overrides, values)
    except (ConfigError, FileNotFoundError) as exc:
        raise SystemExit(f"error: {exc}") from None
