"""Output folders of training runs and labelling jobs: finished work is never replaced by
accident and two processes never write one folder at once (docs/checkpoints.md, "Run
folders").

- :func:`acquire_lock` puts a lock file (:data:`LOCK_NAME`) into the folder, naming the
  process that holds it (pid, host, command, start time). A second process is refused
  with one line naming the holder. A lock left behind by a process that no longer runs
  on this host is taken over (said on stderr); one from another host is never touched.
- :func:`prepare_run_dir` (``attiqa-pretrain train``, ``attiqa-enhance train``) takes the
  lock, then refuses a folder that already holds a run unless ``--resume`` (continue) or
  ``--overwrite`` (the previous run's files are removed, said on stderr), refuses
  ``--resume`` without a saved state, and refuses ``--resume`` with a config that differs
  from the run's ``config.yaml`` in a key that changes the result, naming the keys.

Under ``torchrun`` only rank 0 takes the lock and inspects the folder; its verdict is
shared with the other ranks, so they stop too instead of waiting at a barrier.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import socket
import sys
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Union

__all__ = [
    "LOCK_NAME",
    "RunFolderError",
    "RunLockError",
    "RunLock",
    "acquire_lock",
    "lock_folder",
    "changed_keys",
    "prepare_run_dir",
    "agree_across_ranks",
]

#: The lock file's name inside a run or label folder.
LOCK_NAME = "attiqa.lock"

PathLike = Union[str, os.PathLike]


class RunFolderError(ValueError):
    """The output folder cannot be used as asked (it holds a run and neither --resume nor
    --overwrite was given, --resume without a state, --resume with a changed config...)."""


class RunLockError(RunFolderError):
    """Another process holds the folder's lock."""


def _say(message: str) -> None:
    print(message, file=sys.stderr)


def _proc_start(pid: int) -> Optional[str]:
    """The start time of process ``pid`` in clock ticks since boot (Linux), to tell a
    reused pid from the process that wrote a lock; None where it cannot be read."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces: split after it.
    fields = text[text.rfind(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else None


def _alive(pid: int, start: Optional[str]) -> bool:
    from attiqa_loss.io import _pid_alive

    if not _pid_alive(pid):
        return False
    if start is not None and pid != os.getpid():
        now = _proc_start(pid)
        if now is not None and now != start:  # the pid now belongs to another process
            return False
    return True


def _describe(holder: Mapping[str, Any]) -> str:
    return (f"process {holder.get('pid')} on host {holder.get('host')!r} "
            f"({holder.get('command', '?')}, since {holder.get('started', '?')})")


def _read_lock(path: Path) -> Optional[Dict[str, Any]]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("pid"), int) or not isinstance(data.get("host"), str):
        return None
    return data


class RunLock:
    """A held lock file; :meth:`release` (or leaving the ``with`` block) removes it."""

    def __init__(self, path: Path, info: Dict[str, Any]) -> None:
        self.path, self.info = path, info
        self._held = True

    def release(self) -> None:
        if not self._held:
            return
        self._held = False
        # Remove it only while it is still ours (never a successor's lock).
        if _read_lock(self.path) == self.info:
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def acquire_lock(folder: PathLike, command: str) -> RunLock:
    """Create ``folder`` (if needed) and its lock file for this process.

    Raises:
        RunLockError: another running process holds the lock (one line naming its pid,
            host, command and start time, and the rule for stale locks).
        RunFolderError: ``folder`` exists and is not a folder.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise RunFolderError(f"--out {folder} is a file, not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    info = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": command,
        "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    start = _proc_start(os.getpid())
    if start is not None:
        info["pid_start"] = start
    unreadable = 0
    for _ in range(50):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as f:
                json.dump(info, f)
                f.flush()
                os.fsync(f.fileno())
            return RunLock(path, info)
        holder = _read_lock(path)
        if holder is None:
            if not path.exists():
                continue  # released meanwhile: try again
            # Written this very moment by another process, or damaged: look again shortly.
            unreadable += 1
            if unreadable < 20:
                import time

                time.sleep(0.05)
                continue
            raise RunLockError(
                f"{folder} is locked by {path}, which cannot be read; if no process is using {folder}, delete that file"
            )
        same_host = holder["host"] == socket.gethostname()
        if same_host and not _alive(holder["pid"], holder.get("pid_start")):
            # A lock of a process that died on this machine: take it over. Move it aside
            # first, so that of two processes doing this at once only one succeeds.
            aside = path.with_name(f"{LOCK_NAME}.stale.{os.getpid()}")
            try:
                os.rename(path, aside)
            except FileNotFoundError:
                continue
            moved = _read_lock(aside)
            if moved != holder:  # another process took it over in between: put its lock back
                try:
                    os.link(aside, path)
                except OSError:
                    pass
            else:
                _say(f"{command}: taking over the lock of {_describe(holder)} in {folder}: that process no longer runs")
            try:
                aside.unlink()
            except FileNotFoundError:
                pass
            continue
        where = "this host" if same_host else f"host {holder['host']!r}, not this one"
        raise RunLockError(
            f"{folder} is in use by {_describe(holder)}; wait for it to end or stop it "
            f"(a lock of a process that no longer runs on the same host is taken over automatically; "
            f"this one is on {where}: if that process is gone, delete {path})"
        )
    raise RunLockError(f"could not take the lock {path} (it changed hands repeatedly); try again")


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


def agree_across_ranks(ok: bool, device: Any = "cpu") -> bool:
    """True on every rank iff ``ok`` is true on every rank (identity in one process)."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return ok
    flag = torch.tensor([1 if ok else 0], dtype=torch.int32, device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


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
            in the folder are left alone) and that is said on stderr.
        config: the new run's config as a nested dict; on ``resume`` it is compared with
            ``out/config.yaml`` and any changed key outside ``free_keys`` is refused.
        free_keys: keys that do not change the result (``"val."`` = the whole section).
        defaults: the config's default values (nested like ``config``): a key missing
            from ``out/config.yaml`` (saved before the key existed) counts as its default.
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
                          defaults)
        except RunFolderError as exc:
            error = exc
    _share_verdict(error, lock, out, device)
    return lock


def _check(out, command, run_files, state_name, state_what, resume, overwrite, config, free_keys,
           defaults=None) -> RunLock:
    if resume and overwrite:
        raise RunFolderError("--resume continues the run in --out and --overwrite replaces it: give one of them")
    state = out / state_name
    if resume and not out.is_dir():
        raise RunFolderError(f"--resume: no {state_what} at {state} (the folder does not exist)")
    lock = acquire_lock(out, command)
    try:
        present = [name for name in run_files if (out / name).exists()]
        if resume:
            if not state.is_file():
                hint = (f"; the folder holds {', '.join(present)} but no state to continue from: "
                        "--overwrite starts the run again there" if present else "")
                raise RunFolderError(f"--resume: no {state_what} at {state}{hint}")
            saved = out / "config.yaml"
            if config is not None and saved.is_file():
                import yaml

                try:
                    before = yaml.safe_load(saved.read_text()) or {}
                except (OSError, yaml.YAMLError) as exc:
                    raise RunFolderError(f"--resume: cannot read {saved}: {type(exc).__name__}: {exc}".splitlines()[0]) from None
                changed = [k for k in changed_keys(before, dict(config), defaults=defaults) if not _free(k, free_keys)]
                if changed:
                    raise RunFolderError(
                        f"--resume: the config differs from the run's {saved} in {changed}, which change the result; "
                        "resume with the same values, or start a new run (another --out, or --overwrite)"
                    )
        elif present:
            if not overwrite:
                raise RunFolderError(
                    f"{out} already holds a run ({', '.join(present)}); --resume continues it, --overwrite replaces it "
                    "(its files are deleted), or choose another --out"
                )
            for name in present:
                _remove(out / name)
            _say(f"{command}: --overwrite: removed the previous run's {', '.join(present)} from {out}")
    except BaseException:
        lock.release()
        raise
    return lock
