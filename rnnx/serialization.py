"""Checkpoints without pickle: `save(obj, path)` / `load(path)`.

obj is a nested structure of dicts (str or int keys), lists and tuples whose leaves are numpy
arrays, numpy scalars, int, float, str, bool or None, e.g.
{'model': model.state_dict(), 'optimizer': opt.state_dict(), 'rng': rnnx.get_rng_state(), 'epoch': 3}.
The file is an uncompressed .npz: one entry per array, named by its path ('model/weight_ih_l0';
'/' and '%' inside keys are %-escaped), plus the entry '__rnnx_metadata__', a JSON document (as
a unicode array) holding the structure and the scalar leaves. It is written atomically (rnnx._files:
temporary file `.NAME.tmp` next to it, which the next save takes over if a save was killed,
fsync, os.replace; a symlink is followed, its target replaced; mode 0666 & ~umask) and read
back without pickle. load() reads regular files only (a FIFO or a device such as /dev/zero is
refused before any read) and trusts no size a file declares: it accepts only stored
(uncompressed) members, checks every member's and array's declared size against the file's own
size, and bounds the metadata to MAX_METADATA_BYTES, all before reading any data, so a small
hostile file cannot make it allocate more than its own size.
"""
import json
import math
import os
import zipfile

import numpy as np

from ._files import atomic_write, open_regular_file
from .nn.module import Module

METADATA_KEY = "__rnnx_metadata__"
FORMAT_NAME = "rnnx-checkpoint"
FORMAT_VERSION = 1
MAX_METADATA_BYTES = 64 << 20  # the JSON document: a few kB for a training checkpoint
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
    """Write obj to path atomically (onto a symlink: to its target); on any error, Ctrl-C
    included, no file is left behind and an existing file is unchanged. A Module is saved as
    its state_dict() (load it back with model.load_state_dict(load(path)))."""
    if isinstance(obj, Module):
        obj = obj.state_dict()
    arrays = {METADATA_KEY: None}
    tree = _encode(obj, [], arrays)
    arrays[METADATA_KEY] = np.array(json.dumps(
        {"format": FORMAT_NAME, "version": FORMAT_VERSION, "tree": tree}))
    with atomic_write(path) as f:
        with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            for name, arr in arrays.items():
                with zf.open(name + ".npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, arr, allow_pickle=False)


def _read_member(zf, info, file_size):
    """The array stored in one zip member, its declared sizes checked before any data is read:
    a stored member lying inside the file, a .npy header whose shape and dtype account for
    exactly the member's bytes, no object dtype."""
    if info.compress_type != zipfile.ZIP_STORED:
        raise ValueError(f"member {info.filename!r} is compressed (method {info.compress_type}); "
                         f"rnnx.save writes uncompressed members only")
    if info.file_size != info.compress_size or info.header_offset + info.file_size > file_size:
        raise ValueError(f"member {info.filename!r} declares {info.file_size} bytes, more than "
                         f"the file holds")
    if info.filename == METADATA_KEY + ".npy" and info.file_size > MAX_METADATA_BYTES:
        raise ValueError(f"metadata of {info.file_size} bytes exceeds the limit of "
                         f"{MAX_METADATA_BYTES}")
    with zf.open(info) as member:
        version = np.lib.format.read_magic(member)
        if version not in ((1, 0), (2, 0), (3, 0)):
            raise ValueError(f"member {info.filename!r}: unsupported .npy version {version}")
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        shape, fortran_order, dtype = read_header(member)
        if dtype.hasobject:
            raise ValueError(f"member {info.filename!r} holds objects (pickle is not allowed)")
        nbytes = dtype.itemsize * math.prod(shape)
        available = info.file_size - member.tell()
        if nbytes != available:
            raise ValueError(f"member {info.filename!r}: shape {shape} of {dtype} needs {nbytes} "
                             f"bytes, the member holds {available}")
        buffer = bytearray(nbytes)
        if member.readinto(buffer) != nbytes:
            raise ValueError(f"member {info.filename!r} is truncated")
    return np.frombuffer(buffer, dtype).reshape(shape, order="F" if fortran_order else "C")


def load(path):
    """Read a checkpoint written by save(); arrays come back bit-for-bit (dtype, shape, values).

    A missing file raises FileNotFoundError; anything but a regular file (a FIFO, a device), or
    a corrupt, truncated, foreign or oversized file ValueError (see the module docstring).
    """
    path = os.fspath(path)
    with open_regular_file(path) as f:
        try:
            file_size = os.fstat(f.fileno()).st_size
            if f.read(6) == b"\x93NUMPY":
                raise ValueError("a single .npy array, not an npz archive")
            f.seek(0)
            with zipfile.ZipFile(f) as zf:
                members = {info.filename[:-4]: info for info in zf.infolist()
                           if info.filename.endswith(".npy")}
                if METADATA_KEY not in members:
                    raise ValueError(f"no {METADATA_KEY!r} entry: not written by rnnx.save")
                meta = _read_member(zf, members.pop(METADATA_KEY), file_size)
                if meta.dtype.kind != "U" or meta.shape != ():
                    raise ValueError(f"{METADATA_KEY!r} is not a string")
                meta = json.loads(str(meta))
                if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME \
                        or "tree" not in meta:
                    raise ValueError("metadata does not describe an rnnx checkpoint")
                if meta.get("version") != FORMAT_VERSION:
                    raise ValueError(f"unsupported checkpoint version {meta.get('version')!r}")
                arrays = {name: _read_member(zf, info, file_size)
                          for name, info in members.items()}
            return _decode(meta["tree"], arrays)
        except Exception as exc:
            raise ValueError(f"{path!r} is not a valid rnnx checkpoint "
                             f"({type(exc).__name__}: {exc})") from exc
