"""Bridges to other saliency toolkits (optional extras).

* :mod:`deepgaze_jax.interop.pysaliency`: our predictors as pysaliency models, and datasets both ways
  (needs ``pip install deepgaze-jax[pysaliency]``).
"""
