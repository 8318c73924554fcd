"""The GEMM backend of the kernels: rnnx.set_gemm_backend / get_gemm_backend (env RNNX_GEMM).

"microkernel": every product through the register-blocked micro-GEMM of microgemm.h (the
weights packed once per call); "blas": every product through scipy.linalg.cython_blas
(sgemm/dgemm, one single-threaded call per fixed block, so results stay bitwise the same for
any thread count); "auto" (the default): per product, whichever measured faster here (README,
"GEMM backends"). The backends differ in rounding, not in what they compute.
"""
import os

from ._kernels import _recurrent

_BACKENDS = {"auto": _recurrent.GemmBackend.GEMM_AUTO, "blas": _recurrent.GemmBackend.GEMM_BLAS,
             "microkernel": _recurrent.GemmBackend.GEMM_MICROKERNEL}


def set_gemm_backend(backend):
    """Run the kernels' matrix products through `backend`: "auto", "blas" or "microkernel"."""
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a str, got {type(backend).__name__}")
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be one of 'auto', 'blas', 'microkernel', got {backend!r}")
    _recurrent.set_gemm_backend(_BACKENDS[backend])


def get_gemm_backend():
    """The GEMM backend in use: "auto", "blas" or "microkernel"."""
    code = int(_recurrent.get_gemm_backend())
    return next(name for name, value in _BACKENDS.items() if value == code)


def _from_environment():
    backend = os.environ.get("RNNX_GEMM", "")
    if backend:
        try:
            set_gemm_backend(backend)
        except ValueError:
            raise ValueError(f"RNNX_GEMM={backend!r}: expected 'auto', 'blas' or "
                             "'microkernel'") from None


_from_environment()
