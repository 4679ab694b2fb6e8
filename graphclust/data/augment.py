"""Data augmentations for rows of a feature matrix (VCAMI's second view ``x'``), in torch.

- :class:`VectorAugment`: for any feature vectors (tf-idf, embeddings, tabular data):
  masking noise (each value zeroed with probability ``mask``) plus Gaussian noise scaled to
  each row's root mean square, so it means the same for pixels and for tf-idf rows.
- :class:`ImageAugment`: for images stored as flat rows with a known shape
  (``LoadedData.image_shape``): a random shift of up to ``max_shift`` pixels and a rotation
  of up to ``max_rotation`` degrees per image (one ``affine_grid`` + ``grid_sample`` for the
  whole batch), then optional masking/noise.
- :func:`default_augmenter` picks one from the image shape.

An augmenter is a callable ``(x, generator) -> x'`` on a batch ``x`` of shape
``(n, n_features)``; randomness comes only from the given :class:`torch.Generator` (on
``x``'s device).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from graphclust.utils import GraphclustError

__all__ = ["ImageAugment", "VectorAugment", "default_augmenter"]


def _check_rate(value: float, name: str) -> float:
    value = float(value)
    if not 0.0 <= value < 1.0:
        raise GraphclustError(f"{name} must lie in [0, 1), got {value}")
    return value


def _mask_and_noise(x: Tensor, mask: float, noise: float, generator: torch.Generator | None) -> Tensor:
    if mask > 0:
        keep = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) >= mask
        x = x * keep
    if noise > 0:
        rms = x.pow(2).mean(-1, keepdim=True).sqrt()
        x = x + noise * rms * torch.randn(x.shape, generator=generator, device=x.device,
                                          dtype=x.dtype)
    return x


class VectorAugment:
    """Masking plus row-scaled Gaussian noise.

    ``x'_d = keep_d * x_d + noise * rms(x) * eps_d`` with ``keep_d ~ Bernoulli(1 - mask)``,
    ``eps_d ~ N(0, 1)`` and ``rms(x) = sqrt(mean_d x_d^2)`` of the (masked) row.

    Parameters
    ----------
    mask : float
        Probability of zeroing each value, in ``[0, 1)``.
    noise : float
        Noise standard deviation relative to the row's root mean square, ``>= 0``.
    """

    def __init__(self, mask: float = 0.1, noise: float = 0.1) -> None:
        self.mask = _check_rate(mask, "mask")
        if not float(noise) >= 0:
            raise GraphclustError(f"noise must be >= 0, got {noise}")
        self.noise = float(noise)

    def __repr__(self) -> str:
        return f"VectorAugment(mask={self.mask}, noise={self.noise})"

    def check(self, n_features: int) -> None:
        """Any number of features will do."""

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``x`` (n, n_features) -> an augmented copy of the same shape."""
        return _mask_and_noise(x, self.mask, self.noise, generator)


class ImageAugment:
    """Random small shifts and rotations of flat images, then optional masking/noise.

    Parameters
    ----------
    image_shape : sequence of int
        ``(height, width)`` or ``(channels, height, width)`` of one image; the row holds
        the pixels in C order.
    max_shift : float
        Largest shift in pixels along each axis (uniform in ``[-max_shift, max_shift]``).
    max_rotation : float
        Largest rotation in degrees (uniform in ``[-max_rotation, max_rotation]``).
    mask, noise : float
        As in :class:`VectorAugment`, applied after the geometric transform.
    """

    def __init__(
        self, image_shape: Sequence[int], max_shift: float = 2.0, max_rotation: float = 10.0,
        mask: float = 0.0, noise: float = 0.0,
    ) -> None:
        shape = tuple(int(s) for s in image_shape)
        if len(shape) not in (2, 3) or min(shape) < 1:
            raise GraphclustError(
                f"image_shape must be (height, width) or (channels, height, width), got {image_shape!r}"
            )
        self.image_shape = shape
        if float(max_shift) < 0 or float(max_rotation) < 0:
            raise GraphclustError("max_shift and max_rotation must be >= 0")
        self.max_shift, self.max_rotation = float(max_shift), float(max_rotation)
        self.mask = _check_rate(mask, "mask")
        if not float(noise) >= 0:
            raise GraphclustError(f"noise must be >= 0, got {noise}")
        self.noise = float(noise)

    def __repr__(self) -> str:
        return (f"ImageAugment(image_shape={self.image_shape}, max_shift={self.max_shift}, "
                f"max_rotation={self.max_rotation}, mask={self.mask}, noise={self.noise})")

    @property
    def chw(self) -> tuple[int, int, int]:
        s = self.image_shape
        return (1, *s) if len(s) == 2 else s  # type: ignore[return-value]

    def check(self, n_features: int) -> None:
        """Raise when the rows do not hold images of ``image_shape``."""
        if math.prod(self.image_shape) != int(n_features):
            raise GraphclustError(
                f"image_shape {self.image_shape} has {math.prod(self.image_shape)} pixels but the "
                f"rows have {n_features} features; pass the data's image shape "
                "(LoadedData.image_shape) or use VectorAugment"
            )

    def transforms(self, n: int, generator: torch.Generator | None = None,
                   device: torch.device | str = "cpu") -> Tensor:
        """Random affine matrices in ``affine_grid``'s normalised coordinates, shape (n, 2, 3)."""
        _, H, W = self.chw
        u = torch.rand((n, 3), generator=generator, device=device) * 2.0 - 1.0
        angle = u[:, 0] * math.radians(self.max_rotation)
        # a shift of s pixels is 2 s / size in coordinates running from -1 to 1
        tx = u[:, 1] * (2.0 * self.max_shift / W)
        ty = u[:, 2] * (2.0 * self.max_shift / H)
        cos, sin = angle.cos(), angle.sin()
        return torch.stack([torch.stack([cos, -sin, tx], -1), torch.stack([sin, cos, ty], -1)], 1)

    def warp(self, x: Tensor, theta: Tensor) -> Tensor:
        """Apply given affine matrices (n, 2, 3) to flat images ``x`` (n, n_features)."""
        C, H, W = self.chw
        img = x.reshape(x.shape[0], C, H, W)
        grid = F.affine_grid(theta.to(x.dtype), list(img.shape), align_corners=False)
        out = F.grid_sample(img, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return out.reshape(x.shape[0], -1)

    def __call__(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``x`` (n, n_features) of flat images -> augmented images of the same shape."""
        self.check(x.shape[1])
        out = self.warp(x, self.transforms(x.shape[0], generator, x.device))
        return _mask_and_noise(out, self.mask, self.noise, generator)


def default_augmenter(image_shape: Sequence[int] | None) -> VectorAugment | ImageAugment:
    """:class:`ImageAugment` for data with an image shape, else :class:`VectorAugment`."""
    if image_shape is None:
        return VectorAugment()
    return ImageAugment(image_shape)
