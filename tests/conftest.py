import jax
import pytest


@pytest.fixture(autouse=True)
def _key_reuse_checks():
    """STYLE.md 7: every test runs with JAX's key-reuse checker on."""
    with jax.debug_key_reuse(True):
        yield


@pytest.fixture
def svg_backend():
    """matplotlib on the svg backend for one test, which asserts that a library plot left it so
    (a helper that called ``matplotlib.use("Agg")`` would hide a notebook's figures)."""
    import matplotlib

    before = matplotlib.get_backend()
    matplotlib.use("svg", force=True)
    yield
    matplotlib.use(before, force=True)
