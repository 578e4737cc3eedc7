"""Image files for the CLI and service tests: odd but valid ones, and bad ones.

Every case is bytes with a file name, so the same cases serve as files (CLI) and uploads (service).
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image

#: (height, width) of the synthetic images: small, and above AlexNet's receptive field.
SIZE = (72, 96)


def photo(size: tuple[int, int] = SIZE, seed: int = 0) -> np.ndarray:
    """A smooth random ``(H, W, 3)`` uint8 picture (compresses like a photograph, unlike noise)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (size[0] // 8 + 1, size[1] // 8 + 1, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize(size[::-1], Image.BILINEAR))


def encode(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def bomb_png(width: int = 30000, height: int = 30000) -> bytes:
    """A valid 1-bit PNG of ``width x height`` pixels (900 megapixels by default) that compresses to
    about 100 kB: a decompression bomb. Written chunk by chunk; nothing of full size is allocated."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor = zlib.compressobj(9)
    row = b"\0" * (1 + (width + 7) // 8)  # filter byte + packed bits
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def odd_but_valid() -> dict[str, bytes]:
    """Images that need one of the documented conversions: all predict at :data:`SIZE`."""
    rgb = Image.fromarray(photo())
    gray16 = (photo()[..., 0].astype(np.uint16) * 257)
    rgba = np.concatenate([photo(), np.full((*SIZE, 1), 128, np.uint8)], axis=-1)
    return {
        "cmyk.jpg": encode(rgb.convert("CMYK"), "JPEG"),
        "gray16.png": encode(Image.fromarray(gray16)),
        "gray.png": encode(rgb.convert("L")),
        "alpha.png": encode(Image.fromarray(rgba, "RGBA")),
    }


def bad() -> dict[str, tuple[bytes, str]]:
    """Files that must be refused, with a word the error message must contain."""
    jpeg = encode(Image.fromarray(photo()), "JPEG")
    return {
        "notes.jpg": (b"these are not the pixels you are looking for\n", "not an image"),
        "truncated.jpg": (jpeg[: len(jpeg) // 2], "truncated"),
        "cut-header.jpg": (jpeg[:24], "truncated"),
        "bomb.png": (bomb_png(), "decompression bomb"),
    }


def exif_oriented_jpeg(orientation: int, size: tuple[int, int] = SIZE) -> tuple[bytes, bytes]:
    """A JPEG whose stored pixels are ``photo(size)`` and whose EXIF tag says ``orientation`` (6: turn
    90 degrees clockwise to show it, 8: counter-clockwise), and the same JPEG without the tag."""
    image = Image.fromarray(photo(size))
    tagged, plain = io.BytesIO(), io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = orientation  # Orientation
    image.save(tagged, format="JPEG", quality=90, exif=exif)
    image.save(plain, format="JPEG", quality=90)
    return tagged.getvalue(), plain.getvalue()
