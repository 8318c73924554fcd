"""Prints the kernel levels of the installed rnnx that this CPU runs (for a shell loop), after
checking that the installed build holds `expected` levels (argv[1:], e.g. baseline avx2 avx512:
the wheel carries them all)."""
import sys

from rnnx._kernels import _recurrent
from rnnx._kernels._cpu import supported_levels

expected = tuple(sys.argv[1:])
compiled = _recurrent.compiled_levels()
if expected and compiled != expected:
    sys.exit(f"installed rnnx holds kernel levels {compiled}, expected {expected}")
print(*[level for level in supported_levels() if level in compiled])
