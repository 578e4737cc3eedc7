"""pysaliency as the reference for our metrics: import shims and adapters from arrays to its objects.

Used by ``tests/test_metrics.py`` and ``experiments/metrics_speed.py``. pysaliency is imported through
:func:`deepgaze_jax.interop.pysaliency.import_pysaliency`, which patches what 0.2.22 needs on current
installs (``np.trapz``, ``pkg_resources``) and nothing else.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from deepgaze_jax.interop.pysaliency import import_pysaliency

pysaliency = import_pysaliency()  # with the package's shims (np.trapz, pkg_resources)
from pysaliency.datasets import ObjectStimuli, Stimulus  # noqa: E402


class _SizedStimulus(Stimulus):
    """A stimulus known by its index and size only; the image data is a tiny unique array, built lazily
    with the full (H, W) shape only where pysaliency asks for it (FixationMap hashes it)."""

    def __init__(self, index: int, size: tuple[int, int]):
        super().__init__(None, stimulus_id=None, shape=(int(size[0]), int(size[1]), 3), size=(int(size[0]), int(size[1])))
        self.index = index

    @property
    def stimulus_data(self):
        return np.broadcast_to(np.int32(self.index), self._shape)

    @stimulus_data.setter
    def stimulus_data(self, value):
        pass

    @property
    def stimulus_id(self):
        if self._stimulus_id is None:
            self._stimulus_id = pysaliency.datasets.get_image_hash(self.stimulus_data)
        return self._stimulus_id


def make_stimuli(sizes: Sequence[tuple[int, int]]) -> ObjectStimuli:
    """pysaliency stimuli of the given (H, W) sizes that never hold image data."""
    return ObjectStimuli([_SizedStimulus(n, size) for n, size in enumerate(sizes)])


def make_fixations(xs, ys, ns) -> pysaliency.Fixations:
    return pysaliency.Fixations.create_without_history(np.asarray(xs, float), np.asarray(ys, float), np.asarray(ns, int))


def _index(stimulus) -> int:
    """Our stimuli's data is their index broadcast to the image shape; derived models pass the data."""
    if isinstance(stimulus, _SizedStimulus):
        return stimulus.index
    if isinstance(stimulus, Stimulus):
        stimulus = stimulus.stimulus_data
    return int(np.asarray(stimulus).flat[0])


class ArrayModel(pysaliency.Model):
    """A pysaliency model whose log density for image n is ``get(n)``."""

    def __init__(self, get: Callable[[int], np.ndarray]):
        super().__init__(caching=False)
        self.get = get

    def log_density(self, stimulus):
        return np.asarray(self.get(_index(stimulus)), dtype=np.float64)

    def _log_density(self, stimulus):
        raise NotImplementedError


class ArraySaliencyMapModel(pysaliency.SaliencyMapModel):
    """A pysaliency saliency map model whose map for image n is ``get(n)``."""

    def __init__(self, get: Callable[[int], np.ndarray]):
        super().__init__(caching=False)
        self.get = get

    def saliency_map(self, stimulus):
        return np.asarray(self.get(_index(stimulus)), dtype=np.float64)

    def _saliency_map(self, stimulus):
        raise NotImplementedError
