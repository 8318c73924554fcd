"""Assertions shared by the test modules."""
import numpy as np


def assert_close(got, want, tol, what=""):
    """|got - want| <= tol * (|want| + max|want|) elementwise (relative to the array's scale)."""
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    scale = max(np.abs(want).max(initial=0.0), 1e-3)
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * scale, err_msg=what)
