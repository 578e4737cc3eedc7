"""Reading images into the ``(H, W, 3)`` uint8 RGB arrays the models take.

Documented conversions: the EXIF orientation tag is applied, so a phone photo is predicted as it is
shown, not as its pixels are stored (the array is then the rotated or mirrored one, e.g. ``(W, H, 3)``
for orientations 5-8); grayscale is repeated to three channels; palette, CMYK and YCbCr images are
converted to RGB; an alpha channel is composited over white (as a page shows it); 16-bit and
32-bit integer images are scaled to 0..255 from their full range. Anything else is an error naming
the file and the problem.

Stimuli of a fixation dataset are read with ``as_stored=True`` instead: the pixel grid as stored, on
which the fixations were recorded (no EXIF orientation), converted with Pillow's plain RGB conversion,
as the dataset builders store them (:mod:`deepgaze_jax.data.builders`).
"""

from __future__ import annotations

import io
import os
import pathlib
import warnings
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

#: Default cap on pixels per image; larger files are refused before decoding (decompression bombs).
MAX_PIXELS = 64_000_000


class ImageError(ValueError):
    """An image that cannot be read or converted; the message names the file and the problem."""


class ImageTooLargeError(ImageError):
    """An image over the pixel limit, or refused by Pillow as a decompression bomb."""


def load_image(source: str | os.PathLike | bytes, max_pixels: int | None = MAX_PIXELS, *,
               as_stored: bool = False) -> np.ndarray:
    """Read an image file (path or bytes) as ``(H, W, 3)`` uint8 RGB, upright as its EXIF orientation
    tag says (``H, W`` are then the displayed height and width); the conversions are in the module doc.

    ``max_pixels=None``: no limit of ours (Pillow still refuses decompression bombs of more than twice
    ``Image.MAX_IMAGE_PIXELS``). ``as_stored=True``: the stored pixel grid, for stimuli whose fixations
    were recorded on it: no EXIF orientation, and ``PIL.Image.convert("RGB")`` in place of the
    documented conversions (an alpha channel is dropped, not composited), as the dataset builders
    store images. The predict command and the server read with the defaults; the fixation datasets'
    file images (:func:`deepgaze_jax.data.from_raw`) with ``max_pixels=None, as_stored=True``.

    Raises:
      ImageTooLargeError: more than ``max_pixels`` pixels, or a decompression bomb.
      ImageError: unreadable, truncated or corrupt data.
    """
    name = "<bytes>" if isinstance(source, bytes) else str(source)
    if isinstance(source, bytes):
        if not source:
            raise ImageError(f"{name}: empty file")
        stream = io.BytesIO(source)
    else:
        path = pathlib.Path(source)
        if not path.is_file():
            raise ImageError(f"{name}: no such file")
        stream = path.open("rb")
    try:
        with stream, warnings.catch_warnings():
            if max_pixels is not None:
                warnings.simplefilter("error", Image.DecompressionBombWarning)
            try:
                image = Image.open(stream)
            except UnidentifiedImageError:
                raise ImageError(f"{name}: not an image file (format not recognised)") from None
            except (OSError, SyntaxError, ValueError, EOFError) as error:  # cut off inside the header
                raise ImageError(f"{name}: corrupt or truncated image header ({error})") from None
            width, height = image.size
            if max_pixels is not None and width * height > max_pixels:
                raise ImageTooLargeError(
                    f"{name}: {width}x{height} = {width * height} pixels exceeds the limit of {max_pixels}"
                )
            try:
                image.load()
                if not as_stored:
                    ImageOps.exif_transpose(image, in_place=True)  # in place: no copy of a huge image
            except (OSError, SyntaxError, ValueError) as error:
                raise ImageError(f"{name}: corrupt or truncated image data ({error})") from None
            if as_stored:
                return np.asarray(image.convert("RGB"), dtype=np.uint8)
            return to_rgb(image, name)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageTooLargeError(f"{name}: refused as a decompression bomb ({error})") from None


def to_rgb(image: Image.Image, name: str = "<image>") -> np.ndarray:
    """Convert a decoded PIL image to ``(H, W, 3)`` uint8 RGB with the documented conversions."""
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return _gray_to_rgb(np.asarray(image, np.float64) / 65535.0 * 255.0)
    if mode == "I":
        array = np.asarray(image, np.float64)
        top = 65535.0 if array.max(initial=0) <= 65535 else 2**31 - 1
        return _gray_to_rgb(np.clip(array, 0, None) / top * 255.0)
    if mode == "F":
        raise ImageError(f"{name}: floating-point images have no defined 0..255 range; convert it first")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    if image.mode != "RGB":  # convert() would copy even an RGB image: 192 MB more at 64 megapixels
        image = image.convert("RGB")
    return np.ascontiguousarray(np.asarray(image, np.uint8))


def _gray_to_rgb(gray: np.ndarray) -> np.ndarray:
    gray = np.clip(np.round(gray), 0, 255).astype(np.uint8)
    return np.repeat(gray[..., None], 3, axis=-1)


def as_rgb_array(image: np.ndarray, name: str = "image") -> np.ndarray:
    """Check and convert an array to ``(H, W, 3)`` RGB with values 0..255.

    ``(H, W)`` and ``(H, W, 1)`` grayscale are repeated to three channels; uint16 is scaled from
    0..65535 to 0..255; uint8 and float pass unchanged (float must already be 0..255). Four channels
    are refused (the alpha channel has no defined meaning here: composite it first).
    """
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3:
        raise ImageError(f"{name}: expected an (H, W, 3) image, got shape {array.shape}")
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    if array.shape[-1] != 3:
        raise ImageError(f"{name}: expected 3 (RGB) channels, got {array.shape[-1]} in shape {array.shape}")
    if array.dtype == np.uint16:
        return (array.astype(np.float32) * (255.0 / 65535.0)).astype(np.float32)
    if array.dtype == np.uint8 or np.issubdtype(array.dtype, np.floating):
        if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
            raise ImageError(f"{name}: contains NaN or infinity")
        return array
    raise ImageError(f"{name}: unsupported dtype {array.dtype}; expected uint8, uint16 or float 0..255")


def group_by_size(shapes: Iterable[Sequence[int]]) -> dict[tuple[int, int], list[int]]:
    """Positions of images of each size: ``(H, W, ...)`` shapes (or ``(H, W)`` sizes) ->
    ``{(H, W): [i, ...]}``, sizes in the order first seen, positions ascending within each."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i, shape in enumerate(shapes):
        groups.setdefault((int(shape[0]), int(shape[1])), []).append(i)
    return groups


def batches_by_size(shapes: Iterable[Sequence[int]], batch_size: int) -> Iterator[list[int]]:
    """Positions in batches of one image size, at most ``batch_size`` each: the groups of
    :func:`group_by_size` in order, each cut into consecutive runs."""
    for indices in group_by_size(shapes).values():
        for start in range(0, len(indices), batch_size):
            yield indices[start : start + batch_size]
