"""rnnx.show_config(): version, kernel levels, threads, BLAS and OpenMP pools."""
import pytest

import rnnx
from rnnx._kernels import _recurrent


def test_show_config_dicts():
    cfg = rnnx.show_config(mode="dicts")
    assert cfg["rnnx"]["version"] == rnnx.__version__
    kernels = cfg["kernels"]
    assert kernels["level"] == _recurrent.level
    assert kernels["level"] in kernels["compiled"]
    assert kernels["flags"] == (_recurrent.BUILD_FLAGS or "(the compiler's default target)")
    assert cfg["threads"]["rnnx.get_num_threads()"] == rnnx.get_num_threads()
    scipy_pools = [v for k, v in cfg["blas"].items() if k.startswith("scipy (the kernels')")]
    assert len(scipy_pools) == 1 and scipy_pools[0]["num_threads"] == 1
    assert all(pool["internal_api"] for pool in cfg["blas"].values())


def test_show_config_follows_the_thread_count():
    rnnx.set_num_threads(1)
    numpy_pools = [v for k, v in rnnx.show_config("dicts")["blas"].items()
                   if k.startswith("numpy:")]
    rnnx.set_num_threads(2)
    cfg = rnnx.show_config("dicts")
    assert cfg["threads"]["rnnx.get_num_threads()"] == 2
    if numpy_pools:
        assert numpy_pools[0]["num_threads"] == 1
        assert [v["num_threads"] for k, v in cfg["blas"].items() if k.startswith("numpy:")] == [2]


def test_show_config_prints(capsys):
    assert rnnx.show_config() is None
    text = capsys.readouterr().out
    assert f"version: {rnnx.__version__}" in text
    assert f"level: {_recurrent.level}" in text
    assert "compiled: " + ", ".join(_recurrent.compiled_levels()) in text
    assert "scipy (the kernels')" in text and "num_threads: 1" in text
    assert "openmp:" in text


def test_show_config_rejects_an_unknown_mode():
    with pytest.raises(ValueError, match="mode must be 'stdout' or 'dicts', got 'json'"):
        rnnx.show_config("json")
