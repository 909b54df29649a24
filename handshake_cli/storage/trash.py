"""Deleting what gc has moved into `<root>/trash/`: whole trees, measured as they go.

gc renames a session into the trash (one rename, made durable) before anything in it is
deleted, so everything here happens to trees that no reader lists and no writer holds.

The deleting is the filesystem's time, not Python's: on a disk mounted with online discard
every freed block waits for the device, about 0.15 ms each on the VM this was measured on
(docs/DECISIONS.md, gc). A `Deleter` therefore hands the trees to a few helper processes
(`python -I -S -c ...`, running `serve` below with the standard library only, so they start
in milliseconds) that delete while gc goes on deciding; gc waits for all of them before it
reports anything as removed. Processes, not threads: a thread deleting beside gc's busy main
thread hands the GIL back and forth at every system call, which cost more than it saved.
Should a helper fail to start or die, the trees it was given are deleted in gc's own process
at the end: the trash never depends on the helpers.

The walk never follows a link: every name below the tree's top is opened or removed relative
to the descriptor of the directory that holds it, directories are opened with O_NOFOLLOW,
and a directory is removed while it is still open, so that freeing its blocks happens when
it is closed rather than under the lock of the directory that held it.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

# Helper processes a Deleter starts, and how many trees it deletes itself before starting
# them (a small gc is over before a helper would have started).
HELPERS = 2
SPAWN_AFTER = 64

Done = Callable[[int, str | None], None]

_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
_SERVE = "import sys; sys.path.append(sys.argv[1]); from handshake_cli.storage.trash import serve; serve()"
_PACKAGE_PARENT = str(Path(__file__).resolve().parents[2])  # the directory that holds handshake_cli/


def measure_and_delete(path: str | os.PathLike[str]) -> tuple[int, str | None]:
    """Remove a file or a whole tree, never following a link; (bytes its files held, None),
    or (0, why) when it could not be removed. One walk both counts and deletes."""
    try:
        st = os.lstat(path)
        if not stat.S_ISDIR(st.st_mode):
            os.unlink(path)
            return st.st_size, None
        fd = os.open(path, _DIRECTORY)  # a link swapped in since the lstat fails here (ELOOP)
        try:
            size = _empty_directory(fd)
            os.rmdir(path)
        finally:
            os.close(fd)
    except FileNotFoundError:
        return 0, None  # another gc got there first
    except OSError as exc:
        return 0, f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc.strerror or exc)
    return size, None


def _empty_directory(dirfd: int) -> int:
    """Delete everything in the directory open at `dirfd`; the bytes its files held."""
    size = 0
    with os.scandir(dirfd) as it:
        entries = list(it)
    for entry in entries:
        try:
            if entry.is_dir(follow_symlinks=False):
                fd = os.open(entry.name, _DIRECTORY, dir_fd=dirfd)
                try:
                    size += _empty_directory(fd)
                    os.rmdir(entry.name, dir_fd=dirfd)
                finally:
                    os.close(fd)
            else:
                size += entry.stat(follow_symlinks=False).st_size
                os.unlink(entry.name, dir_fd=dirfd)
        except FileNotFoundError:
            pass  # gone already: another gc is emptying the same tree
    return size


def serve() -> None:
    """A helper's main: delete each NUL-terminated path read from stdin, in order; at the end
    of stdin, write the results (a JSON list of [bytes, error]) to stdout."""
    results: list[tuple[int, str | None]] = []
    pending = b""
    while chunk := os.read(0, 1 << 16):
        pending += chunk
        *names, pending = pending.split(b"\0")
        results.extend(measure_and_delete(os.fsdecode(name)) for name in names)
    sys.stdout.buffer.write(json.dumps(results).encode())
    sys.stdout.flush()


class _Helper:
    def __init__(self, python: str) -> None:
        # Its stderr (a traceback, should it fail) goes to a file: a pipe nobody reads before
        # the end could fill, and then it would stop reading its paths and gc would wait forever.
        self.errors = tempfile.TemporaryFile()  # noqa: SIM115 (closed by results or stop)
        try:
            self.process = subprocess.Popen(
                [python, "-I", "-S", "-c", _SERVE, _PACKAGE_PARENT],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self.errors,
                bufsize=0,
            )
        except BaseException:
            self.errors.close()
            raise
        self.alive = True

    def send(self, path: Path) -> bool:
        assert self.process.stdin is not None
        data = os.fsencode(path) + b"\0"
        try:
            while data:
                data = data[os.write(self.process.stdin.fileno(), data) :]
        except OSError:  # it died (EPIPE): what it was given is deleted at the end instead
            self.alive = False
        return self.alive

    def end_of_input(self) -> None:
        """No more paths: it finishes what it has, answers and exits."""
        if self.process.stdin is not None:
            self.process.stdin.close()
            self.process.stdin = None  # communicate() would flush the closed pipe

    def results(self) -> tuple[list[tuple[int, str | None]], str | None]:
        """What it reported, and why it reported nothing (None when all went well)."""
        self.end_of_input()
        out, _none = self.process.communicate()
        self.errors.seek(0)
        err = self.errors.read()
        self.errors.close()
        if self.process.returncode != 0:
            last = err.decode(errors="replace").strip().splitlines()[-1:] or ["no message"]
            return [], f"exit {self.process.returncode}: {last[0]}"
        try:
            return [(int(size), error) for size, error in json.loads(out)], None
        except (ValueError, TypeError) as exc:
            return [], f"unreadable answer: {exc}"

    def stop(self) -> None:
        self.end_of_input()
        if self.process.poll() is None:
            self.process.kill()
        self.process.communicate()
        self.errors.close()


class Deleter:
    """Deletes trees handed over with `delete`; `finish` waits for all of them and calls each
    one's `done(bytes, error)`, in the order they were handed over.

    The first `spawn_after` trees wait for `finish`; once more come, `helpers` processes are
    started and every tree goes to one of them at once. `helpers=0` deletes everything in
    this process, in `finish`.
    """

    def __init__(
        self, helpers: int = HELPERS, *, spawn_after: int = SPAWN_AFTER, python: str | None = None
    ) -> None:
        self.helpers = helpers
        self.spawn_after = spawn_after
        self.python = python if python is not None else sys.executable
        self._handed: list[tuple[int, Path, Done]] = []  # (helper index, or -1: this process)
        self._pool: list[_Helper] = []
        self._next = 0
        self.notes: list[str] = []  # why a helper was not used, if one was not
        self.by_helpers = 0  # trees a helper deleted and reported

    def delete(self, path: Path, done: Done) -> None:
        if not self._pool and self.helpers > 0 and len(self._handed) >= self.spawn_after:
            self._start()
        self._handed.append((self._give(path), path, done))

    def finish(self) -> None:
        """Wait for every tree handed over to be deleted, and report each one."""
        handed, self._handed = self._handed, []
        for helper in self._pool:
            helper.end_of_input()  # all at once: each finishes its share while we wait for the first
        reports = [helper.results() for helper in self._pool]
        self._pool, self._next = [], 0
        answers = [iter(results) for results, _problem in reports]
        for problem in dict.fromkeys(problem for _results, problem in reports if problem):
            self.notes.append(f"a deleting helper failed ({problem}); its trees were deleted by gc itself")
        for index, path, done in handed:
            result = next(answers[index], None) if index >= 0 else None
            if result is None:
                result = measure_and_delete(path)
            else:
                self.by_helpers += 1
            done(*result)

    def close(self) -> None:
        """Stop the helpers (after an error): what they did not delete stays in the trash."""
        for helper in self._pool:
            helper.stop()
        self._pool, self._handed = [], []

    def _start(self) -> None:
        if not self.python:
            self.notes.append("no Python interpreter to start helpers with: gc deleted by itself")
            self.helpers = 0
            return
        try:
            for _ in range(self.helpers):
                self._pool.append(_Helper(self.python))
        except OSError as exc:
            for helper in self._pool:
                helper.stop()
            self._pool = []
            self.helpers = 0
            self.notes.append(f"could not start a deleting helper ({exc.strerror}): gc deleted by itself")
            return
        # What was waiting goes to the helpers now, in turn.
        self._handed = [(self._give(path), path, done) for _index, path, done in self._handed]

    def _give(self, path: Path) -> int:
        """Send `path` to the next live helper; -1 when there is none (deleted in `finish`)."""
        for _ in range(len(self._pool)):
            index = self._next
            self._next = (self._next + 1) % len(self._pool)
            helper = self._pool[index]
            if helper.alive and helper.send(path):
                return index
        return -1
