import jax
import pytest


@pytest.fixture(autouse=True)
def _key_reuse_checks():
    """STYLE.md 7: every test runs with JAX's key-reuse checker on."""
    with jax.debug_key_reuse(True):
        yield
