"""The kernel layer's one import point: the recurrent kernels of _recurrent.pxi, built for the
best instruction-set level this CPU runs (as NumPy's own dispatch does), with the constants,
cell kinds and layout of _layout and the fingerprint of _fingerprint (compiled once).

setup.py compiles _recurrent.pxi once per level into _recurrent_<level> (on x86-64:
baseline = x86-64-v2, avx2 = x86-64-v3, avx512 = x86-64-v4; elsewhere baseline alone), or
into _recurrent_local alone for a local RNNX_MARCH build. This module imports the best level
that is both built and supported by the CPU (CPUID, _cpu.pyx), or the one the environment
variable RNNX_CPU_LEVEL names, and re-exports its public names. Within a level, results are
bitwise the same for any thread count; across levels they differ in rounding (FMA, vector
width of the reductions).
"""
import importlib
import importlib.util
import os

from . import _fingerprint, _layout
from ._cpu import supported_levels

LEVELS = ("baseline", "avx2", "avx512", "local")


def compiled_levels():
    """The levels this build of rnnx holds, in LEVELS order."""
    return tuple(level for level in LEVELS
                 if importlib.util.find_spec(f"{__package__}._recurrent_{level}") is not None)


def choose_level(requested, compiled, supported):
    """The level to import: `requested` (RNNX_CPU_LEVEL; "" for the best) among the
    `compiled` ones that the CPU runs (`supported`; a local build is for this machine)."""
    runnable = [level for level in compiled if level in supported or level == "local"]
    if requested:
        if requested not in LEVELS:
            raise ValueError(f"RNNX_CPU_LEVEL={requested!r}: expected one of "
                             f"{', '.join(LEVELS[:-1])} (or local), or unset for the best")
        if requested not in compiled:
            raise RuntimeError(f"RNNX_CPU_LEVEL={requested!r}: this build of rnnx has no such "
                               f"kernels (built: {', '.join(compiled) or 'none'})")
        if requested not in runnable:
            raise RuntimeError(f"RNNX_CPU_LEVEL={requested!r}: this CPU does not support it "
                               f"(it runs: {', '.join(supported) or 'none'})")
        return requested
    if not runnable:
        raise RuntimeError(f"rnnx: no kernels for this CPU (built: {', '.join(compiled) or 'none'}"
                           f"; the CPU runs: {', '.join(supported) or 'none of them'})")
    return runnable[-1]


level = choose_level(os.environ.get("RNNX_CPU_LEVEL", ""), compiled_levels(), supported_levels())
_impl = importlib.import_module(f"{__package__}._recurrent_{level}")
_public = {name: getattr(module, name) for module in (_layout, _fingerprint, _impl)
           for name in dir(module) if not name.startswith("_")}
__all__ = sorted(_public)
globals().update(_public)
