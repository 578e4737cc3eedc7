"""The fixation log-likelihood module: tiny cases by hand, its array and host forms agree, no import of metrics."""

import math
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from deepgaze_jax import likelihood


def test_bits_relative_to_uniform_by_hand_for_scalar_and_array_sizes():
    log_p = np.log(np.array([[0.4, 0.25], [0.1, 0.05]], np.float32))
    # 0.4 on a 2x2 image is 1.6 times uniform; 0.1 on a 2x5 image is exactly uniform.
    np.testing.assert_allclose(likelihood.bits_relative_to_uniform(log_p[0], 2, 2), [math.log2(1.6), 0.0], atol=1e-6)
    sizes = np.array([[2, 2], [2, 5]], np.int32)
    by_array = likelihood.bits_relative_to_uniform(jnp.asarray(log_p), sizes[:, 0:1], sizes[:, 1:2])
    np.testing.assert_allclose(by_array, [[math.log2(1.6), 0.0], [0.0, -1.0]], atol=1e-6)
    np.testing.assert_array_equal(by_array[0], likelihood.bits_relative_to_uniform(jnp.asarray(log_p[0]), 2, 2))
    assert likelihood.LN2 == math.log(2.0)


def test_bits_at_reads_the_truncated_pixel_on_the_host():
    log_density = np.log(np.array([[0.1, 0.2], [0.3, 0.4]], np.float32))
    bits = likelihood.bits_at(log_density, np.array([1.9, 0.0]), np.array([1.2, 0.7]))
    assert bits.dtype == np.float32
    np.testing.assert_allclose(bits, [math.log2(1.6), math.log2(0.4)], atol=1e-6)


def test_log_likelihood_and_masked_mean_by_hand():
    log_density = jnp.log(jnp.array([[[0.1, 0.2], [0.3, 0.4]]] * 2))
    xs = jnp.array([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    ys = jnp.array([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    mask = jnp.array([[True, True, False], [False, False, False]])
    bits, counts = likelihood.log_likelihood(log_density, xs, ys, mask)
    np.testing.assert_allclose(bits, [(math.log2(1.6) + math.log2(0.4)) / 2, 0.0], atol=1e-6)
    np.testing.assert_array_equal(counts, [2, 0])
    np.testing.assert_allclose(likelihood.masked_mean(jnp.array([[1.0, 3.0, 100.0]]), mask[:1]), [2.0])


def test_ensemble_bits_average_densities():
    one = [np.array([1.0, -1.0], np.float32)]
    other = [np.array([3.0, -1.0], np.float32)]
    [mixed] = likelihood.ensemble_bits([one, other])
    np.testing.assert_allclose(mixed, [math.log2((2 ** 1 + 2 ** 3) / 2), -1.0], rtol=1e-6)
    np.testing.assert_allclose(likelihood.ensemble_bits([one, one])[0], one[0], rtol=1e-6)


def test_summaries_per_fixation_and_per_image():
    bits = [np.array([1.0, 2.0, 3.0]), np.zeros(0), np.array([5.0])]
    assert likelihood.average_bits(bits, "fixation") == 11 / 4
    assert likelihood.average_bits(bits, "image") == (2.0 + 5.0) / 2
    means = likelihood.image_means(bits)
    np.testing.assert_array_equal(means, [2.0, 0.0, 5.0])
    counts = [len(b) for b in bits]
    assert likelihood.average(means, counts, "fixation") == 11 / 4
    assert likelihood.average(means, counts, "image") == (2.0 + 5.0) / 2
    with pytest.raises(ValueError, match="per must be 'fixation' or 'image'"):
        likelihood.average(means, counts, "dataset")


def test_likelihood_does_not_import_metrics_or_the_model():
    code = "import sys, deepgaze_jax.likelihood; print(sorted(m for m in sys.modules if m in " \
           "('deepgaze_jax.metrics', 'deepgaze_jax.model')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
