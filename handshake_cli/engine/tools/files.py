"""Confined file I/O for the builtin `read_file` and `write_file` tools.

The path a model gives must stay inside the workspace: it is checked for shape (relative,
no `..`), resolved (links included) and refused when the result leaves the workspace; it
is then opened one component at a time from a descriptor of the workspace with O_NOFOLLOW,
so a link planted between the check and the open is refused rather than followed. Only
regular files are read or written (a FIFO never blocks the open), and a write is durable
(file and any new directory entries fsynced) before it returns.

A refusal or an I/O failure is a `FileToolFailed` carrying the error's code, kind and
details, which the gate turns into the call's outcome; a failed fsync is a
`DurabilityError`, which the gate lets through (DESIGN section 2, rules 4 and 7).
"""

from __future__ import annotations

import errno
import functools
import hashlib
import os
import stat
from pathlib import Path, PurePosixPath
from typing import Any

from handshake_cli.storage.durable import CLOEXEC, NOFOLLOW, fsync_fd, write_all

NONBLOCK = getattr(os, "O_NONBLOCK", 0)
DIRECTORY = getattr(os, "O_DIRECTORY", 0)
NEW_FILE_MODE = 0o666  # the user's workspace: their umask decides, as for any file they make
NEW_DIR_MODE = 0o777


UNSAFE_PATH = "unsafe_path"  # a link met where none may be followed


class FileToolFailed(Exception):
    """A builtin file tool stopped early: the error the model will see (code, kind, details)."""

    def __init__(self, code: str, kind: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.code, self.kind, self.message, self.details = code, kind, message, details


def _fail(code: str, kind: str, message: str, **details: Any) -> FileToolFailed:
    return FileToolFailed(code, kind, message, **details)


def write_file(args: dict[str, Any], workspace: Path) -> dict[str, Any]:
    """Write `args["content"]` to `args["path"]` inside `workspace`, durably; returns the
    output the model sees (path, bytes, sha256)."""
    relative = _relative_path(args)
    content = args.get("content")
    if not isinstance(content, str):
        raise _fail("invalid_arguments", "invalid_arguments", "write_file needs `content`, a string")
    try:
        data = content.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _fail("invalid_arguments", "invalid_arguments", f"content is not valid text: {exc}") from exc
    return _write_inside(workspace, relative, data)


def read_file(args: dict[str, Any], workspace: Path) -> tuple[str, bytes]:
    """The path as the model gave it (normalised) and every byte of the file it names."""
    relative = _relative_path(args)
    return str(relative), _read_inside(workspace, relative)


def _write_inside(workspace: Path, relative: PurePosixPath, data: bytes) -> dict[str, Any]:
    """Optimistically first, as `_read_inside`: the path as given, resolved only when a link is
    met. The first try creates a directory only where nothing exists below it, so where it
    meets a link it has created nothing."""
    try:
        return _write_parts(_workspace_root(workspace), relative.parts, relative, data)
    except FileToolFailed as failure:
        if failure.code != UNSAFE_PATH:
            raise
    root, parts = _resolved_parts(workspace, relative)
    return _write_parts(root, parts, relative, data)


def _write_parts(root: Path, parts: tuple[str, ...], relative: PurePosixPath, data: bytes) -> dict[str, Any]:
    to_sync: list[int] = []  # directories that gained an entry: each is fsynced before returning
    opened: list[int] = []
    try:
        directory = _open_workspace(root)
        opened.append(directory)
        for name in parts[:-1]:
            child, created = _open_subdir(directory, name, relative, create=True)
            opened.append(child)
            if created:
                to_sync.append(directory)
            directory = child
        fd, created = _open_for_write(directory, parts[-1], relative)
        try:
            try:
                os.ftruncate(fd, 0)
                write_all(fd, data)
            except OSError as exc:
                raise _io_failure(relative, exc) from exc
            fsync_fd(fd)  # raises DurabilityError: fatal, never turned into a tool error
        finally:
            os.close(fd)
        if created:
            to_sync.append(directory)
        for dir_fd in reversed(to_sync):
            fsync_fd(dir_fd)
    finally:
        for dir_fd in opened:
            os.close(dir_fd)
    return {"path": str(relative), "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _read_inside(workspace: Path, relative: PurePosixPath) -> bytes:
    """Optimistically first: open the path as given, component by component with O_NOFOLLOW,
    which refuses any link on the way. Only when it meets one are the links resolved (and
    checked to stay inside) and the resolved path opened the same way. Either way no link is
    ever followed by an open."""
    try:
        return _read_parts(_workspace_root(workspace), relative.parts, relative)
    except FileToolFailed as failure:
        if failure.code != UNSAFE_PATH:
            raise
    root, parts = _resolved_parts(workspace, relative)
    return _read_parts(root, parts, relative)


def _read_parts(root: Path, parts: tuple[str, ...], relative: PurePosixPath) -> bytes:
    opened: list[int] = []
    try:
        directory = _open_workspace(root)
        opened.append(directory)
        for name in parts[:-1]:
            directory, _ = _open_subdir(directory, name, relative, create=False)
            opened.append(directory)
        try:
            fd = os.open(parts[-1], os.O_RDONLY | NOFOLLOW | CLOEXEC | NONBLOCK, dir_fd=directory)
        except OSError as exc:
            raise _open_failure(relative, exc) from exc
        try:
            _require_regular_file(fd, relative)
            chunks = []
            while chunk := os.read(fd, 1 << 20):
                chunks.append(chunk)
            return b"".join(chunks)
        except OSError as exc:
            raise _io_failure(relative, exc) from exc
        finally:
            os.close(fd)
    finally:
        for dir_fd in opened:
            os.close(dir_fd)


def _relative_path(args: Any) -> PurePosixPath:
    """The `path` argument, checked for shape: relative, no `..`, not the workspace itself."""
    path = args.get("path") if isinstance(args, dict) else None
    if not isinstance(path, str):
        raise _fail("invalid_arguments", "invalid_arguments", "the tool needs `path`, a string")
    if "\0" in path:
        raise _fail("invalid_arguments", "invalid_arguments", "`path` contains a NUL character")
    relative = PurePosixPath(path)
    if relative.is_absolute() or ".." in relative.parts:
        raise _fail(
            "path_outside_workspace",
            "refused",
            f"{path!r} is not a relative path inside the workspace (absolute paths and `..` are refused)",
            path=path,
        )
    if not relative.parts:
        raise _fail("invalid_arguments", "invalid_arguments", "`path` must name a file inside the workspace")
    return relative


def _resolved_parts(workspace: Path, relative: PurePosixPath) -> tuple[Path, tuple[str, ...]]:
    """Resolve every link on the way; refuse when the result leaves the workspace.

    Returns the workspace's real path and the target's components below it. They contain no
    link (at the time of the check) and are then opened with O_NOFOLLOW, so a link that
    appears later is refused, not followed. The workspace itself may be reached through a
    link the user chose.
    """
    root = _workspace_root(workspace)
    if not _has_link(root, relative):
        return root, relative.parts  # the common case: nothing to resolve
    target = Path(os.path.realpath(root / relative))
    if target == root:
        raise _fail("invalid_arguments", "invalid_arguments", f"{str(relative)!r} is the workspace itself")
    if not target.is_relative_to(root):
        raise _fail(
            "path_outside_workspace",
            "refused",
            f"{str(relative)!r} resolves (through a symbolic link) to a place outside the workspace",
            path=str(relative),
        )
    return root, target.relative_to(root).parts


def _workspace_root(workspace: Path) -> Path:
    try:
        return _real_workspace(str(workspace))
    except OSError as exc:
        raise _fail("workspace_missing", "launch_failed", f"the workspace {workspace} is missing") from exc


@functools.lru_cache(maxsize=8)
def _real_workspace(workspace: str) -> Path:
    """The workspace's real path. Cached: a session resolves it once, not at every call."""
    return Path(os.path.realpath(workspace, strict=True))


def _has_link(root: Path, relative: PurePosixPath) -> bool:
    """Whether any existing component of `relative` below `root` is a symbolic link."""
    path = root
    for name in relative.parts:
        path = path / name
        try:
            if stat.S_ISLNK(os.lstat(path).st_mode):
                return True
        except OSError:
            return False  # the rest does not exist yet: nothing below can be a link
    return False


def _open_workspace(root: Path) -> int:
    try:
        return os.open(root, os.O_RDONLY | DIRECTORY | CLOEXEC)
    except OSError as exc:
        raise _fail("workspace_missing", "launch_failed", f"the workspace {root} is missing") from exc


def _open_subdir(parent: int, name: str, relative: PurePosixPath, *, create: bool) -> tuple[int, bool]:
    """Open one directory below `parent` without following a link; create it if asked."""
    try:
        return _open_dir_nofollow(parent, name), False
    except FileNotFoundError as exc:
        if not create:
            raise _open_failure(relative, exc) from exc
    except OSError as exc:
        raise _open_failure(relative, exc) from exc
    created = False
    try:
        os.mkdir(name, NEW_DIR_MODE, dir_fd=parent)
        created = True
    except FileExistsError:
        pass  # made by someone else meanwhile: open it with the same checks
    except OSError as exc:
        raise _io_failure(relative, exc) from exc
    try:
        return _open_dir_nofollow(parent, name), created
    except OSError as exc:
        raise _open_failure(relative, exc) from exc


def _open_dir_nofollow(parent: int, name: str) -> int:
    try:
        return os.open(name, os.O_RDONLY | DIRECTORY | NOFOLLOW | CLOEXEC, dir_fd=parent)
    except NotADirectoryError:
        # Linux reports a link met with O_DIRECTORY | O_NOFOLLOW as ENOTDIR; say ELOOP, as elsewhere.
        if _is_link(parent, name):
            raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), name) from None
        raise


def _is_link(parent: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.lstat(name, dir_fd=parent).st_mode)
    except OSError:
        return False


def _open_for_write(directory: int, name: str, relative: PurePosixPath) -> tuple[int, bool]:
    """Open the final component for writing without following a link; say whether it was created.

    O_NONBLOCK keeps a FIFO from blocking the open; the file is truncated only once it is
    known to be a regular file.
    """
    flags = os.O_WRONLY | NOFOLLOW | CLOEXEC | NONBLOCK
    try:
        fd = os.open(name, flags | os.O_CREAT | os.O_EXCL, NEW_FILE_MODE, dir_fd=directory)
        created = True
    except FileExistsError:
        try:
            fd = os.open(name, flags, dir_fd=directory)
        except OSError as exc:
            raise _open_failure(relative, exc) from exc
        created = False
    except OSError as exc:
        raise _open_failure(relative, exc) from exc
    try:
        _require_regular_file(fd, relative)
    except BaseException:
        os.close(fd)
        raise
    return fd, created


def _require_regular_file(fd: int, relative: PurePosixPath) -> None:
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        raise _fail(
            "not_a_regular_file", "refused", f"{str(relative)!r} is not a regular file", path=str(relative)
        )


def _open_failure(relative: PurePosixPath, exc: OSError) -> FileToolFailed:
    path = str(relative)
    if exc.errno == errno.ELOOP:
        return _fail(
            UNSAFE_PATH,
            "refused",
            f"{path!r} met a symbolic link that changed while it was resolved (or a link loop); refusing",
            path=path,
        )
    if exc.errno == errno.ENOENT:
        return _fail("not_found", "tool_failed", f"{path!r} does not exist", path=path)
    if exc.errno == errno.ENOTDIR:
        return _fail("not_a_directory", "tool_failed", f"a part of {path!r} is not a directory", path=path)
    if exc.errno == errno.EISDIR:
        return _fail("is_a_directory", "tool_failed", f"{path!r} is a directory", path=path)
    if exc.errno == errno.ENXIO:  # a FIFO with no reader, a socket, a device without a driver
        return _fail("not_a_regular_file", "refused", f"{path!r} is not a regular file", path=path)
    return _io_failure(relative, exc)


def _io_failure(relative: PurePosixPath, exc: OSError) -> FileToolFailed:
    code_name = errno.errorcode.get(exc.errno or 0, "unknown")
    return _fail(
        "io_error",
        "tool_failed",
        f"{str(relative)!r}: {exc.strerror or exc}",
        path=str(relative),
        errno=code_name,
    )
