"""Each kind of product of the kernels (rnnx/_kernels/_gemm.pxi: the time loop's step GEMM,
the whole-sequence products, the weight gradients) against its NumPy twin, under every GEMM
backend, both dtypes and shapes that cross the panel width, the BLAS tiles, the row blocks and
the k chunks; and bitwise the same for 1 and 2 threads."""
import numpy as np
import pytest

from rnnx._kernels._recurrent import (CONSTANTS, GemmBackend, sequence_product, step_product,
                                      weight_gradient)

BACKENDS = [GemmBackend.GEMM_AUTO, GemmBackend.GEMM_BLAS, GemmBackend.GEMM_MICROKERNEL]
DTYPES = [np.float32, np.float64]


def tolerance(dtype, k):
    return dict(rtol=0, atol=(2e-6 if dtype == np.float32 else 1e-14) * k)


def operands(rng, dtype, *shapes):
    return [rng.standard_normal(s).astype(dtype) for s in shapes]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m, n, k", [(1, 1, 1), (3, 17, 5), (6, 16, 28), (7, 100, 33),
                                     (CONSTANTS["BLAS_ROWS"] + 5, CONSTANTS["BLAS_COLS"] + 9, 40),
                                     (200, 48, 64)])
@pytest.mark.parametrize("accumulate", [False, True])
def test_step_product(backend, dtype, m, n, k, accumulate):
    rng = np.random.default_rng(m * 1000 + n + k)
    a, b, c = operands(rng, dtype, (m, k), (k, n), (m, n))
    expected = (c.astype(np.float64) if accumulate else 0) + a.astype(np.float64) @ b
    step_product(a, b, c, backend, accumulate)
    np.testing.assert_allclose(c, expected, **tolerance(dtype, k))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("m, n, k", [(5, 9, 3), (CONSTANTS["SEQUENCE_ROWS"] * 2 + 7, 70, 20)])
def test_sequence_product(backend, dtype, transposed, m, n, k):
    rng = np.random.default_rng(m + n + k)
    a, w, c = operands(rng, dtype, (m, k), (n, k) if transposed else (k, n), (m, n))
    b = w.T if transposed else w
    results = []
    for threads in (1, 2):
        for accumulate in (False, True):
            out = c.copy()
            sequence_product(a, w, out, backend, transposed, accumulate, threads)
            expected = (c.astype(np.float64) if accumulate else 0) + a.astype(np.float64) @ b
            np.testing.assert_allclose(out, expected, **tolerance(dtype, k))
            results.append(out)
    assert np.array_equal(results[0], results[2]) and np.array_equal(results[1], results[3])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m, n, k", [(4, 3, 2), (3 * CONSTANTS["WEIGHT_GRAD_ROWS"] + 1, 21,
                                                 2 * CONSTANTS["K_CHUNK"] + 9)])
def test_weight_gradient(backend, dtype, m, n, k):
    rng = np.random.default_rng(m + n + k)
    a, b, c, acc = operands(rng, dtype, (k, m), (k, n), (m, n), (m,))
    results = []
    for threads in (1, 2):
        out, out_acc = c.copy(), acc.copy()
        weight_gradient(a, b, out, out_acc, backend, threads)
        np.testing.assert_allclose(out, c + a.astype(np.float64).T @ b, **tolerance(dtype, k))
        np.testing.assert_allclose(out_acc, acc + a.astype(np.float64).sum(0),
                                   **tolerance(dtype, k))
        results.append((out, out_acc))
    assert all(np.array_equal(x, y) for x, y in zip(*results))


@pytest.mark.parametrize("call, match", [
    (lambda a: step_product(a, np.ones((4, 2), np.float32), np.ones((3, 2), np.float32), 0),
     r"a is \(3, 5\), b is \(4, 2\)"),
    (lambda a: step_product(a, np.ones((5, 2), np.float32), np.ones((3, 3), np.float32), 0),
     r"expected c of shape \(3, 2\), got \(3, 3\)"),
    (lambda a: sequence_product(a, np.ones((2, 4), np.float32), np.ones((3, 2), np.float32), 0,
                                True), r"a is \(3, 5\), w is \(2, 4\)"),
    (lambda a: weight_gradient(a, np.ones((3, 2), np.float32), np.ones((5, 2), np.float32),
                               np.ones(4, np.float32), 0), r"acc is \(4,\)"),
])
def test_mismatched_operands_are_refused(call, match):
    with pytest.raises(ValueError, match=match):
        call(np.ones((3, 5), np.float32))


def test_the_reference_and_bench_count_gates_as_the_kernels():
    """rnnx._reference and bench keep NUM_GATES of their own (they run without the kernels):
    the same as the kernels' one home, _layout."""
    import importlib.util
    import os

    from rnnx import _reference
    from rnnx._kernels._layout import NUM_GATES_BY_NAME
    assert _reference.NUM_GATES == NUM_GATES_BY_NAME
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench",
                        "_cases.py")
    spec = importlib.util.spec_from_file_location("_bench_cases", path)
    cases = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cases)
    assert cases.NUM_GATES == NUM_GATES_BY_NAME
