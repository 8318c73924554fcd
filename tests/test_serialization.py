"""rnnx.save / rnnx.load: exact round trips, atomic writes, clear errors, no pickle."""
import math
import os
import zipfile

import numpy as np
import pytest

import rnnx
from rnnx.nn import Linear
from rnnx.optim import SGD, lr_scheduler


def assert_same(a, b):
    """Equal structure, types, and bit-identical arrays."""
    assert type(a) is type(b), (a, b)
    if isinstance(a, (np.ndarray, np.generic)):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes()
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b)
    else:
        assert a == b and (not isinstance(a, float) or math.copysign(1, a) == math.copysign(1, b))


def leftovers(directory):
    return [f for f in os.listdir(directory) if f.endswith(".tmp")]


def test_round_trip_nested_structure(tmp_path):
    rng = np.random.default_rng(0)
    obj = {
        "model": {"weight_ih_l0": rng.standard_normal((8, 3)).astype(np.float32),
                  "bias": rng.standard_normal(4)},
        "arrays": [np.arange(6, dtype=np.int64).reshape(2, 3), np.array([True, False]),
                   np.zeros((0, 3), np.uint8), np.array(np.nan), np.asfortranarray(rng.random((3, 2))),
                   np.array([1 + 2j], np.complex128), np.array(["ab", "cé"]), np.arange(3, dtype=">f8"),
                   rng.standard_normal((4, 4))[::2, ::-1], np.array([np.nan, -0.0, np.inf], np.float32)],
        "scalars": [0, -7, 2 ** 70, 1.5, -0.0, float("inf"), float("nan"), 0.1 + 0.2, "x/y%z ü",
                    True, False, None, np.float32(1.25), np.int16(-3), np.bool_(True)],
        "tuple": (1, (2.0, "three"), np.ones(2)),
        "keys": {0: "int key", "0": "str key", "a/b": np.ones(1), "a%2Fb": np.zeros(1), 1: np.ones(2),
                 "1": np.zeros(2)},
        "empty": {}, "empty_list": [],
        "epoch": 3,
    }
    path = tmp_path / "ckpt.npz"
    rnnx.save(obj, path)
    assert_same(rnnx.load(path), obj)
    assert_same(rnnx.load(str(path)), obj)
    assert leftovers(tmp_path) == []
    with np.load(path, allow_pickle=False) as npz:  # a plain npz with flattened keys
        assert "model/weight_ih_l0" in npz.files and "keys/a%2Fb" in npz.files
        np.testing.assert_array_equal(npz["model/bias"], obj["model"]["bias"])


def test_round_trip_top_level_values(tmp_path):
    for obj in (np.arange(3.0), 5, "s", None, [1, np.zeros(2)]):
        rnnx.save(obj, tmp_path / "x")
        assert_same(rnnx.load(tmp_path / "x"), obj)
    assert os.listdir(tmp_path) == ["x"]  # exactly the path given, no '.npz' appended


def test_training_checkpoint_resumes_bit_for_bit(tmp_path):
    """model + optimizer + scheduler + RNG state through a file: resumed training is identical."""
    def build():
        rnnx.manual_seed(0)
        model = Linear(6, 3)
        opt = SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4)
        return model, opt, lr_scheduler.StepLR(opt, 2, gamma=0.5)

    def train(model, opt, sched, steps):
        for _ in range(steps):
            x = rnnx.nn.Dropout(0.2)(np.ones((5, 6), np.float32))  # consumes the global RNG
            opt.zero_grad()
            model.backward(model(x) - 1.0)
            opt.step()
            sched.step()

    model, opt, sched = build()
    train(model, opt, sched, 3)
    rnnx.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
               "scheduler": sched.state_dict(), "rng": rnnx.get_rng_state(), "epoch": 3},
              tmp_path / "ckpt")
    train(model, opt, sched, 2)

    model2, opt2, sched2 = build()
    ckpt = rnnx.load(tmp_path / "ckpt")
    model2.load_state_dict(ckpt["model"])
    opt2.load_state_dict(ckpt["optimizer"])
    sched2.load_state_dict(ckpt["scheduler"])
    rnnx.set_rng_state(ckpt["rng"])
    assert ckpt["epoch"] == 3
    train(model2, opt2, sched2, 2)
    for a, b in zip(model.parameters(), model2.parameters()):
        assert (a.data == b.data).all()
    assert sched.get_last_lr() == sched2.get_last_lr()


def test_save_is_atomic_on_error(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.npz"
    rnnx.save({"a": np.ones(3)}, path)
    before = path.read_bytes()
    with pytest.raises(TypeError, match="cannot save b of type set"):
        rnnx.save({"a": np.zeros(3), "b": {1, 2}}, path)
    with pytest.raises(TypeError, match="object arrays"):
        rnnx.save({"a": np.array([None, 1], dtype=object)}, path)
    with pytest.raises(TypeError, match="keys must be str or int"):
        rnnx.save({(1, 2): 3}, path)
    calls = []

    def failing_write(fid, arr, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise OSError("disk full")
        return real_write(fid, arr, **kw)

    real_write = np.lib.format.write_array
    monkeypatch.setattr(np.lib.format, "write_array", failing_write)
    with pytest.raises(OSError, match="disk full"):
        rnnx.save({"a": np.zeros(3), "b": np.zeros(2)}, path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["ckpt.npz"]
    with pytest.raises(TypeError):
        rnnx.save({"x": object()}, tmp_path / "new.npz")
    assert not (tmp_path / "new.npz").exists()


def test_load_errors_name_the_file(tmp_path):
    good = tmp_path / "good.npz"
    rnnx.save({"w": np.arange(1000.0), "n": 1}, good)
    data = good.read_bytes()
    cases = {
        "truncated.npz": data[: len(data) // 2],
        "corrupt.npz": data[:600] + bytes(b ^ 0xFF for b in data[600:700]) + data[700:],
        "text.npz": b"hello, this is not a checkpoint\n",
        "empty.npz": b"",
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
    np.save(tmp_path / "single.npy", np.ones(3))
    np.savez(tmp_path / "foreign.npz", a=np.ones(3))
    with zipfile.ZipFile(tmp_path / "badmeta.npz", "w") as zf:
        with zf.open("__rnnx_metadata__.npy", "w") as f:
            np.lib.format.write_array(f, np.array("{not json"))
    for name in list(cases) + ["single.npy", "foreign.npz", "badmeta.npz"]:
        with pytest.raises(ValueError, match=f"{name}.*not a valid rnnx checkpoint"):
            rnnx.load(tmp_path / name)
    with pytest.raises(ValueError, match="not written by rnnx.save"):
        rnnx.load(tmp_path / "foreign.npz")
    with pytest.raises(FileNotFoundError):
        rnnx.load(tmp_path / "missing.npz")
