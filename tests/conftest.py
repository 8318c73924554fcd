"""Shared pytest configuration for the rnnx test suite."""
import pytest

import rnnx


@pytest.fixture(autouse=True)
def _restore_rnnx_globals():
    """Give every test the thread count and RNG state it started with, whatever it changes."""
    threads = rnnx.get_num_threads()
    state = rnnx.get_rng_state()
    yield
    rnnx.set_num_threads(threads)
    rnnx.set_rng_state(state)
