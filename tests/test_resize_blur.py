"""The nearest-neighbour rule against PyTorch and the blur against scipy and PyTorch."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.ndimage
import torch
import torch.nn.functional as F

from deepgaze_jax.finalizer import blur_matrix, gaussian_blur, saliency_grid
from deepgaze_jax.resize import downscale_nearest, nearest_indices, resize_nearest
from tests.torch_reference import gaussian_blur as torch_blur

SIZES = [1, 2, 3, 7, 8, 24, 33, 96, 97, 192, 255, 256, 768, 1023, 1024]


def torch_indices(n_in, **kwargs):
    x = torch.arange(n_in, dtype=torch.float64).view(1, 1, n_in)
    return F.interpolate(x, mode="nearest", **kwargs)[0, 0].numpy().astype(np.int64)


@pytest.mark.parametrize("n_in", SIZES)
def test_resize_to_size_matches_torch_index_for_index(n_in):
    for n_out in SIZES:
        np.testing.assert_array_equal(nearest_indices(n_in, n_out), torch_indices(n_in, size=n_out),
                                      err_msg=f"{n_in} -> {n_out}")


@pytest.mark.parametrize("factor", [2, 4, 16])
def test_downscale_by_factor_matches_torch(factor):
    for n_in in SIZES:
        if n_in < factor:
            continue
        expected = torch_indices(n_in, scale_factor=1 / factor, recompute_scale_factor=False)
        assert len(expected) == math.floor(n_in / factor)
        np.testing.assert_array_equal(nearest_indices(n_in, len(expected), scale=factor), expected)


def test_resize_arrays_match_torch_on_odd_and_even_shapes():
    rng = np.random.RandomState(0)
    x = rng.randn(2, 37, 50, 3).astype(np.float32)
    xt = torch.from_numpy(x).permute(0, 3, 1, 2)
    for size in [(74, 100), (19, 25), (37, 51), (12, 13), (100, 31)]:
        expected = F.interpolate(xt, size=size).permute(0, 2, 3, 1).numpy()
        np.testing.assert_array_equal(np.asarray(resize_nearest(jnp.asarray(x), size)), expected)
    expected = F.interpolate(xt, scale_factor=1 / 4, recompute_scale_factor=False).permute(0, 2, 3, 1).numpy()
    np.testing.assert_array_equal(np.asarray(downscale_nearest(jnp.asarray(x), 4)), expected)


def test_jax_image_resize_differs_which_is_why_we_gather():
    x = jnp.arange(8.0)
    ours = resize_nearest(x[:, None, None], (4, 1))[:, 0, 0]
    theirs = jax.image.resize(x, (4,), "nearest")
    np.testing.assert_array_equal(ours, [0, 2, 4, 6])
    assert not np.array_equal(ours, theirs)


@pytest.mark.parametrize("sigma", [0.3, 1.0, 2.5, 8.0, 13.7])
def test_blur_matches_scipy_with_the_same_truncation(sigma):
    x = np.random.RandomState(0).randn(3, 48, 67)
    radius = math.ceil(3 * sigma)
    # scipy's radius is int(truncate * sigma + 0.5); this truncate gives exactly ceil(3 sigma).
    expected = scipy.ndimage.gaussian_filter(x, sigma=(0, sigma, sigma), mode="nearest", truncate=radius / sigma)
    ours = gaussian_blur(jnp.asarray(x, jnp.float32), jnp.float32(sigma), max_radius=64)
    np.testing.assert_allclose(np.asarray(ours), expected, atol=1e-5)


def test_blur_wider_than_the_image_folds_edges_exactly():
    sigma = 9.0  # radius 27 on a 10-pixel axis
    x = np.random.RandomState(1).randn(1, 10, 12).astype(np.float32)
    expected = torch_blur(torch.from_numpy(x)[:, None], torch.tensor(sigma))[:, 0].numpy()
    ours = gaussian_blur(jnp.asarray(x), jnp.float32(sigma), max_radius=30)
    np.testing.assert_allclose(np.asarray(ours), expected, atol=1e-6)


def test_blur_preserves_constants_and_is_differentiable_in_sigma():
    m = blur_matrix(20, jnp.float32(4.0), 16)
    np.testing.assert_allclose(m.sum(axis=1), 1.0, atol=1e-6)
    x = jnp.asarray(np.random.RandomState(2).randn(20, 20), jnp.float32)
    grad = jax.grad(lambda s: gaussian_blur(x, s, 16)[5, 5])(jnp.float32(2.0))
    assert np.isfinite(grad) and grad != 0


@pytest.mark.parametrize(("small", "size"), [((6, 8), (48, 64)), ((7, 5), (30, 41)), ((24, 32), (20, 30))])
@pytest.mark.parametrize("sigma", [0.7, 4.0, 11.0])
def test_upsampling_folded_into_the_blur_equals_upsampling_then_blurring(small, size, sigma):
    x = jnp.asarray(np.random.RandomState(3).randn(2, *small), jnp.float32)
    upsampled = resize_nearest(x, size, axes=(-2, -1))
    expected = gaussian_blur(upsampled, jnp.float32(sigma), max_radius=40)
    ours = gaussian_blur(x, jnp.float32(sigma), max_radius=40, size=size)
    np.testing.assert_allclose(np.asarray(ours), np.asarray(expected), atol=2e-6)
    scipy_radius = math.ceil(3 * sigma)
    reference = scipy.ndimage.gaussian_filter(np.asarray(upsampled, np.float64), sigma=(0, sigma, sigma),
                                              mode="nearest", truncate=scipy_radius / sigma)
    np.testing.assert_allclose(np.asarray(ours), reference, atol=2e-5)


def test_saliency_grid_folds_both_readout_resizes_like_the_reference():
    """The readout goes features grid -> readout grid -> saliency grid, two nearest resizes."""
    rng = np.random.RandomState(4)
    readout = jnp.asarray(rng.randn(1, 5, 7), jnp.float32)
    centerbias = jnp.asarray(rng.randn(1, 75, 101), jnp.float32)
    sigma, weight = jnp.float32(2.5), jnp.float32(0.7)
    ours = saliency_grid(readout, centerbias, sigma, weight, 2, 20, readout_shape=(10, 13))
    staged = resize_nearest(resize_nearest(readout, (10, 13), axes=(-2, -1)), (37, 50), axes=(-2, -1))
    expected = saliency_grid(staged, centerbias, sigma, weight, 2, 20)
    np.testing.assert_allclose(np.asarray(ours), np.asarray(expected), atol=2e-5)


def test_blur_matrix_rejects_indices_outside_the_source():
    with pytest.raises(ValueError, match="source_index"):
        blur_matrix(10, jnp.float32(1.0), 4, np.arange(10), source_length=5)
