"""Data augmentation inside the compiled training step (on the accelerator, no host work).

``crop_flip`` is the standard augmentation of CIFAR ResNets (He et al. 2016, section 4.2):
pad each image by ``pad`` pixels on every side, take a random crop of the original size, and
flip it horizontally with probability 1/2. Images arrive flat, as the datasets hold them.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

__all__ = ["AUGMENTATIONS", "crop_flip", "make_augment"]

AUGMENTATIONS = ("none", "crop-flip")


def crop_flip(x: jax.Array, key: jax.Array, image_shape: tuple[int, int, int], pad: int = 4) -> jax.Array:
    """Random crops of the zero-padded images and random horizontal flips.

    Args:
      x: images ``(batch, h * w * c)`` (channels last), or ``(batch, h, w, c)``.
      key: PRNG key (one crop offset and one flip per image).
      image_shape: ``(h, w, c)``.
      pad: pixels of zeros added on each side before cropping (zero is the channel mean of a
        normalised dataset such as ``cifar10``).

    Returns:
      Augmented images of the shape of ``x``; labels are untouched (the same order).
    """
    h, w, c = image_shape
    n = x.shape[0]
    images = x.reshape(n, h, w, c)
    k_y, k_x, k_flip = jax.random.split(key, 3)
    dy = jax.random.randint(k_y, (n,), 0, 2 * pad + 1)
    dx = jax.random.randint(k_x, (n,), 0, 2 * pad + 1)
    padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    crop = jax.vmap(lambda img, a, b: jax.lax.dynamic_slice(img, (a, b, 0), (h, w, c)))(padded, dy, dx)
    flip = jax.random.bernoulli(k_flip, 0.5, (n,))
    out = jnp.where(flip[:, None, None, None], crop[:, :, ::-1, :], crop)
    return out.reshape(x.shape)


def make_augment(name: str, image_shape: tuple[int, int, int] | None) -> Callable | None:
    """The augmentation ``name`` (``AUGMENTATIONS``) as ``f(x, key)``, ``None`` for ``none``."""
    if name not in AUGMENTATIONS:
        raise ValueError(f"augment: value {name!r} is not allowed; allowed: {', '.join(AUGMENTATIONS)}")
    if name == "none":
        return None
    if image_shape is None:
        raise ValueError(f"augment: {name!r} needs images; the dataset's features have no image shape")
    return lambda x, key: crop_flip(x, key, image_shape)
