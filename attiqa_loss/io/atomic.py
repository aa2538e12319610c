"""Atomic file writing: :func:`atomic_write` and :func:`atomic_path` write beside the
target under a temporary name (``.<target name>.<host>-<pid>.<random>.tmp``) and rename
it onto the target only on success, durably (``fsync``); :func:`orphan_temp_files` lists
the temporary files that crashed writers left behind (their process, :func:`_pid_alive`,
no longer runs), which the writers remove once per folder and process. An ``OSError`` of a
write (a read-only folder, a full disk) names the destination, not the temporary file;
:func:`check_writable` tells before any work whether a folder can be written."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import tempfile
import threading
import zlib
from pathlib import Path
from typing import Iterator, List, Set, Tuple, Union

PathLike = Union[str, os.PathLike]


def _umask() -> int:
    # Linux exposes the umask read-only; elsewhere the only way is set-and-restore.
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX). Platforms and file systems where a
    folder cannot be opened or synced (Windows, some network mounts) skip it."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
    try:
        fd = os.open(folder, flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: PathLike) -> None:
    """Flush a file that a library wrote by name to the disk."""
    fd = os.open(path, os.O_RDWR | getattr(os, "O_BINARY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _publish(tmp: PathLike, path: Path) -> None:
    # mkstemp creates files readable by the owner only; the result should get the
    # permissions a plain open() would give it (a checkpoint others must be able to read).
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


# Temporary files are named ``.<target name>.<host>-<pid>.<random>.tmp``: the host and
# process id tell a crashed writer's leftover (an orphan) from a live writer's file.
_HOST = format(zlib.crc32(socket.gethostname().encode("utf-8", "replace")), "08x")
_TEMP = re.compile(r"^\..+\.(?P<host>[0-9a-f]{8})-(?P<pid>[0-9]+)\.[a-z0-9_]+\.tmp$")
_cleaned: Set[str] = set()
_cleaned_lock = threading.Lock()


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    if os.name != "posix":  # no safe liveness probe (os.kill would signal the process)
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but belongs to someone else, or cannot be told: keep its file
        return True
    return True


def orphan_temp_files(folder: PathLike) -> List[Path]:
    """Temporary files of :func:`atomic_write`/:func:`atomic_path` in ``folder`` whose
    writer (a process on this machine) no longer runs. Only names of that pattern are
    considered; files of other hosts and of running processes are never listed."""
    found = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return found
    for entry in entries:
        m = _TEMP.match(entry.name)
        if m is None or m["host"] != _HOST or _pid_alive(int(m["pid"])):
            continue
        with contextlib.suppress(OSError):
            if entry.is_file(follow_symlinks=False):
                found.append(Path(entry.path))
    return sorted(found)


def _clean_orphans(folder: Path) -> None:
    # Once per folder and process: orphans only come from writers that have died, so
    # the first write into a folder finds all there are (and thousands of writes into
    # one folder, as infer does, do not list it thousands of times).
    key = os.path.abspath(folder)
    with _cleaned_lock:
        if key in _cleaned:
            return
        _cleaned.add(key)
    for orphan in orphan_temp_files(folder):
        with contextlib.suppress(OSError):
            orphan.unlink()


def _temp_file(path: Path) -> Tuple[int, str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    _clean_orphans(path.parent)
    try:
        return tempfile.mkstemp(prefix=f".{path.name}.{_HOST}-{os.getpid()}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:  # a read-only folder, a full disk: name the file that was to be written
        # (mkstemp's error names the temporary file it tried to create, never the destination)
        if exc.strerror is not None:
            exc.filename = str(path)
            with contextlib.suppress(AttributeError, TypeError):
                del exc.filename2
        raise


def _naming(exc: BaseException, path: Path, tmp) -> BaseException:
    """``exc`` with ``filename`` set to ``path`` when it is an ``OSError`` that names no file
    or only the temporary one (a failed ``write``, ``fsync`` or rename says no name), so
    that the message names the file the caller asked for."""
    # (An OSError made from a message alone, OSError("disk full"), keeps it: only errors of the
    # operating system, with an errno and its text, get the name.)
    if (isinstance(exc, OSError) and exc.strerror is not None
            and (exc.filename is None or (tmp is not None and exc.filename == tmp))):
        exc.filename = str(path)
        # ``del``, not ``= None``: an OSError whose filename2 is set to None prints "... -> None"
        with contextlib.suppress(AttributeError, TypeError):
            del exc.filename2
    return exc


def check_writable(folder: PathLike) -> None:
    """Raise an ``OSError`` naming ``folder`` when nothing can be written there: a file is
    created (and removed) in it, or, when it does not exist yet, in its nearest existing
    parent (where it would be created). Commands call it before any work, so that a
    read-only output folder is one line at the start instead of failures at the end."""
    folder = Path(folder)
    probe = folder
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        if probe == folder:
            raise NotADirectoryError(20, "Not a directory", str(folder))
        raise NotADirectoryError(20, f"Not a directory: {probe}", str(folder))
    try:
        fd, name = tempfile.mkstemp(prefix=f".attiqa-write-check.{_HOST}-{os.getpid()}.", suffix=".tmp", dir=probe)
    except OSError as exc:
        raise type(exc)(exc.errno, exc.strerror or str(exc), str(folder)) from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(name)


@contextlib.contextmanager
def atomic_write(path: PathLike, mode: str = "wb") -> Iterator:
    """Open a temporary file beside ``path``; rename it onto ``path`` only on success.

    A crash or an exception leaves any previous ``path`` untouched and no partial file.
    The file is flushed to disk (``fsync``) before the rename and the folder after it,
    so a power loss leaves either the old or the new file. Temporary files that a
    crashed writer left in the folder are removed (see :func:`orphan_temp_files`).
    """
    path = Path(path)
    fd, tmp = _temp_file(path)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        _publish(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        _naming(exc, path, tmp)
        raise


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` for libraries that write by file name;
    renamed onto ``path`` when the block succeeds, removed when it fails. Durable and
    tidy as :func:`atomic_write` (the file is synced before the rename, the folder after)."""
    path = Path(path)
    fd, tmp = _temp_file(path)
    os.close(fd)
    try:
        yield Path(tmp)
        _fsync_file(tmp)
        _publish(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        _naming(exc, path, tmp)
        raise
