"""bench/startup.py: import and first-call times in fresh processes, as a Markdown table."""
import os
import subprocess
import sys

import pytest

STARTUP = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench",
                       "startup.py")


def run(*flags):
    return subprocess.run([sys.executable, STARTUP, *flags], capture_output=True, text=True,
                          timeout=300)


def test_startup_table_for_rnnx():
    proc = run("--repeat", "1", "--libs", "rnnx")
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| rnnx |")]
    assert len(rows) == 1
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    assert len(cells) == 4 and all(float(c) > 0 for c in cells[1:])


@pytest.mark.parametrize("flags, message", [
    (("--libs", "rnnx,foo"), "unknown libraries ['foo']"),
    (("--repeat", "0"), "--repeat must be at least 1, got 0"),
])
def test_startup_rejects_bad_flags(flags, message):
    proc = run(*flags)
    assert proc.returncode == 2
    assert message in proc.stderr
