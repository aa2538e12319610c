"""Reading and writing image files: :func:`decode_image` (the one reader behind every
command and dataset: EXIF orientation, deep formats, the :data:`MAX_PIXELS` guard against
decompression bombs), :func:`read_image` and :func:`read_image_with_size` (float
tensors, optionally downscaled), :func:`save_image` (atomic; 8-bit, or 16-bit where
asked and the format holds it) and
:class:`ImageFiles`, a dataset that reports decoding failures instead of raising."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Optional, Sequence, Tuple

import torch

from .atomic import PathLike, atomic_write
from .decoded import DecodedImage
from .deep import _deep_image

#: Largest image decoded, in pixels: Pillow's own refusal threshold (2 x its
#: ``Image.MAX_IMAGE_PIXELS``), about 179 megapixels. Larger files raise
#: :class:`ImageTooLarge` naming the file (a guard against decompression bombs).
MAX_PIXELS = 2 * 89_478_485


class ImageTooLarge(ValueError):
    """An image has more pixels than :data:`MAX_PIXELS` (or the ``max_pixels`` given):
    decoding it could exhaust memory (a "decompression bomb")."""


_ORIENTATION = 0x0112
#: EXIF orientation -> the transposition that makes the image upright (as ImageOps.exif_transpose).
_TRANSPOSE = {2: "FLIP_LEFT_RIGHT", 3: "ROTATE_180", 4: "FLIP_TOP_BOTTOM", 5: "TRANSPOSE",
              6: "ROTATE_270", 7: "TRANSVERSE", 8: "ROTATE_90"}


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
    image, original, _ = read_image_with_info(path, max_side=max_side, max_pixels=max_pixels)
    return image, original


def read_image_with_info(path: PathLike, *, max_side: Optional[int] = None,
                         max_pixels: Optional[int] = None) -> Tuple[torch.Tensor, Tuple[int, int], int]:
    """:func:`read_image_with_size`, plus the file's bits per sample (8; 16 for 16-bit
    PNG, PGM/PPM and TIFF; 32 for float TIFF), so that a copy can be written as deep
    (:func:`save_image`'s ``bits``)."""
    from PIL import Image

    image = decode_image(path, max_pixels=max_pixels)
    original = size = image.size
    if max_side is not None and max(size) > max_side:
        scale = max_side / max(size)
        size = (max(1, round(size[0] * scale)), max(1, round(size[1] * scale)))
    if size != image.size:
        image = image.resize(size, Image.BOX)
    return image.to_tensor(), original, image.bits


def save_image(image: torch.Tensor, path: PathLike, *, quality: Optional[int] = None, bits: int = 8) -> None:
    """Write a ``(3, H, W)`` float image in [0, 1] as a file (format from the suffix), atomically.

    ``quality`` (1-100) is passed to lossy encoders (JPEG, WebP); None keeps Pillow's
    default (75). Lossless formats ignore it. ``bits``: 8 (default); 16 writes 16 bits
    per sample where the format holds them (PNG, PPM, TIFF with ``tifffile``), 32 a
    float32 TIFF (with ``tifffile``); other formats are written with 8 bits
    (:func:`attiqa_loss.io.deep_write.deep_bits`)."""
    from PIL import Image

    from .deep_write import deep_bits, write_deep

    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"expected a (3, H, W) image, got shape {tuple(image.shape)}")
    path = Path(path)
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"unknown image file extension {path.suffix!r} for {path}")
    depth = deep_bits(fmt, bits)
    if depth > 8:
        planes = image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()
        with atomic_write(path) as f:
            write_deep(planes, f, fmt, depth)
        return
    arr = (image.detach().float().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
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
