"""Low-level durable file operations shared by the store, the journal and artifacts.

Everything a session writes goes through here, so the rules live in one place:
files are created 0600 and directories 0700 whatever the umask, symlinks are never
followed below the root (O_NOFOLLOW), and "durable" means the data is fsynced and, for a
new name, the directory that holds it is fsynced too. A failed fsync raises
`DurabilityError` and is never retried: the page cache may already have dropped the data.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from .errors import DurabilityError, IntegrityError

FILE_MODE = 0o600
DIR_MODE = 0o700
NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
CLOEXEC = getattr(os, "O_CLOEXEC", 0)
TEMP_PREFIX = ".tmp-"


def fsync_fd(fd: int, *, data_only: bool = False) -> None:
    try:
        if data_only and hasattr(os, "fdatasync"):
            os.fdatasync(fd)
        else:
            os.fsync(fd)
    except OSError as exc:
        raise DurabilityError(f"fsync failed: {exc.strerror}; the last write is not durable") from exc


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | CLOEXEC)
    try:
        fsync_fd(fd)
    finally:
        os.close(fd)


def make_dir(path: Path) -> None:
    """Create one directory with mode 0700 (chmod after, so the umask cannot widen or narrow it)."""
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
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise IntegrityError(f"{path} is not a directory (a link or a file is in its place); refusing")


def create_file(path: Path, *, append: bool = False) -> int:
    """Create a new file exclusively (never through a symlink) and return a write descriptor."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW | CLOEXEC
    if append:
        flags |= os.O_APPEND
    fd = os.open(path, flags, FILE_MODE)
    os.fchmod(fd, FILE_MODE)
    return fd


def open_read(path: Path) -> int:
    """Open an existing file for reading without following a symlink at its last component."""
    try:
        return os.open(path, os.O_RDONLY | NOFOLLOW | CLOEXEC)
    except OSError as exc:
        if exc.errno == getattr(os, "ELOOP", -1) or (path.is_symlink()):
            raise IntegrityError(f"{path} is a symbolic link; refusing to follow it") from exc
        raise


def read_bytes(path: Path) -> bytes:
    fd = open_read(path)
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def temp_path_for(path: Path) -> Path:
    return path.with_name(f"{TEMP_PREFIX}{path.name}.{secrets.token_hex(4)}")


def atomic_write(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Replace `path` with `data` in one rename.

    With `durable`, the new content and its name are on disk when this returns (file
    fsync, rename, directory fsync). Without it the rename is still atomic, which is
    enough for caches such as head.json that the journal can always rebuild.
    """
    tmp = temp_path_for(path)
    fd = create_file(tmp)
    try:
        write_all(fd, data)
        if durable:
            fsync_fd(fd)
    except BaseException:
        os.close(fd)
        _unlink_quietly(tmp)
        raise
    os.close(fd)
    try:
        os.replace(tmp, path)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    if durable:
        fsync_dir(path.parent)


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
