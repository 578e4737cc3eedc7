"""Shared test fixtures.

The real MIT1003 data lives beside the repository in ``../shared/data`` (override with the
``DEEPGAZE_DATA_DIR`` environment variable). Tests that need it skip with a clear message where it is
absent; CI has it.
"""

import os
import pathlib

# Strict JAX, as equinox tests: no implicit rank promotion, no implicit dtype promotion. Set in the
# environment before jax is imported, so that subprocesses (the CLI tests) run strict too.
os.environ["JAX_NUMPY_RANK_PROMOTION"] = "raise"
os.environ["JAX_NUMPY_DTYPE_PROMOTION"] = "strict"
# The CLI's persistent compilation cache stays off in tests (tests/test_compile_cache.py turns it on in
# its own subprocesses), so no test reads what an earlier run compiled, nor writes to ~/.cache.
os.environ["DEEPGAZE_COMPILATION_CACHE"] = "off"

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def data_dir() -> pathlib.Path:
    return pathlib.Path(os.environ.get("DEEPGAZE_DATA_DIR", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def mit1003_dir() -> pathlib.Path:
    path = data_dir() / "MIT1003"
    if not (path / "STIMULI").is_dir():
        pytest.skip(f"MIT1003 not found at {path}; set DEEPGAZE_DATA_DIR to the folder holding MIT1003/")
    return path


@pytest.fixture(scope="session")
def osie_dir() -> pathlib.Path:
    path = data_dir() / "OSIE"
    if not (path / "fixations.csv").is_file():
        pytest.skip(f"OSIE not found at {path}; set DEEPGAZE_DATA_DIR to the folder holding OSIE/")
    return path


@pytest.fixture(scope="session")
def predictor_file(tmp_path_factory) -> pathlib.Path:
    """A DeepGaze I predictor file with two random heads and a generic Gaussian center bias.

    Stands in for the trained ``deepgaze1`` readouts where a test needs the code paths, not the
    trained values; it works whether or not the shipped file exists.
    """
    import jax
    import numpy as np

    from deepgaze_jax.model import deepgaze1
    from deepgaze_jax.baselines import CenterBias
    from deepgaze_jax.predict import save_predictor_heads

    model = deepgaze1()
    path = tmp_path_factory.mktemp("predictor") / "random_heads.safetensors"
    heads = [model.init_head(jax.random.PRNGKey(k)) for k in range(2)]
    save_predictor_heads(path, model, heads, CenterBias.gaussian(), {"note": "random heads for tests"})
    return path
