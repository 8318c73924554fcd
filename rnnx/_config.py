"""rnnx.show_config(): what this rnnx was built with and runs on, as numpy.show_config()."""
import os

from threadpoolctl import ThreadpoolController

from . import _threads
from ._backend import get_gemm_backend
from ._kernels import _recurrent
from ._kernels._cpu import supported_levels
from ._version import __version__


def _pool(info):
    """The parts of a threadpoolctl info dict worth showing (those it knows)."""
    return {key: info[key] for key in ("internal_api", "version", "threading_layer",
                                       "architecture", "num_threads")
            if info.get(key) is not None}


def config():
    """The configuration as a dict of dicts (see show_config)."""
    pools = ThreadpoolController()
    scipy_paths = {lib.filepath for lib in _threads._scipy_blas.lib_controllers}
    numpy_paths = {lib.filepath for lib in _threads._numpy_blas.lib_controllers}
    blas = {}
    for info in pools.select(user_api="blas").info():
        who = ("scipy (the kernels')" if info["filepath"] in scipy_paths else
               "numpy" if info["filepath"] in numpy_paths else "other")
        blas[f"{who}: {info['filepath']}"] = _pool(info)
    return {
        "rnnx": {"version": __version__},
        "kernels": {
            "level": _recurrent.level,
            "flags": _recurrent.BUILD_FLAGS or "(the compiler's default target)",
            "forced by RNNX_CPU_LEVEL": bool(os.environ.get("RNNX_CPU_LEVEL")),
            "compiled": list(_recurrent.compiled_levels()),
            "this CPU runs": list(supported_levels()),
            "gemm backend": get_gemm_backend(),
        },
        "threads": {"rnnx.get_num_threads()": _threads.get_num_threads()},
        "blas": blas,
        "openmp": {info["filepath"]: _pool(info)
                   for info in pools.select(user_api="openmp").info()},
    }


def show_config(mode="stdout"):
    """Print the rnnx version, the kernel level chosen (and its -march flags, those compiled,
    those this CPU runs), the GEMM backend, rnnx's thread count, the BLAS libraries (scipy's, which the kernels
    call, and numpy's: version, threading layer, threads) and the OpenMP runtime, from
    threadpoolctl. mode="dicts" returns them as a dict instead of printing."""
    if mode not in ("stdout", "dicts"):
        raise ValueError(f"mode must be 'stdout' or 'dicts', got {mode!r}")
    cfg = config()
    if mode == "dicts":
        return cfg
    for section, entries in cfg.items():
        print(f"{section}:")
        if not entries:
            print("  (none loaded)")
        for key, value in entries.items():
            if isinstance(value, dict):
                print(f"  {key}")
                print("    " + ", ".join(f"{k}: {v}" for k, v in value.items()))
            else:
                print(f"  {key}: {', '.join(value) if isinstance(value, list) else value}")
