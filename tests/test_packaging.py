"""What a plain install needs: rnnx imports in an interpreter that has imported nothing else
(no site, no pytest, no editable-install hook: none of them has pre-imported importlib.util),
the version is written in one place, and the changelog starts with it. The wheel itself is
built, repaired and tested outside pytest by .ci/wheel."""
import importlib.metadata
import json
import os
import re
import subprocess
import sys

import pytest

import rnnx
from rnnx import _version

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

BARE_IMPORT = r"""
import json, sys
sys.path[:0] = json.loads(sys.argv[1])
loaded = sorted(m for m in ("importlib.util", "pytest", "numpy") if m in sys.modules)
assert not loaded, f"the bare interpreter has already imported {loaded}"
import rnnx
import rnnx.mnist
assert rnnx.show_config(mode="dicts")["rnnx"]["version"] == rnnx.__version__
print(rnnx.__version__)
"""


def test_import_in_a_bare_interpreter():
    # -I: no environment variables, no user site, no script directory; -S: no site module
    # (so no .pth hook). The parent's path is handed over explicitly, so that the same rnnx
    # (and its numpy, scipy) is found.
    path = [p for p in sys.path if p]
    run = subprocess.run([sys.executable, "-I", "-S", "-c", BARE_IMPORT, json.dumps(path)],
                         capture_output=True, text=True, timeout=120, cwd=os.path.dirname(ROOT))
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip() == rnnx.__version__


def test_version_is_written_once():
    assert rnnx.__version__ == _version.__version__
    assert re.fullmatch(r"\d+\.\d+\.\d+([ab]\d+|rc\d+|\.dev\d+|\.post\d+)?", rnnx.__version__)
    assert rnnx.show_config(mode="dicts")["rnnx"]["version"] == rnnx.__version__
    pyproject = os.path.join(ROOT, "pyproject.toml")
    if os.path.exists(pyproject):                 # a source tree or an sdist
        tomllib = pytest.importorskip("tomllib")
        with open(pyproject, "rb") as f:
            project = tomllib.load(f)
        assert "version" not in project["project"]
        assert "version" in project["project"]["dynamic"]
        assert (project["tool"]["setuptools"]["dynamic"]["version"]
                == {"attr": "rnnx._version.__version__"})


def test_installed_metadata_has_the_version():
    # The distribution whose files hold the rnnx imported (not, say, the rnnx.egg-info of an
    # unpacked sdist in the working directory).
    imported = os.path.realpath(rnnx.__file__)
    dists = [dist for dist in importlib.metadata.distributions(name="rnnx")
             if os.path.realpath(dist.locate_file("rnnx/__init__.py")) == imported]
    if not dists:
        pytest.skip("the rnnx imported is not an installed distribution's (a source tree or an "
                    "editable install)")
    assert dists[0].version == rnnx.__version__


def test_changelog_starts_with_this_version():
    changelog = os.path.join(ROOT, "CHANGELOG.md")
    with open(changelog, encoding="utf-8") as f:
        headings = re.findall(r"^## (\S+)", f.read(), re.M)
    assert headings and headings[0] == rnnx.__version__, headings[:1]
