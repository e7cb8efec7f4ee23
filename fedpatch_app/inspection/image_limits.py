"""How large an image to score may be: one rule for `fedpatch serve` and `fedpatch predict`.

The work an image causes follows its size: the backbone resizes its shorter side to the
model's input size keeping the aspect ratio, so a 4000x1 image becomes a 512000x128
input. The rule is checked on the size in the image's header, before anything is
decoded, against the category's native size (the size of the images the model was built
from):

- an aspect ratio (width / height) more than `MAX_ASPECT_FACTOR` times wider or taller
  than the native one is refused;
- more than `MAX_PIXEL_FACTOR` times the native pixel count is refused;
- any other size is scored after resizing it to the native size, as the training images
  were; the anomaly map, the regions and the overlay are then at the native size, so
  their cost is bounded by the category, not by the upload.
"""

from __future__ import annotations

#: An image whose aspect ratio differs from the native one by more than this factor
#: (either way) is refused.
MAX_ASPECT_FACTOR = 2.0
#: An image with more than this many times the native pixel count is refused.
MAX_PIXEL_FACTOR = 4.0


class ImageSizeError(ValueError):
    """An image outside the size rule; `limit` is "aspect" or "pixels"."""

    def __init__(self, limit: str, message: str) -> None:
        super().__init__(message)
        self.limit = limit
        self.message = message


def check_image_size(size: tuple[int, int], native: tuple[int, int]) -> None:
    """ImageSizeError unless a (width, height) image may be scored for a category whose
    images are `native` (width, height); the message names the limit."""
    width, height = size
    n_width, n_height = native
    if width < 1 or height < 1:
        raise ImageSizeError("pixels", f"the image is {width}x{height} pixels: it has no pixels")
    pixels, native_pixels = width * height, n_width * n_height
    if pixels > MAX_PIXEL_FACTOR * native_pixels:
        raise ImageSizeError(
            "pixels",
            f"the image is {width}x{height} = {pixels:,} pixels, above the limit of "
            f"{MAX_PIXEL_FACTOR:g}x the category's {n_width}x{n_height} "
            f"({int(MAX_PIXEL_FACTOR * native_pixels):,} pixels)",
        )
    factor = (width / height) / (n_width / n_height)
    if factor > MAX_ASPECT_FACTOR or factor < 1 / MAX_ASPECT_FACTOR:
        raise ImageSizeError(
            "aspect",
            f"the image is {width}x{height} (aspect ratio {width / height:.3g}), more than "
            f"{MAX_ASPECT_FACTOR:g}x away from the category's {n_width}x{n_height} "
            f"(aspect ratio {n_width / n_height:.3g}): the aspect-ratio limit",
        )
