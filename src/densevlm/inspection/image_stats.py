"""Image statistics a line watches whatever the model says: brightness and sharpness.

On the luma ``Y = 0.299 R + 0.587 G + 0.114 B`` of the image scaled to [0, 1] (ITU-R BT.601, as
``PIL.Image.convert("L")`` weighs the channels), over the original pixels:

* ``brightness`` -- the mean of ``Y``;
* ``sharpness`` -- the variance of the 4-neighbour Laplacian
  ``Y[i-1,j] + Y[i+1,j] + Y[i,j-1] + Y[i,j+1] - 4 Y[i,j]`` over the interior pixels ("variance
  of the Laplacian", Pech-Pacheco et al., ICPR 2000): high for crisp edges, low for an
  out-of-focus image or one upsampled by a closer camera (a zoom spreads every edge).

Only images of one camera and resolution are comparable: the monitor compares a batch with a
reference from the same line.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

__all__ = ["IMAGE_STATS", "image_statistics"]

IMAGE_STATS = ("brightness", "sharpness")
_LUMA = np.array([0.299, 0.587, 0.114])


def image_statistics(image: Image.Image | np.ndarray) -> np.ndarray:
    """``[2]`` brightness and sharpness (see the module docstring) of an RGB image.

    Args:
        image: a PIL image (converted to RGB) or an ``[H, W, 3]`` uint8 array. Sharpness is 0
            for an image narrower or shorter than 3 pixels (it has no interior).
    """
    rgb = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image, dtype=np.float64) / 255.0
    y = rgb @ _LUMA
    if min(y.shape) < 3:
        return np.array([y.mean(), 0.0])
    lap = y[:-2, 1:-1] + y[2:, 1:-1] + y[1:-1, :-2] + y[1:-1, 2:] - 4.0 * y[1:-1, 1:-1]
    return np.array([y.mean(), lap.var()])
