"""Checkpoints without pickle: `save(obj, path)` / `load(path)`.

obj is a nested structure of dicts (str or int keys), lists and tuples whose leaves are numpy
arrays, numpy scalars, int, float, str, bool or None, e.g.
{'model': model.state_dict(), 'optimizer': opt.state_dict(), 'rng': rnnx.get_rng_state(), 'epoch': 3}.
The file is an uncompressed .npz: one entry per array, named by its path ('model/weight_ih_l0';
'/' and '%' inside keys are %-escaped), plus the entry '__rnnx_metadata__', a JSON document (as
a unicode array) holding the structure and the scalar leaves. It is written atomically (temporary
file in the same directory, fsync, os.replace) and read back with allow_pickle=False.
"""
import contextlib
import json
import os
import secrets
import zipfile

import numpy as np

from .nn.module import Module

METADATA_KEY = "__rnnx_metadata__"
FORMAT_NAME = "rnnx-checkpoint"
FORMAT_VERSION = 1
_SCALAR_TYPES = (bool, int, float, str, type(None))


def _escape(key):
    return str(key).replace("%", "%25").replace("/", "%2F")


def _encode(obj, path, arrays):
    """The JSON node describing obj; arrays found are added to `arrays` (name -> ndarray)."""
    if isinstance(obj, (np.ndarray, np.generic)):
        arr = np.asarray(obj)
        if arr.dtype.hasobject:
            raise TypeError(f"cannot save {'/'.join(path) or 'obj'}: object arrays are not supported")
        base = "/".join(path) or "_"
        name, n = base, 1
        while name in arrays:  # only when escaped keys coincide, e.g. 1 and '1'
            name, n = f"{base}#{n}", n + 1
        arrays[name] = arr
        return {"array": name, "scalar": isinstance(obj, np.generic)}
    if isinstance(obj, _SCALAR_TYPES):
        return {"value": obj}
    if isinstance(obj, dict):
        items = []
        for key, value in obj.items():
            if isinstance(key, (bool, np.bool_)) or not isinstance(key, (str, int, np.integer)):
                raise TypeError(f"cannot save dict key {key!r}: keys must be str or int")
            key = key if isinstance(key, str) else int(key)
            items.append([key, _encode(value, path + [_escape(key)], arrays)])
        return {"dict": items}
    if isinstance(obj, (list, tuple)):
        kind = "list" if isinstance(obj, list) else "tuple"
        return {kind: [_encode(v, path + [str(i)], arrays) for i, v in enumerate(obj)]}
    raise TypeError(f"cannot save {'/'.join(path) or 'obj'} of type {type(obj).__name__}")


def _decode(node, arrays):
    if "array" in node:
        arr = arrays[node["array"]]
        return arr[()] if node["scalar"] else arr
    if "value" in node:
        return node["value"]
    if "dict" in node:
        return {key: _decode(value, arrays) for key, value in node["dict"]}
    if "list" in node:
        return [_decode(v, arrays) for v in node["list"]]
    return tuple(_decode(v, arrays) for v in node["tuple"])


def save(obj, path):
    """Write obj to path (exactly that name) atomically; on error no file is left behind.
    A Module is saved as its state_dict() (load it back with model.load_state_dict(load(path)))."""
    if isinstance(obj, Module):
        obj = obj.state_dict()
    path = os.fspath(path)
    arrays = {METADATA_KEY: None}
    tree = _encode(obj, [], arrays)
    arrays[METADATA_KEY] = np.array(json.dumps(
        {"format": FORMAT_NAME, "version": FORMAT_VERSION, "tree": tree}))
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
                for name, arr in arrays.items():
                    with zf.open(name + ".npy", "w", force_zip64=True) as member:
                        np.lib.format.write_array(member, arr, allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if os.name == "posix":  # make the rename itself durable
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def load(path):
    """Read a checkpoint written by save(); arrays come back bit-for-bit (dtype, shape, values).

    A missing file raises FileNotFoundError; a corrupt, truncated or foreign file ValueError.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        try:
            loaded = np.load(f, allow_pickle=False)
            if not isinstance(loaded, np.lib.npyio.NpzFile):
                raise ValueError("a single .npy array, not an npz archive")
            with loaded as npz:
                arrays = {name: npz[name] for name in npz.files}
            if METADATA_KEY not in arrays:
                raise ValueError(f"no {METADATA_KEY!r} entry: not written by rnnx.save")
            meta = json.loads(str(arrays.pop(METADATA_KEY)))
            if meta.get("format") != FORMAT_NAME or "tree" not in meta:
                raise ValueError("metadata does not describe an rnnx checkpoint")
            if meta.get("version") != FORMAT_VERSION:
                raise ValueError(f"unsupported checkpoint version {meta.get('version')!r}")
            return _decode(meta["tree"], arrays)
        except Exception as exc:
            raise ValueError(f"{path!r} is not a valid rnnx checkpoint "
                             f"({type(exc).__name__}: {exc})") from exc
