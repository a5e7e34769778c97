"""Image decoding with bounded memory (engine/ml/images.py): files, headers, pixels."""

from __future__ import annotations

import io
import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageOps

from engine.errors import ImageError
from engine.ml import images


def encoded(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **options)
    return buf.getvalue()


def gradient(width: int, height: int) -> Image.Image:
    """A smooth RGB picture (compresses well, so big ones stay small on disk)."""
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None, None]
    a = np.concatenate(
        [
            np.broadcast_to(x, (height, width, 1)),
            np.broadcast_to(y, (height, width, 1)),
            np.full((height, width, 1), 128, np.float32),
        ],
        axis=2,
    )
    return Image.fromarray(a.astype(np.uint8), "RGB")


# ---------------------------------------------------------------- files


def test_a_folder_a_device_and_a_missing_file_are_refused_before_anything_is_read(tmp_path):
    with pytest.raises(ImageError, match="is a folder; give one image file"):
        images.read_image_file(tmp_path)
    with pytest.raises(ImageError, match="not a regular file"):
        images.read_image_file("/dev/zero")  # reading it would never end
    with pytest.raises(ImageError, match="no such file"):
        images.read_image_file(tmp_path / "nothing.png")


def test_a_file_over_the_limit_is_refused_by_its_size_without_reading_it(tmp_path):
    sparse = tmp_path / "huge.png"
    with open(sparse, "wb") as f:
        f.truncate(3 * 1024**3)  # 3 GB that take no disk space: reading them would take 3 GB of memory
    with pytest.raises(ImageError, match=r"huge.png is 3.2 GB; the limit is 10 MB"):
        images.read_image_file(sparse)


def test_a_small_image_file_is_read_whole(tmp_path):
    data = encoded(gradient(8, 8))
    (tmp_path / "a.png").write_bytes(data)
    assert images.read_image_file(tmp_path / "a.png") == data


def test_a_fifo_is_refused_instead_of_blocking(tmp_path):
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(ImageError, match="not a regular file"):
        images.read_image_file(tmp_path / "pipe")


# ---------------------------------------------------------------- uploads


def test_a_thin_strip_is_refused_by_its_aspect_ratio_before_it_is_decoded():
    strip = encoded(Image.new("L", (100_000, 1), 200))  # 184 bytes that once padded to 1.4 GB
    with pytest.raises(ImageError, match=r"100000 x 1 pixels, 100,000 times longer .* at most 20:1"):
        images.open_upload(strip)


def test_an_upload_is_shrunk_to_the_working_size_keeping_its_original_size_in_info():
    image = images.open_upload(encoded(gradient(3000, 1500), "JPEG", quality=90))
    assert max(image.size) <= images.WORKING_SIDE and image.size == (512, 256)
    assert image.info["original_size"] == (3000, 1500)


def test_a_big_jpeg_upload_is_decoded_at_a_reduced_scale(monkeypatch):
    loaded = []
    real_load = Image.Image.load

    def spy(self):
        result = real_load(self)
        loaded.append(self.size)
        return result

    photo = encoded(gradient(4096, 4096), "JPEG", quality=90)
    monkeypatch.setattr(Image.Image, "load", spy)
    images.open_upload(photo)
    assert loaded and max(max(s) for s in loaded) <= 1024  # 1/4 scale is the smallest that covers 512


def test_sixteen_bit_images_are_scaled_to_eight_bits_not_clipped():
    ramp = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)  # 0..65520
    image = images.open_upload(encoded(Image.fromarray(ramp)))
    a = np.asarray(image)
    assert image.mode == "L" and a.min() == 0 and a.max() == 255
    assert (a == 255).mean() < 0.01  # clipping made 99.6% of the pixels white
    assert abs(float(a.mean()) - 127.5) < 2


# ---------------------------------------------------------------- fixed-size decoding (folder datasets)


def test_decode_square_centre_crops_and_resizes_to_the_target(tmp_path):
    picture = Image.new("L", (120, 60), 0)
    picture.paste(255, (60, 0, 120, 60))  # right half white
    picture.save(tmp_path / "wide.png")
    a = images.decode_square(tmp_path / "wide.png", 32, "L")
    assert a.shape == (1, 32, 32) and a.dtype == np.uint8
    assert a[0, :, :12].max() < 30 and a[0, :, 20:].min() > 225  # the middle square: dark left, white right


def test_decode_square_reads_a_big_jpeg_at_a_reduced_scale(tmp_path, monkeypatch):
    gradient(2000, 2000).save(tmp_path / "photo.jpg", quality=90)
    fitted = []
    real_fit = ImageOps.fit
    monkeypatch.setattr(ImageOps, "fit", lambda image, *a, **k: fitted.append(image.size) or real_fit(image, *a, **k))
    a = images.decode_square(tmp_path / "photo.jpg", 32, "RGB")
    assert a.shape == (3, 32, 32)
    assert fitted == [(250, 250)]  # decoded at 1/8 scale: 0.19 MB instead of 12 MB


def test_transparent_parts_become_white_and_grey_modes_are_recognised(tmp_path):
    Image.new("RGBA", (40, 40), (0, 0, 0, 0)).save(tmp_path / "clear.png")
    assert images.decode_square(tmp_path / "clear.png", 8, "RGB").min() == 255
    assert images.is_grey("I;16") and images.is_grey("L") and not images.is_grey("RGB")


# ---------------------------------------------------------------- uploads refused before they cost memory


def test_a_file_that_is_not_an_image_is_refused_with_the_allowed_formats():
    with pytest.raises(ImageError, match="not an image.*PNG, JPEG"):
        images.open_upload(b"this is a text file, not a picture\n" * 10)
    with pytest.raises(ImageError, match="empty"):
        images.open_upload(b"")


def test_a_file_over_the_size_cap_is_refused_before_decoding():
    data = encoded(Image.new("L", (8, 8)))
    assert images.MAX_IMAGE_BYTES == 10 * 1024 * 1024
    with pytest.raises(ImageError, match="the limit is 10 MB"):
        images.open_upload(data + b"\0" * images.MAX_IMAGE_BYTES)


def decompression_bomb(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height pixels."""
    data = encoded(Image.new("L", (1, 1)))
    ihdr = data.index(b"IHDR")
    fields = struct.pack(">II", width, height) + data[ihdr + 12 : ihdr + 17]
    chunk = b"IHDR" + fields
    return data[:ihdr] + chunk + struct.pack(">I", zlib.crc32(chunk)) + data[ihdr + 21 :]


def test_a_decompression_bomb_is_refused_by_its_pixel_count():
    bomb = decompression_bomb(6_000, 6_000)  # below Pillow's own limit, above ours
    assert len(bomb) < 1000
    with pytest.raises(ImageError, match="6000 x 6000 = 36,000,000 pixels; the limit is 25,000,000"):
        images.open_upload(bomb)


def test_pillows_own_decompression_bomb_guard_becomes_a_clear_error():
    with pytest.raises(ImageError, match="more pixels than the limit of 25,000,000 .*decompression bomb"):
        images.open_upload(decompression_bomb(60_000, 60_000))


def test_a_truncated_image_and_an_unlisted_format_are_refused():
    data = encoded(Image.new("RGB", (32, 32), (10, 200, 30)))
    with pytest.raises(ImageError, match="damaged or incomplete"):
        images.open_upload(data[: len(data) // 2])
    with pytest.raises(ImageError, match="PPM files are not accepted"):
        images.open_upload(encoded(Image.new("RGB", (4, 4)), "PPM"))
