"""Build the Cython kernels of rnnx.

Global Cython directives: bounds and wraparound checks off, C division on.
Set RNNX_DEBUG=1 at build time to turn the checks back on (and -O0 -g).
The kernels' threads are their own pool (rnnx/_kernels/team.h, POSIX threads; no OpenMP, so
that rnnx never shares or configures another library's OpenMP runtime); without POSIX threads
(Windows) the kernels run on the calling thread.
The recurrent kernels (_recurrent.pxi and the pieces it includes) are compiled once per
instruction-set level, each into its own module _recurrent_<level> (a one-line .pyx that
includes the shared source, generated here at build time, not kept in git):
on x86-64 baseline (-march=x86-64-v2: SSE4.2), avx2 (x86-64-v3: AVX2, FMA) and avx512
(x86-64-v4), each where the compiler accepts it; on aarch64 baseline alone (-march=armv8-a:
NEON); elsewhere baseline alone, for the compiler's default target.
rnnx._kernels._recurrent imports the best one the CPU runs, so one wheel runs fast anywhere.
What does not depend on the ISA (_layout: constants and layout; _fingerprint; _cpu; _blas)
is compiled once, with the first level's flags (_cpu with none: it must run on any CPU).
RNNX_MARCH=native (or another -march value, or "" for the compiler's default) builds a
single level, "local", for that target instead: the quickest local build.
Set RNNX_SANITIZE to a list of sanitizers (e.g. "address,undefined") for an instrumented
build (-O1 -g, frame pointers, every error fatal); Python itself is not instrumented, so
run it with the ASan runtime preloaded (.ci/sanitize shows how).
"""
import glob
import os
import platform
import sys
import tempfile
import subprocess

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

DEBUG = os.environ.get("RNNX_DEBUG", "0") not in ("", "0")
SANITIZE = os.environ.get("RNNX_SANITIZE", "")

DIRECTIVES = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": not DEBUG,
    "nonecheck": DEBUG,
    "embedsignature": True,
}

# The kernel levels of each architecture and their -march flags; another architecture builds
# one baseline for the compiler's default target. aarch64's baseline is ARMv8.0-A (NEON, which
# every aarch64 CPU has). tests/c/run_checks.py reads these two literals (with ast), so that the
# C tests of the kernels' headers build them as the kernels are built, for aarch64 too.
LEVEL_FLAGS = {
    "x86_64": {"baseline": ["-march=x86-64-v2"], "avx2": ["-march=x86-64-v3"],
               "avx512": ["-march=x86-64-v4"]},
    "aarch64": {"baseline": ["-march=armv8-a"]},
}
# No -ffast-math: vmath.h relies on IEEE rounding. Not trapping lets gcc vectorize the
# branch-free selects in the gate loops.
KERNEL_FLAGS = ["-fno-math-errno", "-fno-trapping-math"]

MACHINE = {"amd64": "x86_64", "arm64": "aarch64"}.get(platform.machine().lower(),
                                                      platform.machine().lower())
MARCH = os.environ.get("RNNX_MARCH")
if MARCH is not None:
    LEVELS = {"local": [f"-march={MARCH}"] if MARCH else []}
else:
    LEVELS = LEVEL_FLAGS.get(MACHINE, {"baseline": []})


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
    """Adds -pthread to every extension and each level's -march flags to its kernels when the
    compiler supports them (a level it does not is left out, except the first, which is then
    built for the compiler's default target); builds the extensions in parallel."""

    def finalize_options(self):
        super().finalize_options()
        if self.parallel is None:
            self.parallel = os.cpu_count() or 1

    def build_extensions(self):
        cc = list(self.compiler.compiler_so[:1]) if hasattr(self.compiler, "compiler_so") else ["cc"]
        use_pthread = sys.platform != "win32" and _compiler_accepts(cc, ["-pthread"])
        kept = []
        for ext in self.extensions:
            level = ext.name.rpartition("_recurrent_")[2] if "._recurrent_" in ext.name else None
            if level is None and ext.name in ONCE_AT_FIRST_LEVEL:
                flags = next(iter(LEVELS.values()))
                ext.extra_compile_args.extend(flags if _compiler_accepts(cc, flags) else [])
            if level is not None:
                flags = LEVELS[level]
                if not _compiler_accepts(cc, flags):
                    if level != next(iter(LEVELS)):
                        print(f"rnnx: {cc[0]} does not accept {flags}: level {level} left out")
                        continue
                    flags = []
                ext.extra_compile_args.extend(flags)
                ext.define_macros.append(("RNNX_BUILD_FLAGS", '"%s"' % " ".join(flags)))
            kept.append(ext)
            if use_pthread:
                ext.extra_compile_args.append("-pthread")
                ext.extra_link_args.append("-pthread")
        self.extensions = kept
        super().build_extensions()

    def run(self):
        if self.inplace or self.editable_mode:
            # A _recurrent extension left by a build from before the levels would shadow the
            # dispatching _recurrent.py.
            for stale in glob.glob(os.path.join("rnnx", "_kernels", "_recurrent.*.so")):
                os.remove(stale)
        super().run()


def sanitizer_flags(sanitize):
    """(compile, link) flags of the sanitizers named in `sanitize` ("address,undefined")."""
    if not sanitize:
        return [], []
    flags = [f"-fsanitize={sanitize}", "-fno-sanitize-recover=all"]
    return flags + ["-fno-omit-frame-pointer", "-g"], flags


def generate_level_sources():
    """rnnx/_kernels/_recurrent_<level>.pyx for every level: one line that includes the
    kernels' source (rewritten only when it changes, so that builds stay incremental)."""
    for level in LEVELS:
        path = os.path.join("rnnx", "_kernels", f"_recurrent_{level}.pyx")
        text = (f"# Generated by setup.py: the kernels of _recurrent.pxi at level {level!r}.\n"
                'include "_recurrent.pxi"\n')
        if not os.path.exists(path) or open(path).read() != text:
            with open(path, "w") as f:
                f.write(text)


def extension(name):
    opt = ["-O0", "-g"] if DEBUG else ["-O1"] if SANITIZE else ["-O3"]
    san_compile, san_link = sanitizer_flags(SANITIZE)
    return Extension(
        f"rnnx._kernels.{name}",
        [f"rnnx/_kernels/{name}.pyx"],
        include_dirs=[np.get_include(), "rnnx/_kernels"],
        depends=glob.glob("rnnx/_kernels/*.pxi") + glob.glob("rnnx/_kernels/*.pxd")
        + glob.glob("rnnx/_kernels/*.h"),
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=opt + KERNEL_FLAGS + san_compile,
        extra_link_args=san_link,
    )


# Compiled once, with the first level's flags: the parts that do not depend on the ISA.
ONCE_AT_FIRST_LEVEL = ("rnnx._kernels._layout", "rnnx._kernels._fingerprint")
KERNELS = (["_blas", "_cpu", "_layout", "_fingerprint"]
           + [f"_recurrent_{level}" for level in LEVELS])
generate_level_sources()

setup(
    ext_modules=cythonize([extension(n) for n in KERNELS], compiler_directives=DIRECTIVES,
                          compile_time_env={"RNNX_DEBUG": DEBUG}, nthreads=os.cpu_count() or 1),
    cmdclass={"build_ext": BuildExt},
)
