"""The decoded image: :class:`DecodedImage`, an upright RGB image as
:func:`~attiqa_loss.io.decode_image` returns it (one 8-bit Pillow image, or three float
planes for deeper sources), with resizing, cropping and conversion to tensors."""

from __future__ import annotations

from typing import Dict, Tuple

import numpy as np
import torch


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
