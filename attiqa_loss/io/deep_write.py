"""High-bit-depth writing, the counterpart of :mod:`attiqa_loss.io.deep`: 16-bit RGB PNG
(a small encoder of its own: Pillow writes 16-bit PNGs only for grey images), 16-bit
PPM, 16-bit and float32 TIFF (with ``tifffile``). :func:`deep_bits` says which depth a
format can hold; :func:`write_deep` writes it."""

from __future__ import annotations

import struct
import zlib
from typing import BinaryIO

import numpy as np

__all__ = ["deep_bits", "write_deep"]


def _tifffile():
    try:
        import tifffile
    except ImportError:
        return None
    return tifffile


def deep_bits(fmt: str, bits: int) -> int:
    """The bits per sample a file of Pillow format name ``fmt`` gets when ``bits`` are
    asked for: 16 for PNG and PPM, 16 or 32 (float) for TIFF with ``tifffile`` installed,
    else 8 (JPEG, WebP, BMP, ... hold 8 bits)."""
    if bits <= 8:
        return 8
    if fmt in ("PNG", "PPM"):
        return 16
    if fmt == "TIFF" and _tifffile() is not None:
        return 32 if bits >= 32 else 16
    return 8


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def encode_png16(arr: np.ndarray) -> bytes:
    """``(H, W, 3)`` uint16 -> the bytes of a 16-bit RGB PNG (each row "Up"-filtered)."""
    h, w, c = arr.shape
    rows = np.ascontiguousarray(arr.astype(">u2")).view(np.uint8).reshape(h, w * c * 2)
    up = rows.copy()
    up[1:] -= rows[:-1]  # uint8 arithmetic wraps modulo 256, as the filter is defined
    raw = np.concatenate([np.full((h, 1), 2, dtype=np.uint8), up], axis=1)
    header = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)  # 16 bits, truecolour, no interlace
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
            + _png_chunk(b"IDAT", zlib.compress(raw.tobytes(), 6)) + _png_chunk(b"IEND", b""))


def _tiff_bytes(arr: np.ndarray) -> bytes:
    # tifffile wants a named file or a BytesIO, not the descriptor-backed file of an atomic write
    import io

    buf = io.BytesIO()
    _tifffile().imwrite(buf, arr, photometric="rgb")
    return buf.getvalue()


def write_deep(planes: np.ndarray, f: BinaryIO, fmt: str, bits: int) -> None:
    """Write ``planes`` (``(H, W, 3)`` float in [0, 1]) to the open file ``f`` as format
    ``fmt`` with ``bits`` per sample, as :func:`deep_bits` returned them (16 or 32)."""
    planes = np.clip(np.nan_to_num(planes, nan=0.0), 0.0, 1.0)
    if bits >= 32:
        f.write(_tiff_bytes(planes.astype(np.float32)))
        return
    arr = np.round(planes * 65535.0).astype(np.uint16)
    if fmt == "PNG":
        f.write(encode_png16(arr))
    elif fmt == "PPM":
        h, w, _ = arr.shape
        f.write(f"P6\n{w} {h}\n65535\n".encode("ascii") + np.ascontiguousarray(arr.astype(">u2")).tobytes())
    elif fmt == "TIFF":
        f.write(_tiff_bytes(arr))
    else:
        raise ValueError(f"no {bits}-bit writer for {fmt} files")
