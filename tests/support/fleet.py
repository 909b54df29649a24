"""A fleet for tests/test_fleet.py: "machines" sharing one PostgreSQL root, each running the
real command line in a UTS namespace of its own (`unshare --uts`, so `socket.gethostname()`
and with it the lease's host are the machine's) and with workspaces of its own.

What the fleet's tools do that must outlive a machine (a notification sent, a fact stored)
lands in a world directory every machine sees, as a message in a chat or a row in another
service would; what they write into a workspace stays on that machine.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
import tomli_w

from tests.support.cli import CliResult
from tests.support.crashkit import CRASH_JOBS, World
from tests.support.paths import DATA, FIXTURES, REPO

FLEET = DATA / "fleet"
CHECKOUT = "the repository as checked out, the same on every machine\n"
TIMEOUT = 120


def machines_unavailable() -> str | None:
    """Why this machine cannot host the fleet's machines, or None when it can."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return "unshare(1) is not installed (util-linux): no UTS namespaces for the fleet's machines"
    probe = subprocess.run(
        [unshare, "--uts", "hostname", "fleet-probe"], capture_output=True, text=True, check=False
    )
    if probe.returncode != 0:
        return f"unshare --uts fails here (it needs CAP_SYS_ADMIN): {probe.stderr.strip()}"
    return None


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HANDSHAKE_")}
    env.update({"NO_COLOR": "1", "COLUMNS": "80", "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"})
    return env


@dataclass
class Machine:
    """One machine of the fleet: a hostname, workspaces under `base / hostname`, and how it
    names the root (a URL or a directory: `--root ROOT`, or `HANDSHAKE_HOME` when `by_env`)."""

    hostname: str
    base: Path
    root: str
    by_env: bool = False
    env: dict[str, str] = field(default_factory=clean_env)

    def argv(self, *args: str) -> list[str]:
        unshare = shutil.which("unshare")
        assert unshare is not None
        root = [] if self.by_env else ["--root", self.root]
        # unshare execs sh, which sets the hostname and execs handshake: one pid throughout,
        # the one the lease names.
        return [
            unshare,
            "--uts",
            "sh",
            "-c",
            'hostname "$0" && exec "$@"',
            self.hostname,
            sys.executable,
            "-m",
            "handshake_cli",
            *args,
            *root,
        ]

    def environment(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        env = {**self.env, **(extra or {})}
        if self.by_env:
            env["HANDSHAKE_HOME"] = self.root
        return env

    @property
    def password(self) -> str | None:
        """The password in the root's URL, if any (a URL too broken to read has none here)."""
        try:
            return urlsplit(self.root).password if "://" in self.root else None
        except ValueError:
            return None

    def workspace(self, name: str) -> Path:
        """This machine's workspace `name`: a fresh checkout (checkout.txt), made on first use."""
        path = self.base / self.hostname / name
        if not path.is_dir():
            path.mkdir(parents=True)
            (path / "checkout.txt").write_text(CHECKOUT)
        return path

    def start(self, *args: str, crash_at: str | None = None, text: bool = True) -> subprocess.Popen[Any]:
        extra = {"HANDSHAKE_CRASH_AT": crash_at} if crash_at else {}
        return subprocess.Popen(
            self.argv(*args),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=text,
            env=self.environment(extra),
            start_new_session=True,  # its own process group, for SIGKILL and for tools that signal theirs
        )

    def handshake(self, *args: str, crash_at: str | None = None) -> CliResult:
        """`handshake ARGS` to its end; whatever it says, never the root's password."""
        proc = self.start(*args, crash_at=crash_at)
        out, err = proc.communicate(timeout=TIMEOUT)
        assert not self.password or self.password not in out + err, (args, out, err)
        return CliResult(proc.returncode, out, err)


def make_fleet_job(directory: Path, world: Path, delay_ms: int) -> Path:
    """The crash suites' job (tests/support/crashkit.py) with its lasting effects in `world`:
    remember and notify run there (in_world.py), the file tools in the workspace."""
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copy(FLEET / "script.toml", directory / "script.toml")
    in_world = [sys.executable, str(FLEET / "in_world.py"), str(world)]
    notify = [*in_world, str(FIXTURES / "jobs" / "notify.py")]
    job = {
        "name": "fleet",
        "prompt": {"system": "Be careful.", "user": "Write, remember, notify, check."},
        "model": {"provider": "scripted", "script": "script.toml", "chunk_delay_ms": delay_ms},
        "tools": [
            {
                "name": "write_file",
                "builtin": "write_file",
                "side_effect": "write",
                "idempotency": "idempotent",
            },
            {"name": "read_file", "builtin": "read_file", "side_effect": "read", "idempotency": "idempotent"},
            {
                "name": "remember",
                "command": [*in_world, str(CRASH_JOBS / "remember.py")],
                "side_effect": "write",
                "idempotency": "idempotent_with_key",
            },
            {
                "name": "notify",
                "command": notify,
                "probe": [*notify, "--probe"],
                "side_effect": "execute",
                "idempotency": "non_idempotent",
            },
        ],
    }
    path = directory / "job.toml"
    path.write_text(tomli_w.dumps(job))
    return path


class FleetWorld(World):
    """The crash suites' World on a fleet: machine A runs each session, machine B recovers
    with `recover --all --workspace` (a workspace of B's own), both on one database."""

    def __init__(self, base: Path, url: str, delay_ms: int) -> None:
        super().__init__(base, delay_ms)
        self.url = url
        self.world = base / "world"
        self.job = make_fleet_job(base / "fleet-job", self.world, delay_ms)
        self.a = Machine("fleet-a", base, url)
        self.b = Machine("fleet-b", base, url, by_env=True)

    def workspace(self, session_id: str) -> Path:
        return self.a.workspace(session_id)

    def run(self, session_id: str, crash_at: str | None = None) -> subprocess.Popen[bytes]:
        args = [
            "run",
            str(self.job),
            "--session-id",
            session_id,
            "--workspace",
            str(self.a.workspace(session_id)),
        ]
        return self.a.start(*args, crash_at=crash_at, text=False)

    def recover(self, session_id: str, crash_at: str | None = None) -> subprocess.Popen[bytes]:
        # Every session but this one is finished: --all finds exactly this one.
        args = ["recover", "--all", "--workspace", str(self.b.workspace(session_id))]
        return self.b.start(*args, crash_at=crash_at, text=False)

    def inspect(self, session_id: str, *extra: str) -> Any:
        return json.loads(self.b.handshake("inspect", session_id, *extra, "--json").stdout)

    def exists(self, session_id: str) -> bool:
        with psycopg.connect(self.url) as conn:
            made = conn.execute("SELECT to_regclass('handshake.sessions')").fetchone()
            if made is None or made[0] is None:
                return False
            found = conn.execute("SELECT 1 FROM handshake.sessions WHERE session_id = %s", (session_id,))
            return found.fetchone() is not None


def assert_fleet_equivalent(
    fleet: FleetWorld, session_id: str, reference: dict[str, Any], history: list[str]
) -> None:
    """The crash-equivalence property across machines: the thread of a crash-free run, the
    notification sent exactly once (it has a probe) and the fact stored once, wherever the
    calls ran; the notes written into the workspace of the machine that ran write_file; a
    journal that verifies."""
    info = fleet.inspect(session_id)
    context = f"{session_id}: {history}"
    assert info["state"] == "COMPLETED", context
    assert info["messages"] == reference["messages"], context
    world = fleet.world / session_id
    notified = (world / "quickstart-output" / "notifications.log").read_text().splitlines()
    assert len(notified) == 1, (notified, context)
    remembered = json.loads((world / "remembered.json").read_text())
    keys = [c["idempotency_key"] for c in info["tool_calls"] if c["tool"] == "remember"]
    assert list(remembered) == keys and len(keys) == 1, (remembered, keys, context)
    notes = [m.workspace(session_id) / "notes.txt" for m in (fleet.a, fleet.b)]
    assert any(n.exists() and n.read_text() == "the sky is blue\n" for n in notes), context
    verify = fleet.inspect(session_id, "--verify")
    if verify["verdict"] == "repairable" and not verify["head"]["matches"]:
        # A run killed after its last record and before its head (a cache): the session is
        # finished, so `recover --all` leaves it alone, and `recover SESSION` rewrites the head.
        assert verify["journal"]["damage"] is None and not verify["artifacts"]["problems"], (verify, context)
        refreshed = fleet.b.handshake("recover", session_id, "--json")
        assert refreshed.code == 0 and refreshed.json["action"] == "nothing", (refreshed.stdout, context)
        verify = fleet.inspect(session_id, "--verify")
    assert verify["verdict"] == "intact", (verify, context)
