"""Output folders of training runs and labelling jobs: finished work is never replaced by
accident and two processes never write one folder at once (docs/checkpoints.md, "Run
folders").

- :func:`prepare_run_dir` (``attiqa-pretrain train``, ``attiqa-enhance train``) takes the
  lock, then refuses a folder that already holds a run unless ``--resume`` (continue) or
  ``--overwrite`` (the previous run's files are removed, said on stderr), refuses
  ``--resume`` without a saved state, and refuses ``--resume`` with a config that differs
  from the run's ``config.yaml`` in a key that changes the result, naming the keys.
- A run records the names it writes into its folder in :data:`MANIFEST_NAME`
  (:func:`record_files`). ``--overwrite`` deletes only names listed there: a folder
  holding files of a run's names that no run recorded (the user's own ``config.yaml`` or
  ``tb/``) is refused with one line naming the folder and the files
  (:func:`check_replaceable`), and nothing is deleted. ``--resume`` of a run written
  before the record existed records it.
- A recorded name that is a folder (``tb``) is deleted only when every file in it is the
  run's: recorded by name under ``contents`` (:func:`record_contents`: a training run
  records the files that appeared in its folders at each state save and when it ends) or,
  in ``tb``, a TensorBoard event file (``events.out.tfevents.*``, the only files the
  trainers' writers make, so a run killed before its first save, or recorded before
  ``contents`` existed, is still replaced). Any other file there (the user's
  ``tb/my_plot.txt``) makes ``--overwrite`` refuse, naming it, and nothing is deleted.

Under ``torchrun`` only rank 0 takes the lock and inspects the folder; its verdict is
shared with the other ranks, so they stop too instead of waiting at a barrier.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

from .distributed import agree_across_ranks
from .lock import LOCK_NAME, PathLike, RunFolderError, RunLock, RunLockError, _say, acquire_lock

__all__ = ["LOCK_NAME", "MANIFEST_NAME", "RunFolderError", "RunLockError", "RunLock", "acquire_lock", "lock_folder",
           "changed_keys", "prepare_run_dir", "read_manifest", "owned_files", "record_files", "check_replaceable",
           "folder_files", "record_contents", "not_replaceable"]

#: The record of the names a run wrote into its folder (JSON: ``commands``, ``files``, and
#: ``contents``: files inside the recorded folders, relative to the run folder).
#: ``--overwrite`` deletes or replaces only names listed in it.
MANIFEST_NAME = "attiqa-run.json"

#: Recorded folders whose files of this name prefix count as the run's without being listed
#: in ``contents``: TensorBoard's writers name every file they make so.
EVENT_FILE_PREFIXES = {"tb": "events.out.tfevents."}


def read_manifest(out: PathLike) -> Optional[Dict[str, Any]]:
    """The run record of folder ``out`` (:data:`MANIFEST_NAME`), or None when there is none
    (or it cannot be read: then nothing counts as written by a run)."""
    try:
        data = json.loads((Path(out) / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("files"), list):
        return None
    return data


def owned_files(out: PathLike) -> Optional[Set[str]]:
    """The names (relative to ``out``) that a run recorded writing there; None: no record."""
    data = read_manifest(out)
    return None if data is None else {str(n) for n in data["files"]}


def _contents(data: Optional[Mapping[str, Any]]) -> List[str]:
    found = (data or {}).get("contents")
    return [str(n) for n in found] if isinstance(found, list) else []


def _write_manifest(out: Path, commands: Sequence[str], files: Sequence[str], contents: Sequence[str]) -> None:
    from .files import write_json

    write_json(out / MANIFEST_NAME, {"format": "attiqa-run-files", "version": 1, "commands": list(commands),
                                     "files": list(files), "contents": list(contents)})


def record_files(out: PathLike, command: str, names: Iterable[str]) -> None:
    """Add ``names`` (relative to ``out``) to the folder's run record, written atomically;
    call it before the files are written, under the folder's lock."""
    old = read_manifest(out) or {}
    files = list(dict.fromkeys([*map(str, old.get("files", [])), *names]))
    earlier = old.get("commands") if isinstance(old.get("commands"), list) else []
    commands = list(dict.fromkeys([*map(str, earlier), command]))
    _write_manifest(Path(out), commands, files, _contents(old))


def folder_files(out: PathLike, name: str) -> List[str]:
    """Every file (or link, or other non-folder entry) below ``out/name``, as paths
    relative to ``out`` with ``/`` separators, sorted; links are not followed. Empty when
    ``out/name`` is not a folder."""
    root = Path(out) / name
    if root.is_symlink() or not root.is_dir():
        return []
    found: List[str] = []

    def walk(folder: Path, rel: str) -> None:
        for entry in sorted(os.scandir(folder), key=lambda e: e.name):
            path = f"{rel}/{entry.name}"
            if entry.is_dir(follow_symlinks=False):
                walk(Path(entry.path), path)
            else:
                found.append(path)

    walk(root, name)
    return found


def record_contents(out: PathLike, folders: Iterable[str], exclude: Iterable[str] = ()) -> List[str]:
    """Add the files below each of ``folders`` (names in ``out``) to the run record's
    ``contents``, except ``exclude`` (files that were there before the run: the user's
    or an earlier run's, see :func:`folder_files`). Rewrites the record only when a file
    is new to it; does nothing without a record. Returns the files added."""
    out = Path(out)
    data = read_manifest(out)
    if data is None:
        return []
    known = set(_contents(data)) | set(exclude)
    new = [f for name in folders for f in folder_files(out, name) if f not in known]
    if new:
        _write_manifest(out, [str(c) for c in data.get("commands", []) or []], [str(n) for n in data["files"]],
                        [*_contents(data), *new])
    return new


def _forget_contents(out: Path, removed: Iterable[str]) -> None:
    """Drop the ``contents`` entries below the folders ``removed`` (they were deleted)."""
    data = read_manifest(out)
    if data is None:
        return
    removed = tuple(f"{name}/" for name in removed)
    kept = [f for f in _contents(data) if not f.startswith(removed)]
    if kept != _contents(data):
        _write_manifest(out, [str(c) for c in data.get("commands", []) or []], [str(n) for n in data["files"]], kept)


def _owned_inside(data: Optional[Mapping[str, Any]], path: str) -> bool:
    if path in set(_contents(data)):
        return True
    prefix = EVENT_FILE_PREFIXES.get(path.split("/", 1)[0])
    return prefix is not None and path.rsplit("/", 1)[-1].startswith(prefix)


def _not_the_runs(out: Path, present: Sequence[str], deleted_folders: Iterable[str] = ()) -> Tuple[str, List[str]]:
    """("", []) when every name in ``present`` (and every file in ``deleted_folders``) is the
    run's; else ("names", files) when names in ``present`` are not recorded, ("inside",
    files) when files inside recorded folders are not."""
    data = read_manifest(out)
    owned = None if data is None else {str(n) for n in data["files"]}
    foreign = [n for n in present if owned is None or n not in owned]
    if foreign:
        return "names", foreign
    inside = [f for name in deleted_folders if name in present for f in folder_files(out, name)
              if not _owned_inside(data, f)]
    return ("inside", inside) if inside else ("", [])


def _whose(out: Path, kind: str, files: Sequence[str]) -> str:
    """``"OUT holds a, b, but <why>"``: the files of :func:`_not_the_runs`."""
    manifest = out / MANIFEST_NAME
    if kind == "inside":
        return f"{out} holds {', '.join(files)}, which no run recorded writing ({manifest})"
    if manifest.is_file() and read_manifest(out) is not None:
        why = f"the run recorded in {manifest} did not write them"
    else:
        why = f"no record of a run that wrote them ({manifest} is missing)"
    return f"{out} holds {', '.join(files)}, but {why}"


def not_replaceable(out: PathLike, present: Sequence[str], deleted_folders: Iterable[str] = ()) -> Optional[str]:
    """None when :func:`check_replaceable` would accept ``present``; else the reason,
    ``"OUT holds a, b, but no record of a run that wrote them (...)"``, for a refusal
    that should not suggest ``--overwrite``."""
    out = Path(out)
    kind, files = _not_the_runs(out, present, deleted_folders)
    return _whose(out, kind, files) if kind else None


def check_replaceable(out: PathLike, present: Sequence[str], flag: str = "--overwrite", *,
                      deleted_folders: Iterable[str] = ()) -> None:
    """Raise :class:`RunFolderError` (one line naming the folder and the files) unless every
    name in ``present`` (files a command is about to delete or replace) is listed in the
    folder's run record: files no run wrote are the user's and are never deleted.

    ``deleted_folders``: names in ``present`` that are deleted with what they hold (``tb``);
    every file in such a folder must be the run's too (recorded in ``contents``, or a
    TensorBoard event file in ``tb``), else the files that are not are named."""
    out = Path(out)
    kind, files = _not_the_runs(out, present, deleted_folders)
    if kind == "inside":
        raise RunFolderError(f"{flag}: {_whose(out, kind, files)}, so nothing is deleted; move them out of the folder "
                             "or choose another --out")
    if kind:
        raise RunFolderError(
            f"{flag}: {_whose(out, kind, files)}, so nothing is deleted; move them out of the folder "
            "(or delete them yourself if they are an earlier run's) or choose another --out"
        )


def changed_keys(before: Mapping[str, Any], after: Mapping[str, Any], prefix: str = "",
                 defaults: Optional[Mapping[str, Any]] = None) -> List[str]:
    """Dotted keys whose values differ between two nested config dicts.

    ``defaults`` (nested like them): a key missing from ``before`` counts as its default
    there, so a config saved before a key existed equals one that leaves it at its default."""
    keys = []
    defaults = defaults if isinstance(defaults, Mapping) else {}
    for k in sorted(set(before) | set(after)):
        a, b = before.get(k, defaults.get(k)), after.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            keys += changed_keys(a, b, f"{prefix}{k}.", defaults.get(k))
        elif a != b:
            keys.append(prefix + k)
    return keys


def _free(key: str, free_keys: Iterable[str]) -> bool:
    return any(key == f or (f.endswith(".") and key.startswith(f)) for f in free_keys)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def lock_folder(folder: PathLike, command: str, *, is_main: bool = True, device: Any = "cpu") -> Optional[RunLock]:
    """:func:`acquire_lock` on rank 0, its verdict shared with every rank (a refusal
    raises on all of them). Returns the lock on rank 0, None elsewhere."""
    lock: Optional[RunLock] = None
    error: Optional[BaseException] = None
    if is_main:
        try:
            lock = acquire_lock(folder, command)
        except RunFolderError as exc:
            error = exc
    _share_verdict(error, lock, folder, device)
    return lock


def _share_verdict(error: Optional[BaseException], lock: Optional[RunLock], folder: PathLike, device: Any) -> None:
    if not agree_across_ranks(error is None, device):
        if lock is not None:
            lock.release()
        if error is not None:
            raise error
        raise RunFolderError(f"rank 0 refused the output folder {folder} (see its message)")


def prepare_run_dir(
    out: PathLike,
    *,
    command: str,
    run_files: Sequence[str],
    state_name: str,
    state_what: str = "training state",
    resume: bool,
    overwrite: bool,
    config: Optional[Mapping[str, Any]] = None,
    free_keys: Sequence[str] = (),
    is_main: bool = True,
    device: Any = "cpu",
    defaults: Optional[Mapping[str, Any]] = None,
    legacy_state_names: Sequence[str] = (),
    config_class: Optional[type] = None,
) -> Optional[RunLock]:
    """Lock ``out`` for a training run and check that it may be used as asked.

    Args:
        out: the run folder (``--out``).
        command: named in the lock and the messages.
        run_files: the names a run writes into ``out`` (any of them present = a run is there).
        state_name: the resumable state's file name (``state.pt``, ``checkpoint.pt``).
        state_what: what to call it in messages.
        resume: continue the run in ``out`` (needs ``state_name``).
        overwrite: replace the run in ``out``: its ``run_files`` are removed (other files
            in the folder are left alone) and that is said on stderr; refused when one of
            them is not listed in the folder's run record (:func:`check_replaceable`).
        config: the new run's config as a nested dict; on ``resume`` it is compared with
            ``out/config.yaml`` and any changed key outside ``free_keys`` is refused.
        free_keys: keys that do not change the result (``"val."`` = the whole section).
        defaults: the config's default values (nested like ``config``): a key missing
            from ``out/config.yaml`` (saved before the key existed) counts as its default.
        legacy_state_names: earlier names of ``state_name``: on ``resume`` without
            ``state_name``, the first of them present is renamed to it (under the lock,
            said on stderr).
        config_class: the config dataclass; on ``resume``, ``out/config.yaml`` is compared
            under its current key names and values (:func:`attiqa_train.config.with_current_keys`:
            a run saved before a key was renamed resumes).
        is_main: rank 0 (the others only learn the verdict).
        device: where the verdict is exchanged under torchrun (the process group's device).

    Returns:
        The held :class:`RunLock` on rank 0 (release it when the run ends), None elsewhere.

    Raises:
        RunFolderError / RunLockError: one line saying why and what to do.
    """
    out = Path(out)
    lock: Optional[RunLock] = None
    error: Optional[BaseException] = None
    if is_main:
        try:
            lock = _check(out, command, run_files, state_name, state_what, resume, overwrite, config, free_keys,
                          defaults, legacy_state_names, config_class)
        except (RunFolderError, OSError) as exc:  # OSError: the record or a removal could not be written
            error = exc
    _share_verdict(error, lock, out, device)
    return lock


def _occupied(out: Path, present: Sequence[str], state: Path, state_what: str) -> str:
    """Why a run without ``--resume``/``--overwrite`` is refused, suggesting only the flags
    that would be accepted: ``--overwrite`` only when every file it would delete is a
    recorded run's, ``--resume`` only when there is a state to continue from."""
    kind, files = _not_the_runs(out, present, present)
    if not kind:
        return (f"{out} already holds a run ({', '.join(present)}); --resume continues it, --overwrite replaces it "
                "(its files are deleted), or choose another --out")
    if kind == "inside":
        return (f"{out} already holds a run ({', '.join(present)}); --resume continues it, or choose another --out "
                f"(--overwrite deletes nothing while {_whose(out, kind, files)})")
    if state.is_file():  # a run of a version without the record, or the user's files: the user knows
        return (f"{_whose(out, kind, files)}: --resume continues it if it is a run (of an earlier version, which "
                f"--resume records), or choose another --out (--overwrite deletes only files a run recorded writing)")
    return (f"{_whose(out, kind, files)}: they are not a run to continue or replace, so choose another --out "
            "(or move them out of the folder)")


def _check(out, command, run_files, state_name, state_what, resume, overwrite, config, free_keys,
           defaults=None, legacy_state_names=(), config_class=None) -> RunLock:
    if resume and overwrite:
        raise RunFolderError("--resume continues the run in --out and --overwrite replaces it: give one of them")
    state = out / state_name
    if resume and not out.is_dir():
        raise RunFolderError(f"--resume: no {state_what} at {state} (the folder does not exist)")
    lock = acquire_lock(out, command)
    try:
        if resume and not state.exists():
            for name in legacy_state_names:
                if (out / name).is_file():
                    (out / name).rename(state)
                    _say(f"{command}: renamed {out / name} to {state} (the resumable state's current name)")
                    break
        present = [name for name in run_files if (out / name).exists()]
        if resume:
            if not state.is_file():
                hint = ""
                if present:
                    kind, files = _not_the_runs(out, present, present)
                    hint = (f"; the folder holds {', '.join(present)} but no state to continue from: "
                            "--overwrite starts the run again there" if not kind else
                            f"; {_whose(out, kind, files)}: they are not a run to continue or replace, "
                            "so choose another --out (or move them out of the folder)")
                raise RunFolderError(f"--resume: no {state_what} at {state}{hint}")
            saved = out / "config.yaml"
            if config is not None and saved.is_file():
                import yaml

                try:
                    before = yaml.safe_load(saved.read_text()) or {}
                except (OSError, yaml.YAMLError) as exc:
                    raise RunFolderError(f"--resume: cannot read {saved}: {type(exc).__name__}: {exc}".splitlines()[0]) from None
                if config_class is not None:
                    from .config import ConfigError, with_current_keys

                    try:
                        before = with_current_keys(config_class, before)
                    except ConfigError as exc:
                        raise RunFolderError(f"--resume: {saved}: {exc}") from None
                changed = [k for k in changed_keys(before, dict(config), defaults=defaults) if not _free(k, free_keys)]
                if changed:
                    raise RunFolderError(
                        f"--resume: the config differs from the run's {saved} in {changed}, which change the result; "
                        "resume with the same values, or start a new run (another --out, or --overwrite)"
                    )
        elif present:
            if not overwrite:
                raise RunFolderError(_occupied(out, present, state, state_what))
            check_replaceable(out, present, deleted_folders=present)  # before anything is deleted
            for name in present:
                _remove(out / name)
            _forget_contents(out, present)
            _say(f"{command}: --overwrite: removed the previous run's {', '.join(present)} from {out}")
        record_files(out, command, run_files)  # before the run writes any of them
    except BaseException:
        lock.release()
        raise
    return lock
