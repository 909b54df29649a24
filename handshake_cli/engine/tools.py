"""The tool gate: call ids, idempotency keys, and running one tool call (DESIGN section 4).

This module owns what happens between a `tool.intent` and its `tool.result`: it runs a
builtin file tool or a command tool and turns whatever happens into a `ToolOutcome` the
model will see. A failing tool never raises; its outcome carries an error object
(`code`, `kind`, `retryable`, `message`, and details). The one exception is a failed
fsync of a builtin's own write (`DurabilityError`): the effect's durability is then
unknown and the process must stop (DESIGN section 2, rules 4 and 7).

Error kinds, coarse enough for a model to act on:

- `refused`: the gate would not do it (a path outside the workspace, a link that moved
  while being resolved, something that is not a regular file);
- `invalid_arguments`: the arguments do not fit the tool (missing or wrong-typed fields);
- `timeout`: the tool ran past `timeout_seconds` and was killed (the only retryable kind);
- `tool_failed`: the tool ran and failed (non-zero exit, file not found, an I/O error);
- `launch_failed`: the tool could not be started (program missing, workspace missing).

Builtin file tools stay inside the workspace: the path is resolved (links included), must
stay inside, and is then opened one component at a time from a descriptor of the
workspace with O_NOFOLLOW, so a link planted between the check and the open is refused
rather than followed.

Command tools run from an argv list, never through a shell, with the workspace as their
current directory, their arguments as JSON on stdin and a small environment: a few
locale and path variables, the ones the job names, and the three HANDSHAKE_* variables.
They ignore SIGINT and SIGTERM and stay in handshake's process group, so a Ctrl-C lets a
running tool finish while killing the whole group still kills it.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import json
import os
import signal
import stat
import subprocess
import tempfile
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING, Any

from handshake_cli.storage.durable import CLOEXEC, NOFOLLOW, fsync_fd, write_all

if TYPE_CHECKING:
    from handshake_cli.engine.jobs import ToolSpec

# Passed through from handshake's environment when present; everything else must be named
# in the tool's `env`, so credentials reach only the tools that were given them.
BASE_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TZ")
ENV_IDEMPOTENCY_KEY = "HANDSHAKE_IDEMPOTENCY_KEY"
ENV_SESSION_ID = "HANDSHAKE_SESSION_ID"
ENV_TOOL_CALL_ID = "HANDSHAKE_TOOL_CALL_ID"

KEY_PREFIX = "hk_"
KEY_HEX_CHARS = 40
PROBE_DETAIL_CHARS = 500

NONBLOCK = getattr(os, "O_NONBLOCK", 0)
DIRECTORY = getattr(os, "O_DIRECTORY", 0)
NEW_FILE_MODE = 0o666  # the user's workspace: their umask decides, as for any file they make
NEW_DIR_MODE = 0o777

_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode


def tool_call_id(turn: int, index: int) -> str:
    """The id of the `index`-th tool call of model turn `turn`: the same on every retry."""
    return f"call-{turn}-{index}"


def idempotency_key(session_id: str, tool_call_id: str, tool: str, args: Any) -> str:
    """A key derived from the session, the call and its canonical arguments: the same on every retry."""
    canonical = _CANONICAL([session_id, tool_call_id, tool, args])
    digest = hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()
    return KEY_PREFIX + digest[:KEY_HEX_CHARS]


@dataclass(frozen=True)
class ToolContext:
    """What one call needs besides the spec and the arguments."""

    session_id: str
    tool_call_id: str
    idempotency_key: str
    workspace: Path
    store_large_output: Callable[[bytes], str]  # stores bytes as an artifact, returns its id
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))


@dataclass(frozen=True)
class ToolOutcome:
    """The result of one call: `output` on success, `error` on failure (never both)."""

    output: Any = None
    error: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def as_result_data(self) -> dict[str, Any]:
        return {"output": self.output} if self.error is None else {"error": self.error}


def _failure(code: str, kind: str, message: str, *, retryable: bool = False, **details: Any) -> ToolOutcome:
    return ToolOutcome(
        error={"code": code, "kind": kind, "retryable": retryable, "message": message, **details}
    )


def run_tool(spec: ToolSpec, args: dict[str, Any], ctx: ToolContext) -> ToolOutcome:
    """Run one call of `spec`. Never raises for a tool failure; see the module docstring."""
    if spec.builtin == "write_file":
        return _write_file(args, ctx)
    if spec.builtin == "read_file":
        return _read_file(spec, args, ctx)
    if spec.builtin is not None:
        return _failure("unknown_builtin", "launch_failed", f"no builtin tool named {spec.builtin!r}")
    if not spec.command:
        return _failure(
            "no_command", "launch_failed", f"tool {spec.name!r} has neither a builtin nor a command"
        )
    finished = _run_process(spec, spec.command, args, ctx)
    if isinstance(finished, ToolOutcome):
        return finished
    streams = {
        **_capped_stream("stdout", finished.stdout, spec.max_output_bytes, ctx),
        **_capped_stream("stderr", finished.stderr, spec.max_output_bytes, ctx),
    }
    if finished.returncode == 0:
        return ToolOutcome(output={"exit_code": 0, **streams})
    details: dict[str, Any] = {"exit_code": finished.returncode}
    if finished.returncode < 0:
        details["signal"] = _signal_name(-finished.returncode)
        message = f"{spec.name} was killed by {details['signal']}"
    else:
        message = f"{spec.name} exited with status {finished.returncode}"
    return _failure("exit_status", "tool_failed", message, **details, **streams)


def run_probe(
    spec: ToolSpec, args: dict[str, Any], ctx: ToolContext
) -> tuple[str, str, dict[str, Any] | None]:
    """Ask the tool's probe whether an in-doubt call took effect.

    Exit 0 means it happened, 1 that it did not; any other status, a timeout or a probe that
    cannot be started means unknown. Returns the verdict, a short detail text, and, when it
    happened, the probe's output shaped like the tool's own (`exit_code`, `stdout`,
    `stderr`): a probe that prints what the call printed makes the recovered thread the one
    a crash-free run would have had.
    """
    if not spec.probe:
        return "unknown", f"tool {spec.name!r} declares no probe", None
    finished = _run_process(spec, spec.probe, args, ctx)
    if isinstance(finished, ToolOutcome):
        reason = finished.error["message"] if finished.error else "unknown failure"
        return "unknown", f"probe failed: {reason}", None
    verdict = {0: "happened", 1: "not_happened"}.get(finished.returncode, "unknown")
    detail = f"probe exited with status {finished.returncode}"
    said = _decode_capped(finished.stdout or finished.stderr, PROBE_DETAIL_CHARS * 4)[0].strip()
    if said:
        detail += ": " + said[:PROBE_DETAIL_CHARS]
    output = None
    if verdict == "happened":
        output = {
            "exit_code": 0,
            **_capped_stream("stdout", finished.stdout, spec.max_output_bytes, ctx),
            **_capped_stream("stderr", finished.stderr, spec.max_output_bytes, ctx),
        }
    return verdict, detail, output


# --- command tools -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Finished:
    returncode: int
    stdout: bytes
    stderr: bytes


def tool_environment(spec: ToolSpec, ctx: ToolContext) -> dict[str, str]:
    """The whole environment a command tool or probe sees; nothing else leaks from handshake's."""
    env = {name: ctx.environ[name] for name in (*BASE_ENV, *spec.env) if name in ctx.environ}
    env[ENV_IDEMPOTENCY_KEY] = ctx.idempotency_key
    env[ENV_SESSION_ID] = ctx.session_id
    env[ENV_TOOL_CALL_ID] = ctx.tool_call_id
    return env


def ignore_stop_signals() -> None:
    # Runs in the child between fork and exec. SIG_IGN survives exec, so a Ctrl-C (or a
    # SIGTERM) sent to handshake's process group lets the tool finish; SIGKILL still works.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _run_process(
    spec: ToolSpec, argv: tuple[str, ...], args: Any, ctx: ToolContext
) -> _Finished | ToolOutcome:
    """Run `argv` to completion or to its timeout.

    Stdin, stdout and stderr are unlinked temporary files, not pipes: the timeout is about
    the tool's own process, not about whoever still holds its output (a daemon it started,
    `cmd &`), and a tool whose handshake has gone away can still write its output and
    finish rather than die of SIGPIPE halfway through its effect.
    """
    if not ctx.workspace.is_dir():
        return _failure(
            "workspace_missing", "launch_failed", f"the workspace {ctx.workspace} is not a directory"
        )
    try:
        stdin = _stdin_json(args)
    except (TypeError, ValueError) as exc:
        return _failure("invalid_arguments", "invalid_arguments", f"arguments are not JSON: {exc}")
    with ExitStack() as files:
        try:
            stdin_file, stdout_file, stderr_file = (
                files.enter_context(tempfile.TemporaryFile()) for _ in range(3)
            )
            stdin_file.write(stdin)
            stdin_file.seek(0)
            proc = subprocess.Popen(
                list(argv),
                cwd=ctx.workspace,
                env=tool_environment(spec, ctx),
                stdin=stdin_file,
                stdout=stdout_file,
                stderr=stderr_file,
                close_fds=True,
                preexec_fn=ignore_stop_signals,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            return _failure("launch_failed", "launch_failed", f"could not start {argv[0]!r}: {reason}")
        try:
            returncode = proc.wait(timeout=spec.timeout_seconds)
        except subprocess.TimeoutExpired:
            # Not killpg: the tool shares handshake's process group. What it started itself
            # is left running.
            proc.kill()
            proc.wait()
            return _failure(
                "timeout",
                "timeout",
                f"{spec.name} did not finish within {spec.timeout_seconds:g} s and was killed",
                retryable=True,
                timeout_seconds=spec.timeout_seconds,
            )
        return _Finished(returncode, _read_from_start(stdout_file), _read_from_start(stderr_file))


def _read_from_start(file: IO[bytes]) -> bytes:
    file.seek(0)
    return file.read()


def _stdin_json(args: Any) -> bytes:
    try:
        text = json.dumps(args, ensure_ascii=False, allow_nan=False)
        return (text + "\n").encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: escape everything rather than send bad UTF-8
        return (json.dumps(args, allow_nan=False) + "\n").encode("ascii")


def _capped_stream(name: str, data: bytes, limit: int, ctx: ToolContext) -> dict[str, Any]:
    text, truncated = _decode_capped(data, limit)
    if not truncated:
        return {name: text}
    return {name: text, f"{name}_truncated": True, f"{name}_artifact_id": ctx.store_large_output(data)}


def _decode_capped(data: bytes, limit: int) -> tuple[str, bool]:
    """Decode at most `limit` bytes, cut where a UTF-8 character starts; returns (text, truncated)."""
    if len(data) <= limit:
        return data.decode("utf-8", "replace"), False
    end = limit = max(limit, 0)
    # A UTF-8 character has at most three continuation bytes: step back over them so no
    # character is split in two. Data that is not UTF-8 there is simply cut at the limit.
    while end > 0 and limit - end < 3 and data[end] & 0xC0 == 0x80:
        end -= 1
    if data[end] & 0xC0 == 0x80:
        end = limit
    return data[:end].decode("utf-8", "replace"), True


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


# --- builtin file tools ------------------------------------------------------------------


class _CallFailed(Exception):
    """Internal: a builtin stops early with this outcome (never escapes the module)."""

    def __init__(self, outcome: ToolOutcome) -> None:
        super().__init__(outcome.error)
        self.outcome = outcome


def _fail(code: str, kind: str, message: str, **details: Any) -> _CallFailed:
    return _CallFailed(_failure(code, kind, message, **details))


def _write_file(args: dict[str, Any], ctx: ToolContext) -> ToolOutcome:
    try:
        relative = _relative_path(args)
        content = args.get("content")
        if not isinstance(content, str):
            raise _fail("invalid_arguments", "invalid_arguments", "write_file needs `content`, a string")
        try:
            data = content.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise _fail(
                "invalid_arguments", "invalid_arguments", f"content is not valid text: {exc}"
            ) from exc
        return _write_inside(ctx.workspace, relative, data)
    except _CallFailed as failure:
        return failure.outcome


def _write_inside(workspace: Path, relative: PurePosixPath, data: bytes) -> ToolOutcome:
    root, parts = _resolved_parts(workspace, relative)
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
    output = {"path": str(relative), "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    return ToolOutcome(output=output)


def _read_file(spec: ToolSpec, args: dict[str, Any], ctx: ToolContext) -> ToolOutcome:
    try:
        relative = _relative_path(args)
        data = _read_inside(ctx.workspace, relative)
    except _CallFailed as failure:
        return failure.outcome
    output: dict[str, Any] = {"path": str(relative)}
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        output["binary"] = True
    content, truncated = _decode_capped(data, spec.max_output_bytes)
    output["content"] = content
    if truncated:
        output.update(truncated=True, total_bytes=len(data), artifact_id=ctx.store_large_output(data))
    return ToolOutcome(output=output)


def _read_inside(workspace: Path, relative: PurePosixPath) -> bytes:
    root, parts = _resolved_parts(workspace, relative)
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
    try:
        root = _real_workspace(str(workspace))
    except OSError as exc:
        raise _fail("workspace_missing", "launch_failed", f"the workspace {workspace} is missing") from exc
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


def _open_failure(relative: PurePosixPath, exc: OSError) -> _CallFailed:
    path = str(relative)
    if exc.errno == errno.ELOOP:
        return _fail(
            "unsafe_path",
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


def _io_failure(relative: PurePosixPath, exc: OSError) -> _CallFailed:
    code_name = errno.errorcode.get(exc.errno or 0, "unknown")
    return _fail(
        "io_error",
        "tool_failed",
        f"{str(relative)!r}: {exc.strerror or exc}",
        path=str(relative),
        errno=code_name,
    )
