"""Pictures: mass contour levels on hand-made densities, and that every figure writes a PNG."""

import io

import numpy as np
import pytest
from PIL import Image

from deepgaze_jax import plotting


def test_mass_thresholds_on_a_hand_made_density():
    log_p = np.log(np.array([[0.5, 0.25], [0.125, 0.125]]))
    # {0.5} holds 50 %, {0.5, 0.25} 75 %, everything 100 %.
    np.testing.assert_allclose(plotting.mass_thresholds(log_p, (0.25, 0.5, 0.6, 0.75, 1.0)),
                               np.log([0.5, 0.5, 0.25, 0.25, 0.125]))


def test_mass_thresholds_of_a_uniform_density_enclose_the_right_pixel_count():
    log_p = -np.log(100.0) + 1e-6 * np.arange(100.0).reshape(10, 10)  # nearly uniform, no ties
    log_p -= np.log(np.exp(log_p).sum())
    levels = plotting.mass_thresholds(log_p, (0.25, 0.5))
    assert [(log_p >= level).sum() for level in levels] == [25, 50]


def density(shape):
    y, x = np.mgrid[: shape[0], : shape[1]]
    log_p = -((x - shape[1] / 3) ** 2 + (y - shape[0] / 2) ** 2) / (2 * (shape[0] / 6) ** 2)
    return (log_p - np.log(np.exp(log_p).sum())).astype(np.float32)


def test_overlay_png_has_the_image_size_shrunk_to_max_side():
    image = np.full((60, 80, 3), 128, np.uint8)
    with Image.open(io.BytesIO(plotting.overlay_png(image, density((60, 80)), [10, 20], [30, 40]))) as png:
        assert png.size == (80, 60)
    with Image.open(io.BytesIO(plotting.overlay_png(image, density((60, 80)), max_side=40))) as png:
        assert png.size == (40, 30)


def test_overlay_of_a_flat_density_has_no_contours_but_works():
    image = np.zeros((40, 40, 3), np.uint8)
    assert plotting.overlay_png(image, np.full((40, 40), -np.log(1600.0), np.float32))[:4] == b"\x89PNG"


def test_mismatched_shapes_are_an_error():
    with pytest.raises(ValueError, match="does not match"):
        plotting.overlay_png(np.zeros((40, 40, 3), np.uint8), density((30, 40)))


def test_prediction_and_training_curve_pictures(tmp_path):
    plotting.save_prediction(tmp_path / "p.png", np.full((60, 80, 3), 200, np.uint8), density((60, 80)),
                             xs=[5, 50], ys=[10, 30], title="test")
    history = [{"epoch": e, "train_loss": 3 - 0.1 * e, "val_loss": 3.1 - 0.1 * e, "val_ig": 0.05 * e} for e in range(1, 6)]
    history[2].pop("val_ig")  # a metric missing in one epoch is skipped there
    plotting.save_training_curves(tmp_path / "c.png", history)
    for name in ("p.png", "c.png"):
        with Image.open(tmp_path / name) as png:
            assert png.format == "PNG" and png.width > 300
    with pytest.raises(ValueError, match="empty"):
        plotting.save_training_curves(tmp_path / "none.png", [])


def test_shrink_for_drawing_averages_blocks_of_colour_and_probability():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    log_p = density((5, 7))
    small_image, small_log_p, k = plotting.shrink_for_drawing(image, log_p, max_side=3)
    assert k == 3 and small_image.shape == (2, 3, 3) and small_log_p.shape == (2, 3)
    p = np.exp(log_p.astype(np.float64))
    for r in range(2):
        for c in range(3):  # blocks of 3x3, fewer pixels at the right and bottom edges
            block = (slice(3 * r, 3 * r + 3), slice(3 * c, 3 * c + 3))
            np.testing.assert_allclose(np.exp(small_log_p[r, c]), p[block].mean(), rtol=1e-5)
            np.testing.assert_allclose(small_image[r, c], image[block].reshape(-1, 3).mean(0), atol=1)  # Pillow's fixed point
    counts = np.outer([3, 2], [3, 3, 1])
    np.testing.assert_allclose((np.exp(small_log_p.astype(np.float64)) * counts).sum(), 1.0, rtol=1e-5)  # mass kept
    same = plotting.shrink_for_drawing(image, log_p, max_side=7)
    assert same[0] is image and same[1] is log_p and same[2] == 1


def test_a_huge_image_is_drawn_shrunk(monkeypatch):
    monkeypatch.setattr(plotting, "DRAW_MAX_SIDE", 40)
    image = np.full((120, 160, 3), 90, np.uint8)
    with Image.open(io.BytesIO(plotting.prediction_png(image, density((120, 160)), [10, 150], [5, 100]))) as png:
        assert png.format == "PNG" and png.width > 300
    with Image.open(io.BytesIO(plotting.overlay_png(image, density((120, 160)), max_side=20))) as png:
        assert png.size == (20, 15)
    seen = []
    real = plotting.draw_prediction
    monkeypatch.setattr(plotting, "draw_prediction", lambda ax, im, d, *a, **kw: seen.append(d.shape) or real(ax, im, d, *a, **kw))
    plotting.prediction_png(image, density((120, 160)))
    assert seen == [(30, 40)]  # drawn at 1/4
