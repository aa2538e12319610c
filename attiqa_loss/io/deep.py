"""High-bit-depth decoding: the readers that keep the precision of 16-bit PNG (torchvision's
decoder, else a numpy one), 16-bit PGM/PPM, deep colour TIFF (with ``tifffile``) and float
images, which Pillow's 8-bit conversion would lose. :func:`_deep_image` picks the reader
for an opened Pillow image and returns float planes (a :class:`DecodedImage`), or None
when the 8-bit conversion loses nothing."""

from __future__ import annotations

from typing import List, Optional, Tuple

import numpy as np
import torch

from .atomic import PathLike
from .decoded import DecodedImage


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
