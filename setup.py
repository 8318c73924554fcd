"""Build the Cython kernels of rnnx.

Global Cython directives: bounds and wraparound checks off, C division on.
Set RNNX_DEBUG=1 at build time to turn the checks back on (and -O0 -g).
OpenMP is used when the compiler supports it; the build succeeds without it.
The kernels are compiled for the building machine's CPU (-march=native, so that the gate
loops use its widest SIMD); set RNNX_MARCH to another -march value, or to "" for the
compiler's default target (e.g. when building a wheel for other machines).
"""
import os
import sys
import tempfile
import subprocess

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

DEBUG = os.environ.get("RNNX_DEBUG", "0") not in ("", "0")

DIRECTIVES = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": not DEBUG,
    "nonecheck": DEBUG,
    "embedsignature": True,
}

KERNELS = ["_blas", "_recurrent"]


MARCH = os.environ.get("RNNX_MARCH", "native")


def _compiler_accepts(compiler_cmd, flags, src="int main(void){return 0;}\n"):
    """True when `compiler_cmd flags` compiles and links a tiny C program."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "t.c")
        with open(path, "w") as f:
            f.write(src)
        try:
            res = subprocess.run(compiler_cmd + flags + [path, "-o", os.path.join(tmp, "t")],
                                 capture_output=True)
        except OSError:
            return False
        return res.returncode == 0


class BuildExt(build_ext):
    """Adds -fopenmp and -march to every extension when the compiler supports them."""

    def build_extensions(self):
        cc = list(self.compiler.compiler_so[:1]) if hasattr(self.compiler, "compiler_so") else ["cc"]
        omp_src = "#include <omp.h>\nint main(void){return omp_get_max_threads() > 0 ? 0 : 1;}\n"
        use_openmp = sys.platform != "win32" and _compiler_accepts(cc, ["-fopenmp"], omp_src)
        march = [f"-march={MARCH}"] if MARCH and _compiler_accepts(cc, [f"-march={MARCH}"]) else []
        for ext in self.extensions:
            ext.extra_compile_args.extend(march)
            if use_openmp:
                ext.extra_compile_args.append("-fopenmp")
                ext.extra_link_args.append("-fopenmp")
            ext.define_macros.append(("RNNX_OPENMP", "1" if use_openmp else "0"))
        super().build_extensions()


def extension(name):
    opt = ["-O0", "-g"] if DEBUG else ["-O3"]
    return Extension(
        f"rnnx._kernels.{name}",
        [f"rnnx/_kernels/{name}.pyx"],
        include_dirs=[np.get_include(), "rnnx/_kernels"],
        depends=["rnnx/_kernels/vmath.h", "rnnx/_kernels/gates.h", "rnnx/_kernels/team.h",
                 "rnnx/_kernels/microgemm.h", "rnnx/_kernels/_blas.pxd",
                 "rnnx/_kernels/_wavefront.pxi", "rnnx/_kernels/microgemm512.h"],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        # No -ffast-math: vmath.h relies on IEEE rounding. Not trapping lets gcc vectorize
        # the branch-free selects in the gate loops.
        extra_compile_args=opt + ["-fno-math-errno", "-fno-trapping-math"],
    )


setup(
    ext_modules=cythonize([extension(n) for n in KERNELS], compiler_directives=DIRECTIVES,
                          compile_time_env={"RNNX_DEBUG": DEBUG}),
    cmdclass={"build_ext": BuildExt},
)
