"""Shared fixtures: the backend under test comes from GRAPHC_BACKEND (CI runs both)."""
import os

import numpy as np
import pytest


@pytest.fixture(autouse=True)
def _fresh_layer_seeds():
    """Layers built without seed= draw from graphc's generator: restart it per test, so a test's
    models do not depend on which tests ran before it."""
    import graphc
    graphc.manual_seed(0)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def numeric_grad(f, x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central finite differences of a scalar function f at x (float64)."""
    x = np.array(x, dtype=np.float64)
    g = np.zeros_like(x)
    flat, gflat = x.reshape(-1), g.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        up = f(x)
        flat[i] = old - eps
        down = f(x)
        flat[i] = old
        gflat[i] = (up - down) / (2 * eps)
    return g


# Hypothesis: CI and the README's test command are deterministic (derandomised, no example
# database, so one failure cannot poison later runs); HYPOTHESIS_PROFILE=explore draws new
# random examples for local exploration (graphc fuzz always draws its own, from --seed).
try:
    from hypothesis import settings as _hsettings

    _hsettings.register_profile("ci", derandomize=True, database=None, deadline=None, print_blob=True)
    _hsettings.register_profile("explore", derandomize=False, database=None, deadline=None, print_blob=True)
    _hsettings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
except ImportError:  # pragma: no cover - hypothesis is in the test extra
    pass
