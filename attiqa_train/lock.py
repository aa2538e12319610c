"""The lock of an output folder: two processes never write one folder at once.

:func:`acquire_lock` puts a lock file (:data:`LOCK_NAME`) into the folder, naming the
process that holds it (pid, host, command, start time). A second process is refused with
one line naming the holder. A lock left behind by a process that no longer runs on this
host is taken over (said on stderr); one from another host is never touched. Run folders
(:mod:`attiqa_train.rundir`) and label folders use it.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union

__all__ = ["LOCK_NAME", "RunFolderError", "RunLockError", "RunLock", "acquire_lock"]

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
