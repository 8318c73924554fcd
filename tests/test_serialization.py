"""rnnx.save / rnnx.load: exact round trips, atomic writes, clear errors, no pickle."""
import math
import os
import stat
import subprocess
import sys
import threading
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


# -- hostile files: declared sizes are checked before anything is read --------------------------
def zip_bytes(members):
    """A zip archive by hand: members = [(name, method, data, crc, uncompressed size)], so that
    the declared sizes can be anything (no zip64: sizes below 4 GiB)."""
    import struct
    local, central = b"", b""
    for name, method, data, crc, size in members:
        name = name.encode()
        offset = len(local)
        local += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0x21, crc, len(data),
                             size, len(name), 0) + name + data
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, 0, 0x21, crc,
                               len(data), size, len(name), 0, 0, 0, 0, 0, offset) + name
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members), len(central),
                      len(local), 0)
    return local + central + end


def npy_bytes(arr):
    import io
    buf = io.BytesIO()
    np.lib.format.write_array(buf, arr, allow_pickle=False)
    return buf.getvalue()


def npy_header(shape, descr):
    """A .npy header declaring any shape and dtype."""
    import io
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False,
                                              "shape": shape})
    return buf.getvalue()


def stored(name, data, size=None):
    import zlib
    return (name, zipfile.ZIP_STORED, data, zlib.crc32(data), len(data) if size is None else size)


def metadata_member(tree):
    import json
    return stored("__rnnx_metadata__.npy", npy_bytes(np.array(json.dumps(
        {"format": "rnnx-checkpoint", "version": 1, "tree": tree}))))


def deflate_bomb(nbytes):
    """Raw DEFLATE data of `nbytes` zero bytes (a multiple of 16 MiB), made cheaply by
    repeating one fully flushed block, and its size in bytes of output."""
    import zlib
    chunk = 16 << 20
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = comp.compress(bytes(chunk)) + comp.flush(zlib.Z_FULL_FLUSH)
    return block * (nbytes // chunk) + comp.flush(zlib.Z_FINISH)


def assert_rejected_cheaply(path, match):
    import tracemalloc
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=match):
            rnnx.load(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, f"load allocated {peak} bytes before rejecting {path}"


def test_load_rejects_a_deflate_bomb_before_decompressing(tmp_path):
    count = (1 << 30) - 64  # float32: 4 GiB - 256 bytes of data, plus the .npy header
    header = npy_header((count,), "<f4")
    data = deflate_bomb(4 << 30)
    assert len(data) < 5 << 20
    path = tmp_path / "bomb.npz"
    path.write_bytes(zip_bytes([metadata_member({"array": "w", "scalar": False}),
                                ("w.npy", zipfile.ZIP_DEFLATED, header + data, 0,
                                 len(header) + 4 * count)]))
    assert_rejected_cheaply(path, "member 'w.npy' is compressed.*uncompressed members only")


def test_load_rejects_compressed_metadata(tmp_path):
    import zlib
    meta = metadata_member({"value": 1})[2]
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    data = comp.compress(meta) + comp.flush()
    path = tmp_path / "meta.npz"
    path.write_bytes(zip_bytes([("__rnnx_metadata__.npy", zipfile.ZIP_DEFLATED, data,
                                 zlib.crc32(meta), len(meta))]))
    assert_rejected_cheaply(path, "'__rnnx_metadata__.npy' is compressed")


def test_load_rejects_sizes_the_file_does_not_hold(tmp_path):
    meta = metadata_member({"array": "w", "scalar": False})
    # a stored member declaring more than the file; a .npy header declaring a huge shape
    (tmp_path / "member.npz").write_bytes(zip_bytes(
        [meta, stored("w.npy", npy_bytes(np.zeros(4)), size=3 << 30)]))
    assert_rejected_cheaply(tmp_path / "member.npz",
                            "'w.npy' declares 3221225472 bytes, more than the file holds")
    (tmp_path / "shape.npz").write_bytes(zip_bytes(
        [meta, stored("w.npy", npy_header((1 << 40,), "<f8") + bytes(80))]))
    assert_rejected_cheaply(tmp_path / "shape.npz", r"'w.npy': shape \(1099511627776,\) of "
                            r"float64 needs 8796093022208 bytes, the member holds 80")


def test_load_bounds_the_metadata(tmp_path, monkeypatch):
    from rnnx import serialization
    path = tmp_path / "big.npz"
    rnnx.save({"note": "x" * 1000}, path)
    monkeypatch.setattr(serialization, "MAX_METADATA_BYTES", 2000)
    with pytest.raises(ValueError, match="metadata of [0-9]+ bytes exceeds the limit of 2000"):
        rnnx.load(path)


def test_load_refuses_object_arrays(tmp_path):
    meta = metadata_member({"array": "w", "scalar": False})
    (tmp_path / "obj.npz").write_bytes(zip_bytes(
        [meta, stored("w.npy", npy_header((2,), "|O") + bytes(16))]))
    with pytest.raises(ValueError, match="holds objects"):
        rnnx.load(tmp_path / "obj.npz")


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, OSError])
def test_interrupted_save_leaves_no_temporary_file(tmp_path, monkeypatch, interrupt):
    path = tmp_path / "ckpt.npz"
    rnnx.save({"a": np.ones(3)}, path)
    before = path.read_bytes()

    def fsync(fd):
        raise interrupt("stopped")
    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(interrupt):
        rnnx.save({"a": np.zeros(3)}, path)
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["ckpt.npz"]
    assert path.read_bytes() == before


def test_save_onto_a_symlink_writes_its_target(tmp_path):
    target = tmp_path / "runs" / "real.npz"
    target.parent.mkdir()
    rnnx.save({"a": 1}, target)
    link = tmp_path / "latest.npz"
    link.symlink_to(target)
    rnnx.save({"a": 2}, link)
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert rnnx.load(target) == {"a": 2}
    assert leftovers(tmp_path) == [] and leftovers(target.parent) == []
    dangling = tmp_path / "dangling.npz"
    dangling.symlink_to(tmp_path / "runs" / "new.npz")
    rnnx.save({"a": 3}, dangling)
    assert dangling.is_symlink() and rnnx.load(tmp_path / "runs" / "new.npz") == {"a": 3}


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_python(code, *args, timeout=120):
    """code run by a fresh interpreter importing this tree's rnnx (a hang or a runaway
    allocation ends there, not in the test process)."""
    env = {**os.environ, "PYTHONPATH": ROOT}
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.skipif(os.name != "posix", reason="FIFOs and /dev/zero are POSIX")
def test_load_reads_regular_files_only(tmp_path):
    """A FIFO (or a symlink to one) used to block open() for ever, /dev/zero to be read until
    memory ran out: anything but a regular file is refused before any read."""
    fifo = tmp_path / "fifo.npz"
    os.mkfifo(fifo)
    link = tmp_path / "link.npz"
    link.symlink_to(fifo)
    code = ("import resource, sys, rnnx\n"
            "resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))\n"
            "for path in sys.argv[1:]:\n"
            "    try:\n        rnnx.load(path)\n"
            "    except ValueError as e:\n        print(e)\n")
    result = run_python(code, fifo, link, "/dev/zero", tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines == [f"{str(fifo)!r} is not a regular file (a FIFO): rnnx reads checkpoints "
                     f"from regular files only",
                     f"{str(link)!r} is not a regular file (a FIFO): rnnx reads checkpoints "
                     f"from regular files only",
                     "'/dev/zero' is not a regular file (a character device): rnnx reads "
                     "checkpoints from regular files only",
                     f"{str(tmp_path)!r} is not a regular file (a directory): rnnx reads "
                     f"checkpoints from regular files only"]
    good = tmp_path / "good.npz"
    rnnx.save({"a": 1}, good)
    (tmp_path / "good-link.npz").symlink_to(good)
    assert rnnx.load(tmp_path / "good-link.npz") == {"a": 1}


def test_killed_save_leaves_a_temporary_file_the_next_save_takes_over(tmp_path):
    """A save killed between its write and its rename (os._exit, as SIGKILL) leaves its
    temporary file; the next save to the same destination reuses and renames it, so killed
    saves do not pile up files."""
    path = tmp_path / "ckpt.npz"
    rnnx.save({"a": np.ones(3)}, path)
    code = ("import os, sys, numpy as np, rnnx\n"
            "os.fsync = lambda fd: os._exit(9)\n"
            "rnnx.save({'a': np.zeros(100000)}, sys.argv[1])\n")
    for _ in range(3):
        assert run_python(code, path).returncode == 9
        assert sorted(os.listdir(tmp_path)) == [".ckpt.npz.tmp", "ckpt.npz"]
    assert rnnx.load(path)["a"].tolist() == [1, 1, 1]
    rnnx.save({"a": np.full(2, 5.0)}, path)
    assert sorted(os.listdir(tmp_path)) == ["ckpt.npz"]
    assert rnnx.load(path)["a"].tolist() == [5, 5]


def test_concurrent_saves_to_one_destination_take_turns(tmp_path):
    """Writers of one destination share its temporary file's name: they take turns (a lock
    held until the rename), so the file is always one whole checkpoint."""
    path = tmp_path / "ckpt.npz"

    def saves(value):
        for _ in range(15):
            rnnx.save({"v": np.full(20000, value)}, path)
    threads = [threading.Thread(target=saves, args=(v,)) for v in (1.0, 2.0)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    values = rnnx.load(path)["v"]
    assert values.shape == (20000,) and len(set(values.tolist())) == 1
    assert sorted(os.listdir(tmp_path)) == ["ckpt.npz"]


@pytest.fixture
def umask():
    """Set the process umask for one test (restored after)."""
    saved = os.umask(0o022)
    yield os.umask
    os.umask(saved)


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_save_honours_the_umask(tmp_path, umask, mask):
    umask(mask)
    path = tmp_path / "ckpt.npz"
    rnnx.save({"a": 1}, path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~mask
