"""File helpers shared by the commands: atomic writes, image discovery (:func:`scan_images`)
and decoding (:func:`decode_image`, :func:`read_image`): one lister and one reader for
every command and dataset.

The package re-exports its submodules' API, so ``from attiqa_loss.io import X`` is the
import to use: :mod:`~attiqa_loss.io.atomic` (atomic writes, temporary-file names,
orphans), :mod:`~attiqa_loss.io.listing` (:func:`scan_images`, :func:`list_images`),
:mod:`~attiqa_loss.io.decoded` (:class:`DecodedImage`), :mod:`~attiqa_loss.io.deep`
(16-bit and float formats; :mod:`~attiqa_loss.io.deep_write` writes them) and
:mod:`~attiqa_loss.io.images` (decoding, reading, saving,
:class:`ImageFiles`).
"""

from __future__ import annotations

import tempfile  # noqa: F401  (``attiqa_loss.io.tempfile``: the module whose mkstemp names the temporary files)

from .atomic import _HOST, PathLike, _pid_alive, atomic_path, atomic_write, orphan_temp_files  # noqa: F401
from .decoded import DecodedImage
from .deep import _decode_png16_numpy  # noqa: F401
from .images import (MAX_PIXELS, ImageFiles, ImageTooLarge, decode_image, read_image, read_image_with_info,
                     read_image_with_size, save_image)
from .listing import IMAGE_EXTENSIONS, ImageListing, list_images, scan_images

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
    "read_image_with_info",
    "save_image",
    "ImageFiles",
]
