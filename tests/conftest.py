"""Shared pytest configuration for the rnnx test suite."""
import pytest

import rnnx


@pytest.fixture(autouse=True)
def _restore_rnnx_globals():
    """Give every test the thread count, RNG state and GEMM backend it started with, whatever
    it changes."""
    threads = rnnx.get_num_threads()
    state = rnnx.get_rng_state()
    backend = rnnx.get_gemm_backend()
    yield
    rnnx.set_num_threads(threads)
    rnnx.set_rng_state(state)
    rnnx.set_gemm_backend(backend)


@pytest.fixture(scope="module")
def one_kernel_thread():
    """Run a module's tests on one kernel thread.

    Results are bitwise independent of the thread count (test_rnn.py checks 1 vs 2 threads on
    every mode, with row blocks and lengths), and for tiny problems parallel regions only add
    overhead -- a great deal of it on a loaded machine.
    """
    saved = rnnx.get_num_threads()
    rnnx.set_num_threads(1)
    yield
    rnnx.set_num_threads(saved)
