"""Build and run the C checks of the kernels' headers (headers_check.c) as the kernels are built:
with setup.py's flags (KERNEL_FLAGS, and each level's -march flags from LEVEL_FLAGS), OpenMP,
and -Werror (a header that makes the compiler warn fails here).

    python tests/c/run_checks.py                    # this machine: every level its CPU runs
    python tests/c/run_checks.py --target aarch64   # gcc-aarch64-linux-gnu, run by qemu-aarch64

The headers come from the installed rnnx package (rnnx/_kernels ships them), or from the source
tree when rnnx is not importable. Exit status 0 when every check printed "ok".
"""
import argparse
import ast
import os
import platform
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CROSS = {"aarch64": {"cc": "aarch64-linux-gnu-gcc",
                     "run": ["qemu-aarch64", "-L", "/usr/aarch64-linux-gnu"]}}


def setup_literals(names=("LEVEL_FLAGS", "KERNEL_FLAGS")):
    """The values of setup.py's top-level assignments `names` (literals, read with ast)."""
    with open(os.path.join(ROOT, "setup.py"), encoding="utf-8") as f:
        tree = ast.parse(f.read())
    found = {node.targets[0].id: ast.literal_eval(node.value) for node in tree.body
             if isinstance(node, ast.Assign) and len(node.targets) == 1
             and isinstance(node.targets[0], ast.Name) and node.targets[0].id in names}
    missing = set(names) - set(found)
    if missing:
        raise RuntimeError(f"setup.py has no literal {', '.join(sorted(missing))}")
    return found


def kernel_headers():
    """The directory of the kernels' headers: the importable rnnx's, else the source tree's."""
    try:
        import rnnx._kernels
        return os.path.dirname(rnnx._kernels.__file__)
    except ImportError:
        return os.path.join(ROOT, "rnnx", "_kernels")


def native_levels(level_flags):
    """{level: flags} of this machine's architecture that its CPU runs."""
    machine = {"amd64": "x86_64", "arm64": "aarch64"}.get(platform.machine().lower(),
                                                          platform.machine().lower())
    levels = level_flags.get(machine, {"baseline": []})
    try:
        from rnnx._kernels._cpu import supported_levels
        runs = set(supported_levels())
    except ImportError:           # no built rnnx: the baseline level alone
        runs = {next(iter(levels))}
    return {level: flags for level, flags in levels.items() if level in runs}


def build_and_run(cc, flags, run_prefix, source="headers_check.c", timeout=300):
    """(ok, output) of building `source` with cc and flags, then running it (a run that has
    not ended after `timeout` seconds, a hung barrier say, fails)."""
    with tempfile.TemporaryDirectory() as tmp:
        exe = os.path.join(tmp, "check")
        cmd = [cc, "-O3", *flags, "-pthread", "-Wall", "-Wextra", "-Werror",
               "-I", kernel_headers(), os.path.join(HERE, source), "-o", exe, "-lm"]
        build = subprocess.run(cmd, capture_output=True, text=True)
        if build.returncode != 0:
            return False, f"{' '.join(cmd)}\n{build.stderr}"
        try:
            run = subprocess.run([*run_prefix, exe], capture_output=True, text=True,
                                 timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            return False, f"no end after {timeout} s: {exc.stdout or ''}"
        out = run.stdout + run.stderr
        return run.returncode == 0 and run.stdout.strip().endswith("ok"), out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", choices=sorted(CROSS),
                        help="cross-compile for this architecture and run under qemu-user")
    parser.add_argument("--cc", default=None, help="the compiler (default: cc, or the cross gcc)")
    args = parser.parse_args(argv)
    literals = setup_literals()
    if args.target:
        cross = CROSS[args.target]
        cc, run_prefix = args.cc or cross["cc"], cross["run"]
        levels = literals["LEVEL_FLAGS"][args.target]
        for tool in (cc, run_prefix[0]):
            if shutil.which(tool) is None:
                sys.exit(f"{tool} not found (Debian: apt-get install gcc-{args.target}-linux-gnu "
                         f"qemu-user)")
    else:
        cc, run_prefix = args.cc or shutil.which("cc") or "gcc", []
        levels = native_levels(literals["LEVEL_FLAGS"])
    failed = 0
    for level, flags in levels.items():
        ok, out = build_and_run(cc, [*flags, *literals["KERNEL_FLAGS"]], run_prefix)
        print(f"{args.target or platform.machine()} {level} ({' '.join(flags) or 'default'}): "
              f"{'ok' if ok else 'FAIL'}")
        if not ok:
            print(out)
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
