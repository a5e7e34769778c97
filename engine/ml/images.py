"""Decoding image files with bounded memory: uploads, `search --image` files and folder datasets.

Every image that comes from outside goes through here, so every step's memory has a bound
that does not depend on what the file claims:
- the file: at most `MAX_IMAGE_BYTES` are ever read (a device, a pipe or a folder is refused
  before reading);
- the header: at most `MAX_IMAGE_PIXELS` pixels and an aspect ratio of at most `MAX_ASPECT`,
  checked before any pixel is decoded (a decompression bomb is never expanded, and a thin strip
  cannot turn into a huge square when it is padded);
- the pixels: JPEGs are decoded at a reduced scale (Pillow's `draft`) when the target is smaller,
  and an upload is shrunk to at most `WORKING_SIDE` pixels per side before it is cropped or padded;
- 16-bit and 32-bit images are scaled to 8 bits, not clipped.

Nothing here imports torch.
"""

from __future__ import annotations

import io
import math
import os
import stat
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np

from engine.errors import ImageError

if TYPE_CHECKING:  # Pillow itself is imported where an image is opened
    from PIL.Image import Image

MAX_IMAGE_BYTES = 10 * 1024 * 1024  # 10 MB: the largest upload or --image file read
MAX_IMAGE_PIXELS = 25_000_000  # width x height; a 5000 x 5000 photo is the largest accepted
MAX_ASPECT = 20  # longer side / shorter side; a 20:1 strip is the most elongated image accepted
WORKING_SIDE = 512  # an upload is shrunk to at most this many pixels per side before any crop or pad
UPLOAD_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF")
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")  # scaled by 255/65535 to 8 bits
GREY_MODES = ("1", "L", "LA", "I", "F", *SIXTEEN_BIT_MODES)


def _allowed() -> str:
    return ", ".join(UPLOAD_FORMATS)


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n < 1e9 else f"{n / 1e9:.1f} GB"


# ---------------------------------------------------------------- files


def read_image_file(path: str | os.PathLike, max_bytes: int = MAX_IMAGE_BYTES) -> bytes:
    """The bytes of an image file on disk, reading at most `max_bytes`.

    A folder, a device (/dev/zero), a pipe or a socket is refused before anything is read, and so
    is a file whose size is over the limit; a file that grows while it is read is cut off at the
    limit and refused.
    """
    shown = str(path)
    try:
        info = os.stat(Path(path).expanduser())
    except FileNotFoundError:
        raise ImageError(f"{shown}: no such file; give an image file ({_allowed()})") from None
    except OSError as exc:
        raise ImageError(f"{shown}: cannot be read ({exc.strerror or exc})") from None
    if stat.S_ISDIR(info.st_mode):
        raise ImageError(f"{shown} is a folder; give one image file ({_allowed()})")
    if not stat.S_ISREG(info.st_mode):
        raise ImageError(
            f"{shown} is not a regular file (a device, a pipe or a socket); give an image file ({_allowed()})"
        )
    if info.st_size > max_bytes:
        raise ImageError(f"{shown} is {_mb(info.st_size)}; the limit is {max_bytes / 1e6:.0f} MB")
    try:
        with open(Path(path).expanduser(), "rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as exc:
        raise ImageError(f"{shown}: cannot be read ({exc.strerror or exc})") from None
    if len(data) > max_bytes:
        raise ImageError(f"{shown} grew past the limit of {max_bytes / 1e6:.0f} MB while it was read")
    return data


# ---------------------------------------------------------------- geometry


def check_geometry(width: int, height: int, max_pixels: int | None = MAX_IMAGE_PIXELS) -> None:
    """Refuse an image whose header claims too many pixels (unless `max_pixels` is None) or too
    elongated a shape."""
    if width < 1 or height < 1:
        raise ImageError(f"the image is {width} x {height} pixels: it has no pixels")
    if max_pixels is not None and width * height > max_pixels:
        raise ImageError(
            f"the image is {width} x {height} = {width * height:,} pixels; the limit is "
            f"{max_pixels:,} pixels (it may be a decompression bomb); resize it and try again"
        )
    if max(width, height) > MAX_ASPECT * min(width, height):
        raise ImageError(
            f"the image is {width} x {height} pixels, {max(width, height) / min(width, height):,.0f} "
            f"times longer than it is wide; at most {MAX_ASPECT}:1 is accepted: crop it and try again"
        )


def open_checked(
    source: bytes | str | os.PathLike | BinaryIO,
    max_pixels: int = MAX_IMAGE_PIXELS,
    formats: tuple[str, ...] | None = UPLOAD_FORMATS,
) -> Image:
    """Open an image lazily (no pixel decoded yet) after checking its format and its header's size.

    `source` is the file's bytes, a path or an open binary file. Raises ImageError with what was
    wrong and what is allowed; Pillow's own decompression-bomb guard becomes an ImageError too.
    """
    from PIL import Image, UnidentifiedImageError

    if isinstance(source, (bytes, bytearray)):
        source = io.BytesIO(source)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(source)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageError(
                f"the image claims more pixels than the limit of {max_pixels:,} and may be a "
                f"decompression bomb (Pillow: {exc}); resize it and try again"
            ) from None
        except UnidentifiedImageError:
            raise ImageError(f"this is not an image Pillow can read; allowed formats: {_allowed()}") from None
        except OSError as exc:
            raise ImageError(f"the image cannot be read ({exc.strerror or exc})") from None
        except Exception as exc:  # a damaged header raises SyntaxError, ValueError, ...
            raise ImageError(
                f"the image file is damaged or incomplete ({type(exc).__name__}: {exc}); allowed formats: {_allowed()}"
            ) from None
    try:
        check_geometry(*image.size, max_pixels)
        if formats is not None and image.format not in formats:
            raise ImageError(f"{image.format} files are not accepted; allowed formats: {_allowed()}")
    except ImageError:
        image.close()
        raise
    return image


def decode(image: Image, draft_size: tuple[int, int] | None = None) -> Image:
    """Decode a lazily opened image; with `draft_size`, a JPEG is decoded at the smallest of
    1/1, 1/2, 1/4, 1/8 scale that still covers that size. Errors become ImageError."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            if draft_size is not None:
                image.draft(None, draft_size)
            image.load()
        except Exception as exc:  # truncated or corrupt files raise OSError, SyntaxError, ValueError...
            raise ImageError(
                f"the image file is damaged or incomplete ({type(exc).__name__}: {exc}); allowed formats: {_allowed()}"
            ) from None
    return image


# ---------------------------------------------------------------- pixels


def to_8bit(image: Image) -> Image:
    """An image in an 8-bit mode: 16-bit and 32-bit integer images are scaled (65535 -> 255), floats
    in [0, 1] are scaled to [0, 255]; anything else is returned as it is."""
    from PIL import Image

    if image.mode in SIXTEEN_BIT_MODES:
        a = np.asarray(image, dtype=np.float32)
        return Image.fromarray(np.clip(np.rint(a * (255.0 / 65535.0)), 0, 255).astype(np.uint8), "L")
    if image.mode == "F":
        a = np.asarray(image, dtype=np.float32)
        a = np.nan_to_num(a, nan=0.0, posinf=255.0, neginf=0.0)
        scale = 255.0 if a.size and float(a.max()) <= 1.0 else 1.0
        return Image.fromarray(np.clip(np.rint(a * scale), 0, 255).astype(np.uint8), "L")
    return image


def flatten_alpha(image: Image) -> Image:
    """An image with transparency laid on a white background (transparent parts become white)."""
    from PIL import Image

    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return image


def shrink_to(image: Image, side: int = WORKING_SIDE) -> Image:
    """The image with its longer side at most `side` pixels (aspect kept); never enlarged."""
    from PIL import Image

    if max(image.size) <= side:
        return image
    image = image.copy() if image.readonly else image
    image.thumbnail((side, side), Image.Resampling.LANCZOS, reducing_gap=3.0)
    return image


def bounded(image: Image, side: int = WORKING_SIDE) -> Image:
    """An in-memory PIL image made safe to crop and pad: aspect checked, shrunk to `side`, 8-bit."""
    check_geometry(*image.size, max_pixels=None)  # already decoded: only its shape still matters
    return to_8bit(shrink_to(image, side))


def open_upload(data: bytes, max_bytes: int = MAX_IMAGE_BYTES, max_pixels: int = MAX_IMAGE_PIXELS) -> Image:
    """Check an uploaded file and return it as a loaded PIL image of at most `WORKING_SIDE` pixels
    per side, in an 8-bit mode; ImageError says what was wrong.

    Checks, in order: the size in bytes; that Pillow recognises a format from `UPLOAD_FORMATS`;
    the pixel count and aspect ratio in the header, before any pixel is decoded; that the file
    verifies. Then it decodes (a JPEG straight at a reduced scale) and shrinks. The original size
    is kept in `image.info["original_size"]`.
    """
    if not data:
        raise ImageError(f"the file is empty; upload an image ({_allowed()})")
    if len(data) > max_bytes:
        raise ImageError(f"the file is {_mb(len(data))}; the limit is {max_bytes / 1e6:.0f} MB")
    with open_checked(data, max_pixels) as probe:
        size = probe.size
        try:
            probe.verify()  # structure and checksums, without decoding the pixels
        except Exception as exc:
            raise ImageError(
                f"the image file is damaged or incomplete ({type(exc).__name__}: {exc}); allowed formats: {_allowed()}"
            ) from None
    image = open_checked(data, max_pixels)
    scale = min(1.0, WORKING_SIDE / max(size))
    image = decode(image, (max(1, math.ceil(size[0] * scale)), max(1, math.ceil(size[1] * scale))))
    image = to_8bit(shrink_to(image))
    image.info["original_size"] = size
    return image


def decode_square(
    source: str | os.PathLike | BinaryIO, side: int, mode: str, max_pixels: int = MAX_IMAGE_PIXELS
) -> np.ndarray:
    """One image file decoded straight to a `side` x `side` array in `mode` ("L" or "RGB"):
    (C, side, side) uint8. Centre-cropped to a square, then resized; a JPEG is decoded at the
    smallest scale that still covers the target. Raises ImageError."""
    from PIL import Image, ImageOps

    with open_checked(source, max_pixels, formats=None) as image:
        w, h = image.size
        scale = min(1.0, side / min(w, h))  # the square crop's side must still cover `side`
        image = decode(image, (max(1, math.ceil(w * scale)), max(1, math.ceil(h * scale))))
        image = flatten_alpha(to_8bit(image)).convert(mode)
        image = ImageOps.fit(image, (side, side), Image.Resampling.LANCZOS)
        a = np.asarray(image, dtype=np.uint8)
    return a[None].copy() if a.ndim == 2 else a.transpose(2, 0, 1).copy()


def header(source: str | os.PathLike | BinaryIO, max_pixels: int = MAX_IMAGE_PIXELS) -> tuple[str, tuple[int, int]]:
    """(mode, (width, height)) from an image's header, checked; no pixel is decoded."""
    with open_checked(source, max_pixels, formats=None) as image:
        return image.mode, image.size


def is_grey(mode: str) -> bool:
    return mode in GREY_MODES
