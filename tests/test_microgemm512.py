"""The AVX-512 step GEMM (rnnx/_kernels/microgemm512.h) gives bitwise the 256-bit kernel's
results (microgemm.h): a small C program built with the kernels' flags compares them over
every tile shape (tests/c/microgemm512_check.c)."""
import os
import shutil
import subprocess

import pytest

import rnnx._kernels

HERE = os.path.dirname(os.path.abspath(__file__))
KERNELS = os.path.dirname(rnnx._kernels.__file__)   # the headers ship with the package


def test_avx512_step_gemm_bitwise_equal_to_256_bit_kernel(tmp_path):
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler to build the check")
    exe = str(tmp_path / "check")
    build = subprocess.run([cc, "-O3", "-march=native", "-fno-math-errno", "-fno-trapping-math",
                            "-I", KERNELS, os.path.join(HERE, "c", "microgemm512_check.c"),
                            "-o", exe], capture_output=True, text=True)
    if build.returncode != 0:
        pytest.skip(f"the check does not build here: {build.stderr[-300:]}")
    run = subprocess.run([exe], capture_output=True, text=True, timeout=300)
    if run.stdout.strip() == "skip":
        pytest.skip("no AVX-512F on this machine: the 256-bit kernel is the one built")
    assert run.returncode == 0 and run.stdout.strip().endswith("ok"), run.stdout[-2000:]
