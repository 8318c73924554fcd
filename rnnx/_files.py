"""Files written whole or not at all, and files read only when they are regular files: what
rnnx.save, rnnx.load, rnnx.onnx.export, the Trainer's metrics file and the MNIST download share.

A write goes to a temporary file next to its destination, named from it
(`.NAME.tmp`), then fsync, os.replace and an fsync of the directory. The name being fixed,
a write killed before its rename (SIGKILL, os._exit) leaves a file that the next write to
the same destination takes over and renames (or removes, if that write fails): leftovers
do not pile up. Writers of one destination take turns through an exclusive lock on the
temporary file (POSIX flock), held until the rename. A new file gets mode 0666 & ~umask, as
open() gives; a symlink at the destination is followed and its target replaced.
"""
import contextlib
import os
import stat

try:
    import fcntl
except ImportError:  # Windows: no flock, writers of one destination must not overlap
    fcntl = None

_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_O_BINARY = getattr(os, "O_BINARY", 0)


def temporary_path(path):
    """The temporary file a write to `path` goes through: `.NAME.tmp` in path's directory."""
    directory, name = os.path.split(path)
    return os.path.join(directory, f".{name}.tmp")


def _open_temporary(tmp):
    """A descriptor of `tmp` (created with mode 0666 & ~umask if missing), locked for this
    writer alone: after waiting for the lock, the descriptor must still be the file at
    `tmp` (a writer that held it may have renamed or removed it meanwhile)."""
    flags = os.O_WRONLY | os.O_CREAT | _O_CLOEXEC | _O_NOFOLLOW | _O_BINARY
    while True:
        fd = os.open(tmp, flags, 0o666)
        if fcntl is None:
            return fd
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                if os.path.samestat(os.fstat(fd), os.lstat(tmp)):
                    return fd
            except FileNotFoundError:
                pass
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path):
    """`with atomic_write(path) as f:` f is a binary file whose content replaces `path` (its
    target, when path is a symlink) when the block ends normally; on any exception, Ctrl-C
    included, the temporary file is removed and path left as it was."""
    path = os.path.realpath(os.fspath(path))
    tmp = temporary_path(path)
    fd = _open_temporary(tmp)
    try:
        os.ftruncate(fd, 0)  # what a killed writer left
        with os.fdopen(fd, "wb", closefd=False) as f:
            yield f
            f.flush()
            os.fsync(fd)
        os.replace(tmp, path)  # still holding the lock: no other writer is in between
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    finally:
        os.close(fd)
    if os.name == "posix":  # make the rename itself durable
        dir_fd = os.open(os.path.dirname(path), os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def open_regular_file(path):
    """`path` opened for binary reading if it is a regular file (a symlink to one included);
    ValueError otherwise (a FIFO, a device such as /dev/zero, a directory), decided on the
    opened descriptor (no race between the check and the read). O_NONBLOCK keeps open() of
    a FIFO without writer from blocking."""
    fd = os.open(os.fspath(path), os.O_RDONLY | _O_CLOEXEC | _O_NONBLOCK | _O_BINARY)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise ValueError(f"{os.fspath(path)!r} is not a regular file "
                             f"({_file_kind(mode)}): rnnx reads checkpoints from regular files only")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _file_kind(mode):
    for test, kind in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a directory"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return kind
    return f"mode {stat.filemode(mode)}"
