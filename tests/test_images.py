"""Image reading: documented conversions and clear errors."""

import io

import numpy as np
import pytest
from PIL import Image

from deepgaze_jax.images import ImageError, as_rgb_array, batches_by_size, group_by_size, load_image


def encode(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def test_rgb_jpeg_roundtrip(tmp_path):
    rgb = np.random.RandomState(0).randint(0, 255, (30, 40, 3), np.uint8)
    path = tmp_path / "x.png"
    Image.fromarray(rgb).save(path)
    np.testing.assert_array_equal(load_image(path), rgb)


def test_grayscale_is_repeated():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    out = load_image(encode(Image.fromarray(gray, "L")))
    assert out.shape == (3, 4, 3)
    np.testing.assert_array_equal(out[..., 1], gray)


def test_sixteen_bit_is_scaled():
    gray = np.array([[0, 65535], [257 * 100, 257 * 7]], np.uint16)
    out = load_image(encode(Image.fromarray(gray)))
    np.testing.assert_array_equal(out[..., 0], [[0, 255], [100, 7]])


def test_alpha_is_composited_over_white():
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (255, 0, 0, 255)  # opaque red
    rgba[0, 1] = (0, 0, 0, 0)  # transparent -> white
    out = load_image(encode(Image.fromarray(rgba, "RGBA")))
    np.testing.assert_array_equal(out[0, 0], (255, 0, 0))
    np.testing.assert_array_equal(out[0, 1], (255, 255, 255))


def test_cmyk_is_converted():
    cmyk = Image.new("CMYK", (5, 4), (0, 255, 255, 0))  # red
    out = load_image(encode(cmyk, "JPEG"))
    assert out.shape == (4, 5, 3) and out[..., 0].min() > 200 and out[..., 1].max() < 60


def test_bad_files_are_named(tmp_path):
    with pytest.raises(ImageError, match="empty"):
        load_image(b"")
    with pytest.raises(ImageError, match="not an image"):
        load_image(b"this is text, not a picture")
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "missing.jpg")
    jpeg = encode(Image.fromarray(np.random.RandomState(0).randint(0, 255, (64, 64, 3), np.uint8)), "JPEG")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(jpeg[: len(jpeg) // 2])
    with pytest.raises(ImageError, match="truncated.jpg: corrupt or truncated"):
        load_image(truncated)


def test_decompression_bomb_is_refused_before_decoding():
    bomb = encode(Image.new("1", (30000, 30000)))  # 900 megapixels in about 100 kB
    assert len(bomb) < 1_000_000
    with pytest.raises(ImageError, match="decompression bomb"):
        load_image(bomb)
    big = encode(Image.new("1", (9000, 8000)))  # under PIL's own limits, over ours
    with pytest.raises(ImageError, match="72000000 pixels exceeds the limit of 64000000"):
        load_image(big)


def test_arrays():
    assert as_rgb_array(np.zeros((4, 5), np.uint8)).shape == (4, 5, 3)
    np.testing.assert_allclose(as_rgb_array(np.full((2, 2, 3), 65535, np.uint16)), 255.0)
    with pytest.raises(ImageError, match="3 \\(RGB\\) channels, got 4"):
        as_rgb_array(np.zeros((4, 5, 4), np.uint8))
    with pytest.raises(ImageError, match="NaN"):
        as_rgb_array(np.full((4, 5, 3), np.nan, np.float32))


@pytest.mark.parametrize("orientation,turns", [(6, -1), (8, 1)])  # 6: shown turned clockwise, 8: counter-
def test_exif_orientation_is_applied(tmp_path, orientation, turns):
    from tests import image_cases

    tagged, plain = image_cases.exif_oriented_jpeg(orientation)
    stored = load_image(plain)
    assert stored.shape == (*image_cases.SIZE, 3)
    upright = np.rot90(stored, turns)  # the same compressed pixels, turned as a viewer shows them
    np.testing.assert_array_equal(load_image(tagged), upright)  # bytes, as the service reads uploads
    (tmp_path / "phone.jpg").write_bytes(tagged)
    np.testing.assert_array_equal(load_image(tmp_path / "phone.jpg"), upright)


def test_as_stored_reads_the_stored_grid_without_exif_orientation_and_drops_alpha():
    from tests import image_cases

    tagged, plain = image_cases.exif_oriented_jpeg(6)
    np.testing.assert_array_equal(load_image(tagged, as_stored=True), load_image(plain))  # not turned
    rgba = np.zeros((1, 2, 4), np.uint8)
    rgba[0, 1] = (10, 20, 30, 0)  # transparent: composited to white by default, kept as stored
    data = encode(Image.fromarray(rgba, "RGBA"))
    np.testing.assert_array_equal(load_image(data)[0, 1], (255, 255, 255))
    np.testing.assert_array_equal(load_image(data, as_stored=True)[0, 1], (10, 20, 30))


def test_no_pixel_limit_when_max_pixels_is_none():
    big = encode(Image.new("1", (9000, 8000)))  # over our default limit, under Pillow's own
    assert load_image(big, max_pixels=None).shape == (8000, 9000, 3)


def test_group_by_size_keeps_first_seen_order_and_batches_cut_each_group():
    shapes = [(4, 5, 3), (2, 3, 3), (4, 5, 3), (4, 5, 3), (2, 3)]
    assert group_by_size(shapes) == {(4, 5): [0, 2, 3], (2, 3): [1, 4]}
    assert list(group_by_size(shapes)) == [(4, 5), (2, 3)]
    assert list(batches_by_size(shapes, 2)) == [[0, 2], [3], [1, 4]]
    assert group_by_size([]) == {} and list(batches_by_size([], 3)) == []
