"""MNIST in the original IDX format: parsing, locating and downloading (stdlib + numpy only)."""
import gzip
import hashlib
import http.client
import io
import logging
import os
import urllib.error
import urllib.parse
import urllib.request
import zlib
from pathlib import Path

import numpy as np

from .._files import atomic_write

__all__ = ["MIRRORS", "SHA256", "FILES", "read_idx", "load_mnist", "default_data_dir", "download_mnist"]

logger = logging.getLogger(__name__)

# https only (a mirror on this machine, e.g. a test server on 127.0.0.1, may use http).
MIRRORS = [
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
]

# sha256 of the DECOMPRESSED files.
SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}

# Canonical file names (without .gz), in load_mnist's return order.
FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

IMAGES_MAGIC = 0x00000803  # uint8, 3 dimensions
LABELS_MAGIC = 0x00000801  # uint8, 1 dimension
_GZIP_SIGNATURE = b"\x1f\x8b"
_IDX_DTYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_USER_AGENT = "rnnx-mnist-downloader (urllib)"
# No file is read, decompressed or downloaded past these sizes (MNIST's largest file,
# train-images, is 47,040,016 bytes, 9.9 MB gzipped), so a small hostile file cannot exhaust memory.
MAX_IDX_BYTES = 16 + 60000 * 28 * 28
MAX_DOWNLOAD_BYTES = 16 << 20
_LOOPBACK = ("127.0.0.1", "::1", "localhost")


def _read_limited(stream, source, max_bytes):
    """The content of a binary stream, gunzipped (incrementally) if it starts with the gzip
    signature; ValueError as soon as it exceeds max_bytes, before reading further."""
    compressed = stream.read(2) == _GZIP_SIGNATURE
    stream.seek(0)
    try:
        data = (gzip.GzipFile(fileobj=stream, mode="rb") if compressed else stream).read(
            max_bytes + 1)
    except (OSError, EOFError, zlib.error) as err:
        raise ValueError(f"{source}: corrupt gzip data ({err})") from None
    if len(data) > max_bytes:
        raise ValueError(f"{source}: {'decompresses to' if compressed else 'holds'} more than "
                         f"{max_bytes} bytes, the limit (MNIST's largest file has {MAX_IDX_BYTES})")
    return data


def _read_bytes(path, max_bytes=MAX_IDX_BYTES):
    """Return the file's content (at most max_bytes), gunzipped if it is gzip data."""
    with open(path, "rb") as f:
        return _read_limited(f, path, max_bytes)


def _parse_idx(data, source, magic=None):
    """Parse IDX bytes into a native-endian array; ``source`` names the file in errors."""
    if len(data) < 4:
        raise ValueError(f"{source}: too short for an IDX header: expected at least 4 bytes, found {len(data)}")
    found_magic = int.from_bytes(data[:4], "big")
    if magic is not None and found_magic != magic:
        raise ValueError(f"{source}: bad magic number: expected 0x{magic:08x}, found 0x{found_magic:08x}")
    type_code, ndim = data[2], data[3]
    if data[:2] != b"\0\0" or type_code not in _IDX_DTYPES or ndim == 0:
        raise ValueError(f"{source}: not an IDX file (magic number 0x{found_magic:08x})")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{source}: truncated IDX header: expected {header} bytes for {ndim} dimensions, "
                         f"found {len(data)}")
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[type_code])
    expected = dtype.itemsize
    for d in shape:
        expected *= d
    found = len(data) - header
    if found != expected:
        problem = "truncated" if found < expected else "too long"
        raise ValueError(f"{source}: {problem}: expected {expected} data bytes for shape {shape}, found {found}")
    array = np.frombuffer(data, dtype=dtype, offset=header, count=expected // dtype.itemsize)
    return array.reshape(shape).astype(dtype.newbyteorder("="))


def read_idx(path, magic=None, max_bytes=MAX_IDX_BYTES):
    """Read an IDX file (raw or gzip-compressed) into a numpy array.

    The payload size must match the header exactly; with ``magic`` given the
    magic number must equal it; the (decompressed) file may not exceed ``max_bytes``, checked
    while decompressing. Any inconsistency raises ``ValueError`` naming the file.
    """
    return _parse_idx(_read_bytes(path, max_bytes), path, magic)


def default_data_dir():
    """Directory searched when no ``data_dir`` is given: ``$RNNX_DATA``, else ``~/.cache/rnnx``."""
    env = os.environ.get("RNNX_DATA")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "rnnx"


def _find(directory, name):
    """Path of ``name`` (gzipped or raw) in ``directory``, or None."""
    for candidate in (directory / (name + ".gz"), directory / name):
        if candidate.is_file():
            return candidate
    return None


def _locate(directory, names=FILES):
    """Paths of the files ``names`` in ``directory`` or else ``directory/mnist``; None if neither
    holds all."""
    for d in (directory, directory / "mnist"):
        paths = [_find(d, name) for name in names]
        if all(paths):
            return paths
    return None


def _not_found(directory, details="", names=FILES):
    """The error raised when the files are absent: names them, the directory, and how to point elsewhere."""
    listed = ", ".join(name + ".gz" for name in names)
    return FileNotFoundError(
        f"MNIST data not found in {directory}.{details}\n"
        f"Put the {len(names)} files {listed} (gzipped or not) in {directory}, "
        f"or point to a directory holding them with --data-dir DIR or the RNNX_DATA environment variable."
    )


def _check_https(url):
    """ValueError unless url is https (or http to this machine's loopback address)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "https" and not (parts.scheme == "http" and parts.hostname in _LOOPBACK):
        raise ValueError(f"refusing to download {url}: only https URLs are allowed")


class _HttpsRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to an https URL."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        _check_https(newurl)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _fetch(url, name, timeout):
    """Download ``url`` (https, at most MAX_DOWNLOAD_BYTES) and return its (gzip) bytes after
    checking the decompressed sha256."""
    _check_https(url)
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    opener = urllib.request.build_opener(_HttpsRedirects)
    with opener.open(request, timeout=timeout) as response:
        payload = response.read(MAX_DOWNLOAD_BYTES + 1)
    if len(payload) > MAX_DOWNLOAD_BYTES:
        raise ValueError(f"more than {MAX_DOWNLOAD_BYTES} bytes: not an MNIST file")
    if not payload.startswith(_GZIP_SIGNATURE):
        raise ValueError("not gzip data")
    digest = hashlib.sha256(_read_limited(io.BytesIO(payload), "download", MAX_IDX_BYTES)).hexdigest()
    if digest != SHA256[name]:
        raise ValueError(f"sha256 mismatch: expected {SHA256[name]}, found {digest}")
    return payload


def _download(directory, name, mirrors, timeout, unreachable):
    """Fetch ``name`` from the first mirror that delivers it intact; return the path written.

    Mirrors found unreachable are added to (and then skipped via) the ``unreachable`` set.
    """
    failures = []
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + name + ".gz"
        if mirror in unreachable:
            failures.append(f"{url}: skipped (mirror unreachable)")
            continue
        logger.info("downloading %s", url)
        try:
            payload = _fetch(url, name, timeout)
        except urllib.error.HTTPError as err:
            err.close()
            failures.append(f"{url}: {err}")
        except (OSError, http.client.HTTPException, ValueError) as err:
            if isinstance(err, OSError):
                unreachable.add(mirror)
            reason = err.reason if isinstance(err, urllib.error.URLError) else err
            failures.append(f"{url}: {str(reason) or type(reason).__name__}")
        else:
            path = directory / (name + ".gz")
            with atomic_write(path) as f:
                f.write(payload)
            return path
        logger.warning("%s", failures[-1])
    details = "\n  ".join(failures or ["no mirrors given"])
    raise _not_found(directory, f"\nDownloading {name}.gz failed from every mirror:\n  {details}")


def download_mnist(data_dir, mirrors=MIRRORS, timeout=30.0, names=FILES):
    """Download the MNIST files ``names`` (default: all 4) missing from ``data_dir`` as
    ``<name>.gz``; return their paths.

    Mirrors are tried in order for each file: an HTTP error, corrupt data or a
    checksum mismatch moves on to the next mirror; an unreachable mirror
    (refused, timeout) is also skipped for the remaining files. Raises
    ``FileNotFoundError`` listing the failures when no mirror delivers a file.
    """
    directory = Path(data_dir).expanduser()
    directory.mkdir(parents=True, exist_ok=True)
    unreachable = set()
    return [_find(directory, name) or _download(directory, name, mirrors, timeout, unreachable)
            for name in names]


def _read_checked(path, magic, verify):
    """Read one MNIST file, checking its magic number and, with ``verify``, its sha256."""
    data = _read_bytes(path)
    if verify:
        name = path.name[:-3] if path.name.endswith(".gz") else path.name
        digest = hashlib.sha256(data).hexdigest()
        if digest != SHA256[name]:
            raise ValueError(f"{path}: sha256 mismatch: expected {SHA256[name]}, found {digest}")
    return _parse_idx(data, path, magic)


def load_mnist(data_dir=None, download=True, verify=False, train=True):
    """Load MNIST as ``(train_images, train_labels, test_images, test_labels)``.

    Images are uint8 ``(n, 28, 28)`` (n = 60000 / 10000 for the real data), labels int64 ``(n,)``.
    The files are looked up in ``data_dir`` (default: :func:`default_data_dir`) or its
    ``mnist/`` subdirectory; missing ones are downloaded into ``data_dir`` when
    ``download`` is true, else ``FileNotFoundError`` is raised. ``verify`` also checks
    the sha256 of local files (downloads are always checked). ``train=False`` leaves the
    training files alone (neither read nor downloaded) and returns None in their place.
    """
    directory = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    names = FILES if train else FILES[2:]
    paths = _locate(directory, names)
    if paths is None:
        if not download:
            raise _not_found(directory, " Downloading is disabled (download=False).", names)
        paths = download_mnist(directory, mirrors=MIRRORS, names=names)
    arrays = [] if train else [None, None]
    for images_path, labels_path in zip(paths[::2], paths[1::2]):
        images = _read_checked(images_path, IMAGES_MAGIC, verify)
        labels = _read_checked(labels_path, LABELS_MAGIC, verify)
        if images.shape[1:] != (28, 28):
            raise ValueError(f"{images_path}: expected images of 28x28 pixels, found "
                             f"{images.shape[1]}x{images.shape[2]}")
        if len(images) != len(labels):
            raise ValueError(f"{images_path} holds {len(images)} images but {labels_path} holds "
                             f"{len(labels)} labels: expected equal counts")
        if labels.size and labels.max() > 9:
            raise ValueError(f"{labels_path}: labels must be in 0..9, found {int(labels.max())}")
        arrays += [images, labels.astype(np.int64)]
    return tuple(arrays)
