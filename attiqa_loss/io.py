"""File helpers shared by the commands: atomic writes, image discovery (:func:`scan_images`)
and decoding (:func:`decode_image`, :func:`read_image`): one lister and one reader for
every command and dataset."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import tempfile
import threading
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Set, Tuple, Union

import numpy as np
import torch

__all__ = [
    "IMAGE_EXTENSIONS",
    "atomic_write",
    "atomic_path",
    "orphan_temp_files",
    "MAX_PIXELS",
    "ImageListing",
    "ImageTooLarge",
    "DecodedImage",
    "scan_images",
    "list_images",
    "decode_image",
    "read_image",
    "read_image_with_size",
    "save_image",
    "ImageFiles",
]

PathLike = Union[str, os.PathLike]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pnm", ".gif")
#: Largest image decoded, in pixels: Pillow's own refusal threshold (2 x its
#: ``Image.MAX_IMAGE_PIXELS``), about 179 megapixels. Larger files raise
#: :class:`ImageTooLarge` naming the file (a guard against decompression bombs).
MAX_PIXELS = 2 * 89_478_485


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


@dataclass
class ImageListing:
    """What :func:`scan_images` found: the image files, and every other entry it met with
    the reason it was left out.

    Attributes:
        files: image files, sorted per argument as before, de-duplicated.
        skipped: ``(path, reason)`` for each entry that is not listed: a file whose name
            has no image extension, a dangling symlink, a symlink loop, a second path to a
            file already listed, a folder that cannot be read, ...
    """

    files: List[Path] = field(default_factory=list)
    skipped: List[Tuple[Path, str]] = field(default_factory=list)

    def summary(self, limit: int = 3) -> str:
        """One line: how many entries were skipped, by reason ("" if none). Reasons that
        point at a problem (a dangling symlink, an unreadable folder, a bad image) name a
        few of the files; files that are simply not images are only counted, by extension."""
        if not self.skipped:
            return ""
        by_reason: Dict[str, List[Path]] = {}
        for path, reason in self.skipped:
            by_reason.setdefault(reason, []).append(path)
        parts = []
        for reason, paths in sorted(by_reason.items(), key=lambda kv: (-len(kv[1]), kv[0])):
            if reason.startswith(_QUIET_REASONS):
                parts.append(f"{len(paths)} {reason}")
            else:
                shown = ", ".join(str(q) for q in paths[:limit]) + (", ..." if len(paths) > limit else "")
                parts.append(f"{len(paths)} {reason}: {shown}")
        return f"{len(self.skipped)} file(s) skipped: " + "; ".join(parts)


    def lines(self, indent: str = "  ") -> List[str]:
        """``"<indent><path>: <reason>"`` for every skipped entry whose reason points at a
        problem (files that are simply not images are left out)."""
        return [f"{indent}{path}: {reason}" for path, reason in self.skipped if not reason.startswith(_QUIET_REASONS)]


#: Skip reasons that are counted but whose files are not named in a summary.
_QUIET_REASONS = ("not an image file name", "temporary file of an interrupted write", "sub-folder (not searched)")


def _skip_reason_for_name(path: Path) -> Optional[str]:
    suffix = path.suffix.lower()
    if suffix in IMAGE_EXTENSIONS:
        return None
    if suffix == ".tmp" and _TEMP.match(path.name):
        return "temporary file of an interrupted write"
    return f"not an image file name ({suffix or 'no extension'})"


def scan_images(paths: Iterable[PathLike], *, recursive: bool = True, follow_symlinks: bool = True) -> ImageListing:
    """Expand files and folders into image files, and say what was left out and why.

    Folders are searched (recursively unless ``recursive=False``) for
    :data:`IMAGE_EXTENSIONS` (case-insensitive); files named explicitly are kept whatever
    their extension. With ``follow_symlinks`` (the default) a symlink to a file or a
    folder counts as that file or folder, everywhere; without it every symlink met inside
    a folder is skipped. A folder reached twice through symlinks (a loop) is searched
    once; a file reached under a second path is listed once, under the first. Dangling
    symlinks, unreadable folders and other non-image entries are listed in
    :attr:`ImageListing.skipped` with the reason. Each argument's files are sorted by path
    (the order :func:`list_images` always had). A path that does not exist raises
    ``FileNotFoundError`` naming it.
    """
    listing = ImageListing()
    seen_files: Dict[Tuple[int, int], Path] = {}
    seen_paths: Set[Path] = set()

    def add(q: Path) -> None:
        if q in seen_paths:
            return
        try:
            st = q.stat()
            key = (st.st_dev, st.st_ino)
        except OSError:
            key = None
        if key is not None and key in seen_files:
            listing.skipped.append((q, f"same file as {seen_files[key]}"))
            return
        if key is not None:
            seen_files[key] = q
        seen_paths.add(q)
        listing.files.append(q)

    for p in paths:
        p = Path(p)
        if p.is_dir():
            found: List[Path] = []
            visited: Set[Tuple[int, int]] = set()

            def walk(folder: Path, depth: int) -> None:
                try:
                    st = folder.stat()
                    entries = sorted(os.scandir(folder), key=lambda e: e.name)
                except OSError as exc:
                    listing.skipped.append((folder, f"folder that cannot be read ({type(exc).__name__})"))
                    return
                if (st.st_dev, st.st_ino) in visited:
                    listing.skipped.append((folder, "folder already searched (reached again through a symlink)"))
                    return
                visited.add((st.st_dev, st.st_ino))
                for entry in entries:
                    q = folder / entry.name
                    try:
                        link = entry.is_symlink()
                        if link and not follow_symlinks:
                            listing.skipped.append((q, "symlink (not followed)"))
                            continue
                        if link and not os.path.exists(q):
                            listing.skipped.append((q, "dangling symlink"))
                            continue
                        is_dir, is_file = entry.is_dir(), entry.is_file()
                    except OSError as exc:
                        listing.skipped.append((q, f"entry that cannot be read ({type(exc).__name__})"))
                        continue
                    if is_dir:
                        if recursive:
                            walk(q, depth + 1)
                        else:
                            listing.skipped.append((q, "sub-folder (not searched)"))
                    elif not is_file:
                        listing.skipped.append((q, "not a regular file"))
                    else:
                        reason = _skip_reason_for_name(q)
                        if reason is None:
                            found.append(q)
                        else:
                            listing.skipped.append((q, reason))

            walk(p, 0)
            for q in sorted(found):
                add(q)
        elif p.is_file():
            add(p)
        elif p.is_symlink():
            raise FileNotFoundError(f"no such file or folder: {p} (a symlink to {os.readlink(p)}, which does not exist)")
        else:
            raise FileNotFoundError(f"no such file or folder: {p}")
    return listing


def list_images(paths: Iterable[PathLike], *, recursive: bool = True, follow_symlinks: bool = True) -> List[Path]:
    """Expand files and folders into a sorted, de-duplicated list of image files
    (:func:`scan_images` without the list of what was skipped).

    Folders are searched recursively for :data:`IMAGE_EXTENSIONS` (case-insensitive);
    files named explicitly are kept whatever their extension. A path that does not exist
    raises ``FileNotFoundError`` naming it.
    """
    return scan_images(paths, recursive=recursive, follow_symlinks=follow_symlinks).files


class ImageTooLarge(ValueError):
    """An image has more pixels than :data:`MAX_PIXELS` (or the ``max_pixels`` given):
    decoding it could exhaust memory (a "decompression bomb")."""


_ORIENTATION = 0x0112
#: EXIF orientation -> the transposition that makes the image upright (as ImageOps.exif_transpose).
_TRANSPOSE = {2: "FLIP_LEFT_RIGHT", 3: "ROTATE_180", 4: "FLIP_TOP_BOTTOM", 5: "TRANSPOSE",
              6: "ROTATE_270", 7: "TRANSVERSE", 8: "ROTATE_90"}


class DecodedImage:
    """An upright RGB image as :func:`decode_image` returns it.

    8-bit sources are one Pillow ``"RGB"`` image (:attr:`rgb`); deeper ones (16-bit PNG,
    TIFF, PGM/PPM, float TIFF) three Pillow ``"F"`` planes holding floats in [0, 1]
    (:attr:`planes`), so their precision survives resizing. :meth:`resize` and
    :meth:`crop` work on either; :meth:`to_tensor` gives float32 ``(3, H, W)`` in
    [0, 1], :meth:`to_uint8` ``(3, H, W)`` uint8.
    """

    def __init__(self, rgb=None, planes=None, bits: int = 8) -> None:
        self.rgb, self.planes, self.bits = rgb, planes, bits

    @property
    def size(self) -> Tuple[int, int]:
        """``(width, height)``."""
        return (self.rgb if self.rgb is not None else self.planes[0]).size

    def _map(self, fn) -> "DecodedImage":
        if self.rgb is not None:
            return DecodedImage(rgb=fn(self.rgb), bits=self.bits)
        done: Dict[int, object] = {}  # a grey image's three planes are one object: resize it once
        planes = []
        for plane in self.planes:
            if id(plane) not in done:
                done[id(plane)] = fn(plane)
            planes.append(done[id(plane)])
        return DecodedImage(planes=planes, bits=self.bits)

    def resize(self, size: Tuple[int, int], resample) -> "DecodedImage":
        return self._map(lambda im: im.resize(size, resample))

    def crop(self, box: Tuple[int, int, int, int]) -> "DecodedImage":
        return self._map(lambda im: im.crop(box))

    def transpose(self, method) -> "DecodedImage":
        return self._map(lambda im: im.transpose(method))

    def _float_planes(self) -> np.ndarray:
        arrays: Dict[int, np.ndarray] = {}
        for plane in self.planes:
            if id(plane) not in arrays:
                arrays[id(plane)] = np.clip(np.asarray(plane, dtype=np.float32), 0, 1)
        return np.stack([arrays[id(plane)] for plane in self.planes])

    def to_tensor(self) -> torch.Tensor:
        """``(3, H, W)`` float32 in [0, 1]."""
        if self.rgb is not None:
            return torch.from_numpy(np.asarray(self.rgb, dtype=np.uint8).copy()).permute(2, 0, 1).float().div_(255)
        return torch.from_numpy(self._float_planes()).contiguous()

    def to_uint8(self) -> torch.Tensor:
        """``(3, H, W)`` uint8 (deep images rounded to the nearest 8-bit value)."""
        if self.rgb is not None:
            return torch.from_numpy(np.asarray(self.rgb, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()
        return torch.from_numpy(np.round(self._float_planes() * 255).astype(np.uint8)).contiguous()


def _planes_from_array(arr: np.ndarray, bits: int) -> DecodedImage:
    """``(H, W)`` or ``(H, W, C)`` floats in [0, 1] -> three "F" planes (grey: one plane
    three times; an alpha channel is dropped, as Pillow's RGB conversion does)."""
    from PIL import Image

    arr = np.asarray(arr, dtype=np.float32)
    if arr.ndim == 3 and arr.shape[2] in (1, 2):  # grey (+ alpha)
        arr = arr[..., 0]
    if arr.ndim == 2:
        plane = Image.fromarray(np.ascontiguousarray(arr), mode="F")
        return DecodedImage(planes=[plane, plane, plane], bits=bits)
    if arr.ndim != 3 or arr.shape[2] < 3:
        raise ValueError(f"unsupported image layout {arr.shape}")
    return DecodedImage(planes=[Image.fromarray(np.ascontiguousarray(arr[..., c]), mode="F") for c in range(3)],
                        bits=bits)


def _decode_png16_numpy(data: bytes) -> np.ndarray:
    """A non-interlaced 16-bit PNG as ``(H, W, C)`` uint16: the fallback for when
    torchvision's PNG decoder is not available (it is deprecated there)."""
    import struct
    import zlib as _zlib

    pos, idat, header = 8, [], None
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
        pos += 12 + length
    if header is None:
        raise ValueError("not a PNG file (no IHDR chunk)")
    w, h, depth, colour, _, _, interlace = header
    channels = {0: 1, 2: 3, 4: 2, 6: 4}.get(colour)
    if depth != 16 or channels is None:
        raise ValueError(f"not a 16-bit grey/RGB PNG (bit depth {depth}, colour type {colour})")
    if interlace:
        raise ValueError("interlaced 16-bit PNG files need torchvision's PNG decoder")
    bpp, stride = 2 * channels, 2 * channels * w
    raw = np.frombuffer(_zlib.decompress(b"".join(idat)), dtype=np.uint8)
    if raw.size < h * (stride + 1):
        raise OSError(f"image file is truncated ({raw.size} of {h * (stride + 1)} bytes)")
    rows = raw[: h * (stride + 1)].reshape(h, stride + 1)
    out = np.zeros((h, stride), dtype=np.uint8)
    prev = np.zeros(stride, dtype=np.int32)
    for y in range(h):
        kind, line = rows[y, 0], rows[y, 1:].astype(np.int32)
        if kind == 0:
            cur = line
        elif kind == 1:  # Sub: a running sum along the row, per byte of a pixel
            cur = np.cumsum(line.reshape(w, bpp), axis=0).reshape(-1) & 0xFF
        elif kind == 2:  # Up
            cur = (line + prev) & 0xFF
        elif kind in (3, 4):  # Average / Paeth: each pixel needs the one left of it
            cur = np.zeros(stride, dtype=np.int32)
            left = np.zeros(bpp, dtype=np.int32)
            upleft = np.zeros(bpp, dtype=np.int32)
            for x in range(w):
                sl = slice(x * bpp, (x + 1) * bpp)
                up = prev[sl]
                if kind == 3:
                    pred = (left + up) >> 1
                else:
                    pa, pb, pc = np.abs(up - upleft), np.abs(left - upleft), np.abs(left + up - 2 * upleft)
                    pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, upleft))
                cur[sl] = (line[sl] + pred) & 0xFF
                left, upleft = cur[sl], up
        else:
            raise ValueError(f"bad PNG filter type {kind} in row {y}")
        out[y] = cur
        prev = cur
    return out.view(">u2").reshape(h, w, channels).astype(np.uint16)


def _decode_png16(path: PathLike) -> np.ndarray:
    """A 16-bit PNG as ``(H, W, C)`` uint16: torchvision's decoder, else :func:`_decode_png16_numpy`."""
    import warnings

    with open(path, "rb") as f:
        data = f.read()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torchvision's image I/O is deprecated
        try:
            from torchvision.io import ImageReadMode, decode_png
        except ImportError:
            return _decode_png16_numpy(data)
        t = decode_png(torch.frombuffer(bytearray(data), dtype=torch.uint8), ImageReadMode.UNCHANGED)
    return t.to(torch.int32).permute(1, 2, 0).numpy().astype(np.uint16)


def _png_bit_depth(path: PathLike) -> int:
    with open(path, "rb") as f:
        head = f.read(26)
    return head[24] if len(head) >= 26 and head[12:16] == b"IHDR" else 8


def _netpbm_header(path: PathLike) -> Tuple[str, int, int]:
    """Magic number, maxval (1 for PBM) and pixel data offset of a PBM/PGM/PPM file."""
    with open(path, "rb") as f:
        head = f.read(1024)
    tokens: List[bytes] = []
    i = 0
    wanted = 4
    while len(tokens) < wanted and i < len(head):
        c = head[i : i + 1]
        if c == b"#":
            while i < len(head) and head[i : i + 1] not in (b"\n", b"\r"):
                i += 1
        elif c.isspace():
            i += 1
        else:
            j = i
            while j < len(head) and not head[j : j + 1].isspace() and head[j : j + 1] != b"#":
                j += 1
            tokens.append(head[i:j])
            i = j
            if tokens[0] in (b"P1", b"P4"):
                wanted = 3
    if len(tokens) < wanted:
        raise ValueError(f"{path}: cannot read the PGM/PPM header")
    maxval = 1 if wanted == 3 else int(tokens[3])
    return tokens[0].decode(), maxval, i + 1  # one whitespace byte ends the header


def _deep_image(im, path: PathLike) -> Optional[DecodedImage]:
    """The high-bit-depth decode of ``im`` (an opened Pillow image), or None when Pillow's
    own 8-bit conversion loses nothing."""
    fmt, mode = im.format, im.mode
    if fmt == "PNG" and _png_bit_depth(path) == 16:
        return _planes_from_array(_decode_png16(path).astype(np.float32) / 65535.0, 16)
    if fmt == "PPM":
        magic, maxval, offset = _netpbm_header(path)
        if maxval > 255 and magic in ("P5", "P6"):
            channels = 3 if magic == "P6" else 1
            w, h = im.size
            count = w * h * channels
            with open(path, "rb") as f:
                f.seek(offset)
                raw = np.frombuffer(f.read(count * 2), dtype=">u2")
            if raw.size != count:
                raise OSError(f"image file is truncated ({raw.size} of {count} samples)")
            arr = raw.astype(np.float32).reshape(h, w, channels) / float(maxval)
            return _planes_from_array(arr, 16)
        if mode == "I":  # Pillow keeps deep plain-text PGMs as raw integers
            return _planes_from_array(np.asarray(im, dtype=np.float32) / float(maxval), 16)
    if fmt == "TIFF" and mode in ("RGB", "RGBA", "RGBX", "CMYK"):
        bits = im.tag_v2.get(258) if hasattr(im, "tag_v2") else None
        bits = bits if isinstance(bits, tuple) else (bits,) if bits else ()
        if any(b and b > 8 for b in bits):
            try:
                import tifffile
            except ImportError:  # no reader for deep colour TIFF: Pillow's 8-bit conversion (documented)
                return None
            arr = np.asarray(tifffile.imread(path, key=0))
            if np.issubdtype(arr.dtype, np.integer):
                arr = arr.astype(np.float32) / float(np.iinfo(arr.dtype).max)
            else:
                arr = np.nan_to_num(arr.astype(np.float32), nan=0.0, posinf=1.0, neginf=0.0)
            if mode == "CMYK":
                raise ValueError(f"{path}: {max(bits)}-bit CMYK TIFF files are not supported; convert to RGB")
            return _planes_from_array(arr, 16)
    if mode.startswith("I;16"):
        return _planes_from_array(np.asarray(im, dtype=np.float32) / 65535.0, 16)
    if mode == "I":
        if fmt == "PNG":
            return _planes_from_array(np.asarray(im, dtype=np.float32) / 65535.0, 16)
        raise ValueError(f"{path}: 32-bit integer {fmt} images are not supported; convert to 8 or 16 bits")
    if mode == "F":
        arr = np.nan_to_num(np.asarray(im, dtype=np.float32), nan=0.0, posinf=1.0, neginf=0.0)
        return _planes_from_array(arr, 32)
    return None


def decode_image(
    path: PathLike,
    *,
    max_pixels: Optional[int] = None,
    draft: Optional[Tuple[int, int]] = None,
) -> DecodedImage:
    """Decode an image file: the reader behind every command and dataset.

    - EXIF orientation (portrait shots stored sideways) is applied, so the result is
      upright as viewers show it.
    - 16-bit PNG (grey, grey + alpha, RGB, RGBA), 16-bit PGM/PPM, 16-bit TIFF (grey;
      colour with ``tifffile`` installed) and float TIFF keep their precision (float planes).
    - Greyscale, palette, alpha, CMYK, YCbCr and 1-bit images become RGB as Pillow's
      ``convert("RGB")`` makes them (alpha is dropped, not composited).
    - An image of more than ``max_pixels`` pixels (default :data:`MAX_PIXELS`, Pillow's
      own refusal threshold) raises :class:`ImageTooLarge` naming the file and its size,
      before any pixel is decoded.
    - ``draft=(width, height)``: a JPEG may be decoded at a reduced DCT scale (never below
      that size) - much faster for previews (the CLIP labeller uses it).

    Raises ``OSError``/``ValueError`` (Pillow's, or :class:`ImageTooLarge`) for files
    that cannot be decoded.
    """
    import warnings

    from PIL import Image

    limit = MAX_PIXELS if max_pixels is None else int(max_pixels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            im = Image.open(path)
        except Image.DecompressionBombError as exc:
            raise ImageTooLarge(f"{path}: {exc} (refused as a possible decompression bomb)") from None
    with im:
        w, h = im.size
        if w * h > limit:
            raise ImageTooLarge(
                f"{path}: {w}x{h} = {w * h / 1e6:.1f} megapixels is more than the {limit / 1e6:.1f} megapixels "
                "an image may have (a guard against decompression bombs); downscale the file first"
            )
        orientation = None
        if draft is not None and im.format == "JPEG":
            with contextlib.suppress(Exception):
                orientation = im.getexif().get(_ORIENTATION)
            dw, dh = draft
            if orientation in (5, 6, 7, 8):  # stored sideways: the draft size too
                dw, dh = dh, dw
            im.draft("RGB", (dw, dh))
        im.load()
        deep = _deep_image(im, path)
        if orientation is None:
            with contextlib.suppress(Exception):
                orientation = im.getexif().get(_ORIENTATION)
        if deep is not None:
            method = _TRANSPOSE.get(orientation)
            return deep if method is None else deep.transpose(getattr(Image.Transpose, method))
        from PIL import ImageOps

        upright = ImageOps.exif_transpose(im)
        return DecodedImage(rgb=upright.convert("RGB"), bits=8)


def read_image(path: PathLike, *, max_side: Optional[int] = None, max_pixels: Optional[int] = None) -> torch.Tensor:
    """Decode an image file to a ``(3, H, W)`` float32 RGB tensor in [0, 1].

    :func:`decode_image` does the decoding: EXIF orientation applied; 16-bit PNG, PGM/PPM
    and TIFF keep their precision; grey, palette, alpha and CMYK images become RGB (alpha
    dropped); more than ``max_pixels`` (default :data:`MAX_PIXELS`) is an
    :class:`ImageTooLarge` error. With ``max_side`` the image is downscaled (area filter,
    in float for deep images) so its longer side is at most that many pixels. Raises
    ``OSError``/``ValueError`` for unreadable files.
    """
    return read_image_with_size(path, max_side=max_side, max_pixels=max_pixels)[0]


def read_image_with_size(path: PathLike, *, max_side: Optional[int] = None,
                         max_pixels: Optional[int] = None) -> Tuple[torch.Tensor, Tuple[int, int]]:
    """:func:`read_image`, plus the file's own ``(width, height)`` (upright), so that a
    caller can say when ``max_side`` downscaled it."""
    from PIL import Image

    image = decode_image(path, max_pixels=max_pixels)
    original = size = image.size
    if max_side is not None and max(size) > max_side:
        scale = max_side / max(size)
        size = (max(1, round(size[0] * scale)), max(1, round(size[1] * scale)))
    if size != image.size:
        image = image.resize(size, Image.BOX)
    return image.to_tensor(), original


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
    ``(3, H, W)`` float in [0, 1] from :func:`read_image`; with ``report_size=True`` a
    fourth element is the file's own ``(width, height)`` (None on failure), to tell
    which images ``max_side`` downscaled. Use :meth:`collate` as the DataLoader's
    ``collate_fn`` (it keeps failures as ``None`` entries). Decoding failures, memory
    errors included, are reported per file, never raised.
    """

    def __init__(self, files: Sequence[PathLike], *, max_side: Optional[int] = None,
                 report_size: bool = False) -> None:
        self.files = [Path(f) for f in files]
        self.max_side = max_side
        self.report_size = report_size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple:
        path = self.files[index]
        try:
            image, size = read_image_with_size(path, max_side=self.max_side)
            item: tuple = (image, str(path), "", size)
        except Exception as exc:  # any decoder failure is reported per file, never fatal
            item = (None, str(path), f"{type(exc).__name__}: {exc}", None)
        return item if self.report_size else item[:3]

    @staticmethod
    def collate(batch):
        return list(batch)
