"""Every ```python block of README.md runs as written, in order, in one namespace.

A block that imports an optional package that is not installed (OPTIONAL) is skipped, and so is
every later block that reads a name only such a skipped block defines. A block preceded by the
line `<!-- readme-test: skip -->` is not run (for illustrations that cannot run here; use it
sparingly). Each block is one test, named by its line number in README.md; its failure message
quotes the block's first line and the traceback into it.
"""
import ast
import builtins
import contextlib
import importlib.util
import io
import os
import re
import traceback
from pathlib import Path

import numpy as np
import pytest

import rnnx

README = Path(__file__).resolve().parents[1] / "README.md"
OPTIONAL = {"torch", "onnx", "onnxruntime", "mpi4py", "matplotlib", "jax"}
SKIP_MARKER = "<!-- readme-test: skip -->"
FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.M | re.S)


def python_blocks(text):
    """[(line number of the block's first code line, code, skip marker given)] in order."""
    blocks = []
    for match in FENCE.finditer(text):
        line = text.count("\n", 0, match.start(1)) + 1
        before = text[:match.start()].rstrip("\n").rsplit("\n", 1)[-1].strip()
        blocks.append((line, match.group(1), before == SKIP_MARKER))
    return blocks


def imported_modules(tree):
    """Top-level names of the modules a block imports."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


def bound_and_read(tree):
    """(names the block binds, names it reads without binding them anywhere itself)."""
    bound, read = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (read if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
    return bound, read - bound


def run_blocks(blocks, optional=OPTIONAL):
    """Execute the blocks in order in one namespace: {line: (status, detail)} with status
    'ok', 'skip' or 'fail'."""
    namespace = {"__name__": "__readme__"}
    missing = {}  # name -> line of the skipped block that would have defined it
    results = {}
    for line, code, marked in blocks:
        first = code.strip().splitlines()[0] if code.strip() else "(empty block)"
        try:
            tree = ast.parse(code, filename=f"README.md:{line}")
        except SyntaxError as exc:
            results[line] = ("fail", f"README.md line {line} ({first!r}): {exc}")
            continue
        bound, read = bound_and_read(tree)
        reason = None
        if marked:
            reason = f"marked {SKIP_MARKER}"
        for module in sorted(imported_modules(tree)):
            if reason is None and importlib.util.find_spec(module) is None:
                if module not in optional:
                    results[line] = ("fail", f"README.md line {line} ({first!r}) imports "
                                     f"{module!r}, which is not installed; if it is an optional "
                                     f"dependency add it to OPTIONAL in {Path(__file__).name}")
                    break
                reason = f"needs {module}, not installed"
        if line in results:
            bound_missing = bound
        else:
            needed = sorted(name for name in read if name in missing)
            if reason is None and needed:
                reason = ", ".join(f"{n!r} comes from the skipped block at line {missing[n]}"
                                   for n in needed)
            if reason is not None:
                results[line] = ("skip", f"README.md line {line} ({first!r}): {reason}")
                bound_missing = bound
            else:
                bound_missing = set()
                results[line] = _execute(tree, namespace, line, first)
        for name in bound:
            if name in bound_missing and not hasattr(builtins, name):
                missing[name] = line
            else:
                missing.pop(name, None)
    return results


def _execute(tree, namespace, line, first):
    """Run one parsed block (its line numbers shifted to README.md's) in namespace."""
    ast.increment_lineno(tree, line - 1)
    stdout = io.StringIO()
    try:
        with contextlib.redirect_stdout(stdout):
            exec(compile(tree, str(README), "exec"), namespace)
    except BaseException as exc:  # noqa: BLE001 - reported as the block's failure
        if isinstance(exc, KeyboardInterrupt):
            raise
        frames = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__.tb_next))
        return "fail", f"README.md line {line} ({first!r}) raised:\n{frames}"
    return "ok", stdout.getvalue()


BLOCKS = python_blocks(README.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Outcomes of all blocks, executed once, in a temporary working directory."""
    cwd = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("readme"))
    state = np.random.get_state()
    try:
        np.random.seed(0)
        rnnx.manual_seed(0)
        return run_blocks(BLOCKS)
    finally:
        np.random.set_state(state)
        os.chdir(cwd)


def test_readme_has_python_blocks():
    assert len(BLOCKS) >= 5


@pytest.mark.parametrize("line", [line for line, _, _ in BLOCKS],
                         ids=[f"README.md:{line}" for line, _, _ in BLOCKS])
def test_readme_block(results, line):
    status, detail = results[line]
    if status == "skip":
        pytest.skip(detail)
    assert status == "ok", detail


# -- the harness itself ----------------------------------------------------------------------
SAMPLE = """intro

```python
a = 1
```

```python
import a_module_that_is_not_there_xyz
```

```python
import torch_not_installed_xyz as t
b = t.zeros(3)
```

```python
c = b + a
```

```python
b = 2
d = b + a
```

<!-- readme-test: skip -->
```python
raise SystemExit("never run")
```

```python
assert a == 2, "a is 1"
```
"""


def test_harness_skips_dependents_and_names_failures():
    blocks = python_blocks(SAMPLE)
    assert [line for line, _, _ in blocks] == [4, 8, 12, 17, 21, 27, 31]
    results = run_blocks(blocks, OPTIONAL | {"torch_not_installed_xyz"})
    status = {line: s for line, (s, _) in results.items()}
    assert status == {4: "ok", 8: "fail", 12: "skip", 17: "skip", 21: "ok", 27: "skip",
                      31: "fail"}
    assert "a_module_that_is_not_there_xyz" in results[8][1] and "OPTIONAL" in results[8][1]
    assert "needs torch_not_installed_xyz" in results[12][1]
    assert "'b' comes from the skipped block at line 12" in results[17][1]
    assert "README.md line 31 ('assert a == 2, \"a is 1\"')" in results[31][1]
    assert "line 31" in results[31][1] and "AssertionError: a is 1" in results[31][1]
