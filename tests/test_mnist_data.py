"""MNIST data module: real files, IDX parser error paths, and downloads from a local HTTP server."""
import functools
import gzip
import hashlib
import http.server
import os
import socket
import threading
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from rnnx.datasets import mnist
from rnnx.datasets import MIRRORS, SHA256, default_data_dir, download_mnist, load_mnist, read_idx

REAL_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"
NAMES = mnist.FILES
TRAIN_HIST = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_HIST = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def idx_bytes(array, magic=None):
    """Serialize ``array`` as IDX (uint8 unless ``array`` is big-endian typed); optional forced magic."""
    array = np.asarray(array)
    codes = {"u1": 0x08, "i1": 0x09, ">i2": 0x0B, ">i4": 0x0C, ">f4": 0x0D, ">f8": 0x0E}
    if magic is None:
        magic = (codes[array.dtype.str.lstrip("|")] << 8) | array.ndim
    dims = b"".join(d.to_bytes(4, "big") for d in array.shape)
    return magic.to_bytes(4, "big") + dims + array.tobytes()


def fake_arrays(n_train=7, n_test=3, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
            rng.integers(0, 10, n_train, dtype=np.uint8),
            rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
            rng.integers(0, 10, n_test, dtype=np.uint8))


def write_set(directory, arrays=None, compress=True, overrides=None):
    """Write the 4 MNIST files into ``directory``; ``overrides`` maps name -> raw decompressed bytes."""
    directory.mkdir(parents=True, exist_ok=True)
    arrays = fake_arrays() if arrays is None else arrays
    contents = {name: idx_bytes(a) for name, a in zip(NAMES, arrays)}
    contents.update(overrides or {})
    for name, data in contents.items():
        if compress:
            (directory / (name + ".gz")).write_bytes(gzip.compress(data, mtime=0))
        else:
            (directory / name).write_bytes(data)
    return contents


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch):
    """No proxies (everything goes straight to 127.0.0.1) and no inherited RNNX_DATA."""
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setenv("NO_PROXY", "*")
    monkeypatch.delenv("RNNX_DATA", raising=False)


@pytest.fixture
def no_network(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("network access attempted")
    monkeypatch.setattr(urllib.request, "urlopen", fail)
    monkeypatch.setattr(urllib.request.OpenerDirector, "open", fail)


# ---------------------------------------------------------------- real data

@pytest.fixture(scope="module")
def real():
    if not all((REAL_DIR / (n + ".gz")).is_file() for n in NAMES):
        pytest.skip(f"real MNIST files not found in {REAL_DIR}")
    return load_mnist(REAL_DIR, download=False)


def test_real_shapes_dtypes_histograms(real):
    train_x, train_y, test_x, test_y = real
    assert train_x.shape == (60000, 28, 28) and train_x.dtype == np.uint8
    assert test_x.shape == (10000, 28, 28) and test_x.dtype == np.uint8
    assert train_y.shape == (60000,) and train_y.dtype == np.int64
    assert test_y.shape == (10000,) and test_y.dtype == np.int64
    assert np.bincount(train_y, minlength=10).tolist() == TRAIN_HIST
    assert np.bincount(test_y, minlength=10).tolist() == TEST_HIST
    assert sum(TRAIN_HIST) == 60000 and sum(TEST_HIST) == 10000
    assert train_x.max() == 255 and train_x.min() == 0


def test_real_checksums(real):
    sums = REAL_DIR / "SHA256SUMS.uncompressed"
    if sums.is_file():
        listed = dict(line.split()[::-1] for line in sums.read_text().splitlines() if line.strip())
        assert listed == SHA256
    for name in NAMES:
        digest = hashlib.sha256(gzip.decompress((REAL_DIR / (name + ".gz")).read_bytes())).hexdigest()
        assert digest == SHA256[name]


def test_real_verify_and_parent_dir(real, no_network):
    # The parent directory is accepted because the files live in its mnist/ subdirectory.
    loaded = load_mnist(REAL_DIR.parent, download=False, verify=True)
    for a, b in zip(loaded, real):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------- parser

@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("array", [
    np.arange(24, dtype=np.uint8).reshape(2, 3, 4),
    np.arange(-5, 5, dtype=np.int8),
    (np.arange(6).reshape(3, 2) - 3).astype(">i2"),
    (np.arange(6) * -70000).astype(">i4"),
    np.linspace(-1, 1, 8).reshape(2, 2, 2).astype(">f4"),
    np.linspace(-1, 1, 5).astype(">f8"),
])
def test_read_idx_roundtrip(tmp_path, array, compress):
    data = idx_bytes(array)
    path = tmp_path / ("x.gz" if compress else "x")
    path.write_bytes(gzip.compress(data) if compress else data)
    out = read_idx(path)
    assert out.shape == array.shape and out.dtype.isnative and out.flags.writeable
    np.testing.assert_array_equal(out, array)


@pytest.mark.parametrize("data, match", [
    (b"\0\0\x08", "too short for an IDX header"),
    (b"PK\x03\x04rest", "not an IDX file"),
    (b"\0\0\x07\x01" + (1).to_bytes(4, "big") + b"x", "not an IDX file"),
    (b"\0\0\x08\x00", "not an IDX file"),
    (b"\0\0\x08\x03" + (1).to_bytes(4, "big"), "truncated IDX header"),
    (idx_bytes(np.zeros((2, 28, 28), np.uint8))[:-1], r"truncated: expected 1568 data bytes .* found 1567"),
    (idx_bytes(np.zeros((2, 28, 28), np.uint8)) + b"\0", r"too long: expected 1568 data bytes .* found 1569"),
])
@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_errors(tmp_path, data, match, compress):
    path = tmp_path / ("bad.gz" if compress else "bad")
    path.write_bytes(gzip.compress(data) if compress else data)
    with pytest.raises(ValueError, match=match) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_read_idx_bad_magic(tmp_path):
    path = tmp_path / "labels"
    path.write_bytes(idx_bytes(np.zeros(3, np.uint8)))
    with pytest.raises(ValueError, match="bad magic number: expected 0x00000803, found 0x00000801"):
        read_idx(path, magic=mnist.IMAGES_MAGIC)


@pytest.mark.parametrize("damage", ["flip", "truncate", "trailing"])
def test_corrupt_gzip(tmp_path, damage):
    blob = bytearray(gzip.compress(idx_bytes(np.arange(4000, dtype=np.uint8).reshape(1, 40, 100) % 7)))
    if damage == "flip":
        blob[-6] ^= 0xFF  # CRC / size trailer
        blob[len(blob) // 2] ^= 0xFF
    elif damage == "truncate":
        del blob[len(blob) // 2:]
    else:
        blob += b"garbage"
    path = tmp_path / "x.gz"
    path.write_bytes(bytes(blob))
    with pytest.raises(ValueError, match="corrupt gzip data") as info:
        read_idx(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("name, payload, match", [
    ("train-images-idx3-ubyte", idx_bytes(np.zeros(7, np.uint8)),
     "train-images-idx3-ubyte.*bad magic number: expected 0x00000803, found 0x00000801"),
    ("t10k-labels-idx1-ubyte", idx_bytes(np.zeros((3, 1), np.uint8)),
     "t10k-labels-idx1-ubyte.*bad magic number: expected 0x00000801, found 0x00000802"),
    ("t10k-images-idx3-ubyte", idx_bytes(np.zeros((3, 27, 28), np.uint8)),
     "t10k-images-idx3-ubyte.*expected images of 28x28 pixels, found 27x28"),
    ("train-images-idx3-ubyte", idx_bytes(np.zeros((3, 28, 28), np.float32).astype(">f4")),
     "bad magic number: expected 0x00000803, found 0x00000d03"),
    ("train-labels-idx1-ubyte", idx_bytes(np.zeros(6, np.uint8)),
     "7 images but .*train-labels-idx1-ubyte.* holds 6 labels"),
    ("t10k-labels-idx1-ubyte", idx_bytes(np.array([0, 10, 3], np.uint8)),
     "t10k-labels-idx1-ubyte.*labels must be in 0..9, found 10"),
    ("t10k-images-idx3-ubyte", idx_bytes(np.zeros((3, 28, 28), np.uint8))[:-5],
     "t10k-images-idx3-ubyte.*truncated"),
])
def test_load_mnist_validation(tmp_path, no_network, name, payload, match):
    write_set(tmp_path, overrides={name: payload})
    with pytest.raises(ValueError, match=match):
        load_mnist(tmp_path, download=False)


def test_verify_local_checksums(tmp_path, no_network, monkeypatch):
    contents = write_set(tmp_path)
    with pytest.raises(ValueError, match="train-images-idx3-ubyte.gz: sha256 mismatch"):
        load_mnist(tmp_path, download=False, verify=True)
    monkeypatch.setattr(mnist, "SHA256", {n: hashlib.sha256(d).hexdigest() for n, d in contents.items()})
    assert len(load_mnist(tmp_path, download=False, verify=True)) == 4


# ---------------------------------------------------------------- locating files

@pytest.mark.parametrize("compress", [False, True])
def test_load_local_raw_or_gz(tmp_path, no_network, compress):
    arrays = fake_arrays()
    write_set(tmp_path, arrays, compress=compress)
    loaded = load_mnist(tmp_path, download=False)
    assert [a.dtype for a in loaded] == [np.uint8, np.int64, np.uint8, np.int64]
    for a, b in zip(loaded, arrays):
        np.testing.assert_array_equal(a, b)


def test_data_dir_resolution(tmp_path, no_network, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_data_dir() == tmp_path / "home" / ".cache" / "rnnx"
    arrays = fake_arrays(seed=1)
    write_set(tmp_path / "home" / ".cache" / "rnnx" / "mnist", arrays)  # mnist/ subdirectory accepted
    np.testing.assert_array_equal(load_mnist(download=False)[0], arrays[0])

    monkeypatch.setenv("RNNX_DATA", str(tmp_path / "env"))
    assert default_data_dir() == tmp_path / "env"
    with pytest.raises(FileNotFoundError, match="not found in " + str(tmp_path / "env")):
        load_mnist(download=False)
    arrays_env = fake_arrays(seed=2)
    write_set(tmp_path / "env", arrays_env)
    np.testing.assert_array_equal(load_mnist(download=False)[0], arrays_env[0])

    arrays_arg = fake_arrays(seed=3)
    write_set(tmp_path / "arg", arrays_arg)
    np.testing.assert_array_equal(load_mnist(tmp_path / "arg", download=False)[0], arrays_arg[0])


def test_missing_without_download(tmp_path, no_network):
    write_set(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError) as info:
        load_mnist(tmp_path, download=False)
    message = str(info.value)
    for text in [str(tmp_path), "--data-dir", "RNNX_DATA", "download=False", *(n + ".gz" for n in NAMES)]:
        assert text in message


# ---------------------------------------------------------------- downloads (127.0.0.1 only)

class _Handler(http.server.SimpleHTTPRequestHandler):
    """Static files, plus /short/* which promises more bytes than it sends."""

    def do_GET(self):
        if self.path.startswith("/redirect/"):
            self.send_response(302)
            self.send_header("Location", "http://example.invalid" + self.path)
            self.end_headers()
            return
        if self.path.startswith("/short/"):
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(b"\x1f\x8b partial")
            self.close_connection = True
            return
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_remote(tmp_path, monkeypatch):
    """Local mirrors good/, corrupt/ (bad checksum, bad gzip, HTML, 404), short/; SHA256 patched to good/."""
    root = tmp_path / "remote"
    arrays = fake_arrays(seed=4)
    contents = write_set(root / "good", arrays)
    monkeypatch.setattr(mnist, "SHA256", {n: hashlib.sha256(d).hexdigest() for n, d in contents.items()})
    bad = root / "corrupt"
    bad.mkdir()
    (bad / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(fake_arrays(seed=5)[0])))
    (bad / "train-labels-idx1-ubyte.gz").write_bytes((root / "good" / "train-labels-idx1-ubyte.gz").read_bytes()[:-9])
    (bad / "t10k-images-idx3-ubyte.gz").write_bytes(b"<html>captive portal</html>")

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    yield base, arrays
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture
def dead_url():
    """URL of a port on 127.0.0.1 that is bound but not listening: connections are refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{s.getsockname()[1]}/"


@pytest.fixture
def silent_url():
    """URL of a listening port on 127.0.0.1 that never answers: requests time out."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield f"http://127.0.0.1:{s.getsockname()[1]}/"


def check_downloaded(directory, arrays):
    assert sorted(p.name for p in directory.iterdir()) == sorted(n + ".gz" for n in NAMES)  # no temp files left
    for a, b in zip(load_mnist(directory, download=False, verify=True), arrays):
        np.testing.assert_array_equal(a, b)


def test_download_good(tmp_path, fake_remote):
    base, arrays = fake_remote
    paths = download_mnist(tmp_path / "data", mirrors=[base + "good/"], timeout=5)
    assert paths == [tmp_path / "data" / (n + ".gz") for n in NAMES]
    check_downloaded(tmp_path / "data", arrays)
    assert download_mnist(tmp_path / "data", mirrors=[], timeout=5) == paths  # present files are kept


def test_download_is_written_whole_or_not_at_all(tmp_path, fake_remote, monkeypatch):
    """Through rnnx._files.atomic_write, as rnnx.save: a download interrupted before its rename
    leaves no file; the temporary file a killed download left is taken over by the next."""
    base, arrays = fake_remote
    data = tmp_path / "data"
    data.mkdir()
    (data / f".{NAMES[0]}.gz.tmp").write_bytes(b"left by a killed download")

    def interrupted(src, dst):
        raise KeyboardInterrupt
    with monkeypatch.context() as patch, pytest.raises(KeyboardInterrupt):
        patch.setattr(os, "replace", interrupted)
        download_mnist(data, mirrors=[base + "good/"], timeout=5)
    assert list(data.iterdir()) == []
    (data / f".{NAMES[0]}.gz.tmp").write_bytes(b"left by a killed download")
    download_mnist(data, mirrors=[base + "good/"], timeout=5)
    check_downloaded(data, arrays)


@pytest.mark.parametrize("first", ["corrupt/", "short/", "missing/"])
def test_download_bad_mirror_then_good(tmp_path, fake_remote, first):
    base, arrays = fake_remote
    download_mnist(tmp_path / "data", mirrors=[base + first, base + "good"], timeout=5)
    check_downloaded(tmp_path / "data", arrays)


@pytest.mark.parametrize("dead", ["dead_url", "silent_url"])
def test_download_dead_mirror_then_good(tmp_path, fake_remote, request, dead):
    base, arrays = fake_remote
    download_mnist(tmp_path / "data", mirrors=[request.getfixturevalue(dead), base + "good/"], timeout=0.5)
    check_downloaded(tmp_path / "data", arrays)


def test_download_only_missing_files(tmp_path, fake_remote, dead_url):
    base, arrays = fake_remote
    data = tmp_path / "data"
    data.mkdir()
    for name in NAMES[:3]:
        (data / (name + ".gz")).write_bytes((tmp_path / "remote" / "good" / (name + ".gz")).read_bytes())
    download_mnist(data, mirrors=[dead_url, base + "good/"], timeout=5)
    check_downloaded(data, arrays)


def test_load_mnist_downloads(tmp_path, fake_remote, dead_url, monkeypatch):
    base, arrays = fake_remote
    monkeypatch.setattr(mnist, "MIRRORS", [dead_url, base + "corrupt/", base + "good/"])
    monkeypatch.setenv("RNNX_DATA", str(tmp_path / "env"))
    for a, b in zip(load_mnist(), arrays):
        np.testing.assert_array_equal(a, b)
    check_downloaded(tmp_path / "env", arrays)


def test_download_all_mirrors_fail(tmp_path, fake_remote, dead_url, monkeypatch):
    base, _ = fake_remote
    monkeypatch.setattr(mnist, "MIRRORS", [dead_url, base + "corrupt/", base + "short/"])
    data = tmp_path / "data"
    with pytest.raises(FileNotFoundError) as info:
        load_mnist(data)
    message = str(info.value)
    for text in [f"not found in {data}", "--data-dir", "RNNX_DATA", *(n + ".gz" for n in NAMES),
                 dead_url + "train-images-idx3-ubyte.gz", "sha256 mismatch", base + "short/"]:
        assert text in message
    assert list(data.iterdir()) == []  # nothing partial left behind


def test_module_constants():
    assert MIRRORS[0] == "https://ossci-datasets.s3.amazonaws.com/mnist/" and len(MIRRORS) == 2
    assert all(m.startswith("https://") for m in MIRRORS)
    assert set(SHA256) == set(NAMES) and all(len(h) == 64 for h in SHA256.values())


# ---------------------------------------------------------------- hostile files and mirrors

def gzip_of_zeros(prefix, nbytes):
    """gzip data of prefix + nbytes zeros (nbytes a multiple of 16 MiB), made cheaply by
    repeating one fully flushed DEFLATE block."""
    import struct
    import zlib
    chunk = 16 << 20
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = comp.compress(prefix) + comp.flush(zlib.Z_FULL_FLUSH)
    block = comp.compress(bytes(chunk)) + comp.flush(zlib.Z_FULL_FLUSH)
    body = head + block * (nbytes // chunk) + comp.flush(zlib.Z_FINISH)
    crc = zlib.crc32(prefix)
    for _ in range(nbytes // chunk):
        crc = zlib.crc32(bytes(chunk), crc)
    size = (len(prefix) + nbytes) & 0xFFFFFFFF
    return b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff" + body + struct.pack("<II", crc, size)


def peak_allocation(fn):
    """(exception raised by fn, peak bytes allocated while it ran)."""
    import tracemalloc
    tracemalloc.start()
    try:
        with pytest.raises(ValueError) as info:
            fn()
        return info.value, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_gzip_bomb_is_stopped_at_the_limit(tmp_path):
    header = idx_bytes(np.zeros((60000, 28, 28), np.uint8))[:16]
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip_of_zeros(header, 256 << 20))  # 256 MiB of zeros in about 250 kB
    assert path.stat().st_size < 1 << 20
    error, peak = peak_allocation(lambda: read_idx(path))
    limit = 47_040_016  # the size of the real train-images file
    assert f"decompresses to more than {limit} bytes" in str(error)
    assert str(path) in str(error)
    assert peak < 3 * limit, peak
    small = tmp_path / "small.gz"
    small.write_bytes(gzip.compress(idx_bytes(np.zeros(100, np.uint8)) + bytes(100)))
    with pytest.raises(ValueError, match="decompresses to more than 150 bytes"):
        read_idx(small, max_bytes=150)


def test_raw_file_larger_than_the_limit(tmp_path):
    path = tmp_path / "big-idx1-ubyte"
    path.write_bytes(idx_bytes(np.zeros(300, np.uint8)))
    with pytest.raises(ValueError, match="holds more than 200 bytes"):
        read_idx(path, max_bytes=200)
    assert read_idx(path, max_bytes=308).shape == (300,)


def test_download_refuses_plain_http(tmp_path, no_network):
    with pytest.raises(FileNotFoundError, match="refusing to download "
                       "http://example.invalid/mnist/train-images-idx3-ubyte.gz: only https"):
        download_mnist(tmp_path, mirrors=["http://example.invalid/mnist/"], timeout=1)


def test_download_refuses_a_redirect_to_http(tmp_path, fake_remote):
    base, arrays = fake_remote
    with pytest.raises(FileNotFoundError, match="refusing to download http://example.invalid/"
                       "redirect/train-images-idx3-ubyte.gz: only https"):
        download_mnist(tmp_path / "data", mirrors=[base + "redirect/"], timeout=5)
    download_mnist(tmp_path / "data", mirrors=[base + "redirect/", base + "good/"], timeout=5)
    check_downloaded(tmp_path / "data", arrays)


def test_download_size_is_bounded(tmp_path, fake_remote, monkeypatch):
    base, _ = fake_remote
    monkeypatch.setattr(mnist, "MAX_DOWNLOAD_BYTES", 100)
    with pytest.raises(FileNotFoundError, match="more than 100 bytes: not an MNIST file"):
        download_mnist(tmp_path / "data", mirrors=[base + "good/"], timeout=5)


def test_load_mnist_test_split_only(tmp_path, fake_remote, monkeypatch):
    base, arrays = fake_remote
    monkeypatch.setattr(mnist, "MIRRORS", [base + "good/"])
    result = load_mnist(tmp_path / "data", train=False)
    assert result[:2] == (None, None)
    np.testing.assert_array_equal(result[2], arrays[2])
    np.testing.assert_array_equal(result[3], arrays[3])
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == \
        sorted(n + ".gz" for n in NAMES[2:])  # the training files were not downloaded
