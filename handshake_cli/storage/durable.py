"""Low-level durable file operations shared by the store, the journal and artifacts.

Everything a session writes goes through here, so the rules live in one place:
files are created 0600 and directories 0700 whatever the umask, symlinks are never
followed below the root (O_NOFOLLOW), and "durable" means the data is fsynced and, for a
new name, the directory that holds it is fsynced too. A failed fsync raises
`DurabilityError` and is never retried: the page cache may already have dropped the data.

The machine failing us is not a bug: an `OSError` that means a full disk, an I/O error, a
read-only or over-quota filesystem, no memory or no descriptors left (`ENVIRONMENT_ERRNOS`)
leaves every function here as an `EnvironmentFailure` (exit 74) whose message names the
file and the cause. Other errors (a missing file, an existing one) keep their own class,
because callers decide on them.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from handshake_cli import faults  # noqa: F401  (installs HANDSHAKE_FAULT's injected faults, when set)
from handshake_cli.errors import DurabilityError, EnvironmentFailure, IntegrityError

FILE_MODE = 0o600
DIR_MODE = 0o700
NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
CLOEXEC = getattr(os, "O_CLOEXEC", 0)
TEMP_PREFIX = ".tmp-"


_NAMES = ("ENOSPC", "EDQUOT", "EIO", "EROFS", "EFBIG", "ENOMEM", "EMFILE", "ENFILE", "ENOBUFS", "ENOLCK")
ENVIRONMENT_ERRNOS = frozenset(getattr(errno, name) for name in _NAMES if hasattr(errno, name))


def is_environment(exc: BaseException) -> bool:
    """Whether `exc` is the machine failing (a full disk, an I/O error, ...), not a bug."""
    return isinstance(exc, OSError) and exc.errno in ENVIRONMENT_ERRNOS


def environment_failure(exc: OSError, action: str, path: object = None) -> EnvironmentFailure:
    """The error to raise for `exc`, naming the file (`path`, else the one the OS named) and the cause."""
    where = path if path is not None else exc.filename
    code = errno.errorcode.get(exc.errno or 0, "")
    cause = f"{exc.strerror or exc} ({code})" if code else str(exc.strerror or exc)
    target = f" {where}" if where is not None else ""
    return EnvironmentFailure(
        f"cannot {action}{target}: {cause}. Nothing acknowledged is lost; "
        "run the command again once the cause is fixed",
        details={"path": None if where is None else str(where), "errno": code, "operation": action},
    )


@contextmanager
def environment(action: str, path: object = None) -> Iterator[None]:
    """Turn an environment `OSError` raised inside into an `EnvironmentFailure` naming `path`."""
    try:
        yield
    except OSError as exc:
        if exc.errno in ENVIRONMENT_ERRNOS:
            raise environment_failure(exc, action, path) from exc
        raise


def fd_path(fd: int) -> str:
    """The file an open descriptor names, for messages (Linux's /proc; else the descriptor)."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return f"descriptor {fd}"


def fsync_fd(fd: int, *, data_only: bool = False, path: object = None) -> None:
    try:
        if data_only and hasattr(os, "fdatasync"):
            os.fdatasync(fd)
        else:
            os.fsync(fd)
    except OSError as exc:
        where = path if path is not None else fd_path(fd)
        raise durability_error(exc, "fsync of", where, "the last write is not durable") from exc


def durability_error(exc: OSError, what: str, where: object, lost: str) -> DurabilityError:
    """The error for a failed write or fsync of the journal or a pack: names the file, the
    cause and what was not made durable; the writing process stops (DESIGN rule 4)."""
    code = errno.errorcode.get(exc.errno or 0, "")
    return DurabilityError(
        f"{what} {where} failed: {exc.strerror or exc}{f' ({code})' if code else ''}; "
        f"{lost} and this process stops here",
        details={"path": str(where), "errno": code, "operation": what.split()[0]},
    )


def fsync_dir(path: Path) -> None:
    with environment("open the directory", path):
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | CLOEXEC)
    try:
        fsync_fd(fd, path=path)
    finally:
        os.close(fd)


def make_dir(path: Path) -> None:
    """Create one directory with mode 0700 (chmod after, so the umask cannot widen or narrow it)."""
    with environment("create the directory", path):
        os.mkdir(path, DIR_MODE)
        os.chmod(path, DIR_MODE, follow_symlinks=False)


def ensure_root(root: Path) -> None:
    """Create the root (and parents) if missing. The root may itself be reached through a
    link the user chose; below it, nothing is followed."""
    missing = []
    path = root
    while not path.exists():
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):  # each one 0700: no world-writable parent to swap the root
        try:
            make_dir(directory)
        except FileExistsError:
            pass


def ensure_subdir(path: Path, *, durable: bool = False) -> None:
    """Create one directory below the root as 0700; refuse a link or a file in its place.

    With `durable`, a directory made here has its name on disk when this returns (its
    parent is fsynced), so a file made durable inside it afterwards cannot be lost with it.
    """
    try:
        make_dir(path)
    except FileExistsError:
        pass
    else:
        if durable:
            fsync_dir(path.parent)
    with environment("look at", path):
        st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise IntegrityError(f"{path} is not a directory (a link or a file is in its place); refusing")


def create_file(path: Path, *, append: bool = False) -> int:
    """Create a new file exclusively (never through a symlink) and return a write descriptor."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW | CLOEXEC
    if append:
        flags |= os.O_APPEND
    with environment("create", path):
        fd = os.open(path, flags, FILE_MODE)
    try:
        with environment("set the mode of", path):
            os.fchmod(fd, FILE_MODE)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_read(path: Path) -> int:
    """Open an existing file for reading without following a symlink at its last component;
    anything but a regular file there (a directory named like a segment, say) is damage."""
    try:
        fd = os.open(path, os.O_RDONLY | NOFOLLOW | CLOEXEC)
    except OSError as exc:
        if exc.errno == getattr(errno, "ELOOP", -1) or (path.is_symlink()):
            raise IntegrityError(f"{path} is a symbolic link; refusing to follow it") from exc
        if exc.errno in ENVIRONMENT_ERRNOS:
            raise environment_failure(exc, "open", path) from exc
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise IntegrityError(f"{path} is not a regular file")
    return fd


def read_bytes(path: Path) -> bytes:
    fd = open_read(path)
    try:
        chunks = []
        with environment("read", path):
            while chunk := os.read(fd, 1 << 20):
                chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes, path: object = None) -> None:
    view = memoryview(data)
    try:
        while view:
            written = os.write(fd, view)
            view = view[written:]
    except OSError as exc:
        if exc.errno in ENVIRONMENT_ERRNOS:
            raise environment_failure(exc, "write", path if path is not None else fd_path(fd)) from exc
        raise


def temp_path_for(path: Path) -> Path:
    return path.with_name(f"{TEMP_PREFIX}{path.name}.{os.urandom(4).hex()}")


def atomic_write(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Replace `path` with `data` in one rename.

    With `durable`, the new content and its name are on disk when this returns (file
    fsync, rename, directory fsync). Without it the rename is still atomic, which is
    enough for caches such as head.json that the journal can always rebuild.
    """
    tmp = temp_path_for(path)
    try:
        fd = create_file(tmp)
    except EnvironmentFailure as exc:
        raise _naming(exc, path) from exc.__cause__
    try:
        write_all(fd, data, path)
        if durable:
            fsync_fd(fd, path=path)
    except BaseException:
        _close_quietly(fd)
        _unlink_quietly(tmp)
        raise
    try:
        with environment("write", path):
            os.close(fd)  # where a filesystem reports a deferred write error (NFS)
        with environment("rename into place", path):
            os.replace(tmp, path)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    if durable:
        fsync_dir(path.parent)


def _naming(exc: EnvironmentFailure, path: Path) -> EnvironmentFailure:
    """The failure to create a temp file, told as the failure to write the file it stands for."""
    cause = exc.__cause__
    if isinstance(cause, OSError):
        return environment_failure(cause, "write", path)
    return exc


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def _unlink_quietly(path: Path) -> None:
    """Remove a temp file after a failure; one that stays is debris gc sweeps, not a new error."""
    try:
        os.unlink(path)
    except OSError:
        pass
