"""The kernels' C headers on their own (tests/c/headers_check.c: vmath.h against libm, gates.h
against its formulas, microgemm.h against a triple loop, team.h's barrier on OpenMP threads),
built as setup.py builds the kernels at every level this CPU runs, warnings as errors. CI
also cross-builds them for aarch64 and runs them under qemu-user (tests/c/run_checks.py
--target aarch64)."""
import importlib.util
import os
import shutil

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location("run_checks", os.path.join(HERE, "c", "run_checks.py"))
run_checks = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(run_checks)

CC = shutil.which("cc") or shutil.which("gcc")
LITERALS = run_checks.setup_literals() if os.path.exists(
    os.path.join(run_checks.ROOT, "setup.py")) else None


@pytest.mark.skipif(CC is None, reason="no C compiler")
@pytest.mark.skipif(LITERALS is None, reason="no setup.py beside the tests")
@pytest.mark.parametrize("level", sorted(run_checks.native_levels(LITERALS["LEVEL_FLAGS"]))
                         if LITERALS else ["none"])
def test_headers_check(level):
    flags = run_checks.native_levels(LITERALS["LEVEL_FLAGS"])[level] + LITERALS["KERNEL_FLAGS"]
    ok, output = run_checks.build_and_run(CC, flags, [])
    assert ok, output[-3000:]


def test_setup_literals_name_the_levels():
    if LITERALS is None:
        pytest.skip("no setup.py beside the tests")
    assert set(LITERALS["LEVEL_FLAGS"]["x86_64"]) == {"baseline", "avx2", "avx512"}
    assert LITERALS["LEVEL_FLAGS"]["aarch64"] == {"baseline": ["-march=armv8-a"]}
