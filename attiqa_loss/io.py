"""File helpers shared by the commands: atomic writes, image discovery and decoding."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import tempfile
import threading
import zlib
from pathlib import Path
from typing import Iterable, Iterator, List, Optional, Sequence, Set, Tuple, Union

import numpy as np
import torch

__all__ = [
    "IMAGE_EXTENSIONS",
    "atomic_write",
    "atomic_path",
    "orphan_temp_files",
    "list_images",
    "read_image",
    "save_image",
    "ImageFiles",
]

PathLike = Union[str, os.PathLike]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm")


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
    return tempfile.mkstemp(prefix=f".{path.name}.{_HOST}-{os.getpid()}.", suffix=".tmp", dir=path.parent)


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
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
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
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def list_images(paths: Iterable[PathLike], *, recursive: bool = True) -> List[Path]:
    """Expand files and folders into a sorted, de-duplicated list of image files.

    Folders are searched recursively for :data:`IMAGE_EXTENSIONS` (case-insensitive);
    files named explicitly are kept whatever their extension. A path that does not exist
    raises ``FileNotFoundError`` naming it.
    """
    found: List[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            pattern = "**/*" if recursive else "*"
            found.extend(
                q for q in sorted(p.glob(pattern)) if q.is_file() and q.suffix.lower() in IMAGE_EXTENSIONS
            )
        elif p.is_file():
            found.append(p)
        else:
            raise FileNotFoundError(f"no such file or folder: {p}")
    seen, out = set(), []
    for q in found:
        if q not in seen:
            seen.add(q)
            out.append(q)
    return out


def read_image(path: PathLike, *, max_side: Optional[int] = None) -> torch.Tensor:
    """Decode an image file to a ``(3, H, W)`` float32 RGB tensor in [0, 1].

    Grey, palette and RGBA images are converted to RGB (alpha dropped). 16-bit PNGs
    keep their precision. An EXIF orientation tag (cameras and phones store portrait
    shots sideways with such a tag) is applied, so the tensor is upright as viewers
    show it. With ``max_side`` the image is downscaled (area filter) so its longer side
    is at most that many pixels. Raises ``OSError``/``ValueError`` for
    unreadable files.
    """
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        im.load()
        im = ImageOps.exif_transpose(im)
        size = im.size
        if max_side is not None and max(size) > max_side:
            scale = max_side / max(size)
            size = (max(1, round(size[0] * scale)), max(1, round(size[1] * scale)))
        if im.mode in ("I;16", "I;16B", "I;16L", "I"):
            arr = np.asarray(im, dtype=np.float32) / (65535.0 if im.mode.startswith("I;16") else 255.0)
            grey = Image.fromarray(np.clip(arr, 0, 1))  # mode "F": resized in float, precision kept
            if size != grey.size:
                grey = grey.resize(size, Image.BOX)
            arr = np.repeat(np.asarray(grey, dtype=np.float32)[..., None], 3, axis=-1)
            t = torch.from_numpy(arr).permute(2, 0, 1).contiguous()
        else:
            im = im.convert("RGB")
            if size != im.size:
                im = im.resize(size, Image.BOX)
            t = torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1).float().div_(255)
    return t


def save_image(image: torch.Tensor, path: PathLike, *, quality: Optional[int] = None) -> None:
    """Write a ``(3, H, W)`` float image in [0, 1] as an 8-bit file (format from the suffix), atomically.

    ``quality`` (1-100) is passed to lossy encoders (JPEG, WebP); None keeps Pillow's
    default (75). Lossless formats ignore it."""
    from PIL import Image

    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"expected a (3, H, W) image, got shape {tuple(image.shape)}")
    arr = (image.detach().float().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
    path = Path(path)
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"unknown image file extension {path.suffix!r} for {path}")
    options = {"quality": int(quality)} if quality is not None and fmt in ("JPEG", "WEBP") else {}
    with atomic_write(path) as f:
        Image.fromarray(arr).save(f, format=fmt, **options)


class ImageFiles(torch.utils.data.Dataset):
    """A dataset over image files that reports decode failures instead of raising.

    Item ``i`` is ``(image or None, str(path), error message or "")`` where ``image`` is
    ``(3, H, W)`` float in [0, 1] from :func:`read_image`. Use :meth:`collate` as the
    DataLoader's ``collate_fn`` (it keeps failures as ``None`` entries).
    """

    def __init__(self, files: Sequence[PathLike], *, max_side: Optional[int] = None) -> None:
        self.files = [Path(f) for f in files]
        self.max_side = max_side

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Tuple[Optional[torch.Tensor], str, str]:
        path = self.files[index]
        try:
            return read_image(path, max_side=self.max_side), str(path), ""
        except Exception as exc:  # any decoder failure is reported per file, never fatal
            return None, str(path), f"{type(exc).__name__}: {exc}"

    @staticmethod
    def collate(batch):
        return list(batch)
