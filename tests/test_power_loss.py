"""Power-loss states: what a power failure can leave of a session, and that each recovers.

A power failure keeps every byte that was fdatasync'ed and may lose anything written after
the last sync: unsynced records vanish whole or in part. The sources are real runs and
recoveries of the crash-equivalence job (write_file, a keyed `remember`, a non-idempotent
`notify` with a probe, read_file), photographed before each journal sync by
tests/support/power_snapshots.py. Which records are synced is the runner's business (tool.intent of
a tool with an effect, checkpoint.created, the ending records); this suite does not assume
it: it reads each sync's size from the real process.

From each photograph it cuts the journal at every record boundary from the size of the
sync before it, and inside every record after that point (one byte in, the middle, and
all but the newline), and puts head.json back as photographed (`kept`), as it was long
before (`stale`), empty (0 bytes) or missing. Every state must recover with one
`handshake recover` to the crash-free thread: the notification sent exactly once, the fact
stored once, nothing that was synced lost, torn bytes in quarantine/, and `inspect
--verify` intact.

The default run checks a spread sample of the states; `pytest -m slow` checks them all.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.crashkit import World, describe, verdict

HEADS = ("kept", "stale", "empty", "missing")
CI_STATES = 36


@dataclass(frozen=True)
class Photo:
    """The session and its workspace, copied just before one journal sync."""

    path: Path
    segment: str
    floor: int  # the size the segment had at the sync before: a power failure keeps all of it
    stale_head: bytes | None


@dataclass(frozen=True)
class State:
    source: str
    photo: Photo
    cut: int
    head: str

    @property
    def name(self) -> str:
        return f"{self.source}/{self.photo.path.name}@{self.cut}/{self.head}"


class Sources:
    """Real runs and recoveries, photographed at every journal sync."""

    def __init__(self, base: Path) -> None:
        self.world = World(base / "world", delay_ms=0)
        self.base = base

    def photographed(self, name: str, session_id: str, *args: str, crash_at: str | None = None) -> int:
        env = {**self.world.env, **({"HANDSHAKE_CRASH_AT": crash_at} if crash_at else {})}
        command = [
            sys.executable,
            "-m",
            "tests.support.power_snapshots",
            str(self.base / "snaps" / name),
            str(self.world.workspace(session_id)),
            "--",
            *args,
            "--root",
            str(self.world.root),
        ]
        return subprocess.run(command, env=env, capture_output=True, check=False, timeout=120).returncode

    def scenario(self, name: str, run_crash: str | None, recovery_crash: str | None = None) -> list[Path]:
        """A run (crashed at a named point, or not), then recoveries until it completes; every
        process photographed into its own folder. Returns those folders in order."""
        folders = [f"{name}-run"]
        code = self.photographed(
            folders[0],
            name,
            "run",
            str(self.world.job),
            "--session-id",
            name,
            "--workspace",
            str(self.world.workspace(name)),
            crash_at=run_crash,
        )
        for attempt in range(3):
            if self.world.inspect(name).get("state") == "COMPLETED":
                break
            folders.append(f"{name}-recover{attempt}")
            code = self.photographed(
                folders[-1], name, "recover", name, crash_at=recovery_crash if attempt == 0 else None
            )
        assert self.world.inspect(name).get("state") == "COMPLETED", (name, code)
        return [self.base / "snaps" / folder for folder in folders]


def photos(folders: list[Path]) -> list[Photo]:
    """The photographs of one session's processes, in order, each with its floor."""
    out: list[Photo] = []
    floor: dict[str, int] = {}
    first_head: bytes | None = None
    for folder in folders:
        if not folder.is_dir():
            continue
        for snap in sorted(folder.iterdir()):
            meta = json.loads((snap / "meta.json").read_text())
            if (snap / "session").is_dir():
                head = snap / "session" / "head.json"
                if first_head is None and head.exists():
                    first_head = head.read_bytes()
                out.append(Photo(snap, meta["segment"], floor.get(meta["segment"], 0), first_head))
            floor[meta["segment"]] = meta["size"]
    return out


def record_ends(data: bytes) -> list[int]:
    ends, at = [], data.find(b"\n")
    while at != -1:
        ends.append(at + 1)
        at = data.find(b"\n", at + 1)
    return ends


def cuts(photo: Photo) -> list[int]:
    """Every boundary from the floor on, and three offsets inside each record after it."""
    data = (photo.path / "session" / "journal" / photo.segment).read_bytes()
    found = {photo.floor, len(data)}
    start = 0
    for end in record_ends(data):
        if end > photo.floor:
            found.update({end, start + 1, start + (end - start) // 2, end - 1})
        start = end
    return sorted(c for c in found if photo.floor <= c <= len(data))


def all_states(sources: dict[str, list[Path]]) -> list[State]:
    return [
        State(source, photo, cut, head)
        for source, folders in sources.items()
        for photo in photos(folders)
        for cut in cuts(photo)
        for head in HEADS
    ]


def spread(states: list[State], count: int) -> list[State]:
    """A deterministic sample across sources, photographs, cuts and head.json variants."""
    if len(states) <= count:
        return states
    step = len(states) / count
    # An odd stride through a list ordered by head variant last visits every variant.
    return [states[int(index * step) + index % len(HEADS)] for index in range(count - 1)] + [states[-1]]


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Sources, dict[str, list[Path]]]]:
    made = Sources(tmp_path_factory.mktemp("power-sources"))
    scenarios = {
        "clean": made.scenario("clean", None),  # a crash-free run
        "probe": made.scenario("probe", "before_result:3"),  # notify ran; the probe settles it
        "rerun": made.scenario("rerun", "after_intent:2"),  # remember in doubt; rerun with its key
        "stream": made.scenario("stream", "mid_stream:2"),  # a model call cut short; made again
        "recrash": made.scenario("recrash", "before_result:3", "recovery_after_probe"),
    }
    yield made, scenarios


@pytest.fixture(scope="module")
def reference(sources: tuple[Sources, dict[str, list[Path]]]) -> list[Any]:
    made, _ = sources
    messages: list[Any] = made.world.inspect("clean")["messages"]
    return messages


def build(state: State, base: Path) -> tuple[World, bytes]:
    """Lay the state out as a root: the session cut, head.json as the variant says, the
    workspace as photographed (`session.toml` points at this copy: the workspace is editable)."""
    world = World(base, delay_ms=0)
    session = world.root / "sessions" / state.source
    shutil.copytree(state.photo.path / "session", session)
    workspace = base / "ws"
    shutil.copytree(state.photo.path / "workspace", workspace, symlinks=False)
    toml = session / "session.toml"
    text = toml.read_text()
    text = re.sub(r'(?m)^workspace = ".*"$', f"workspace = {json.dumps(str(workspace))}", text, count=1)
    toml.write_text(text)
    segment = session / "journal" / state.photo.segment
    data = segment.read_bytes()
    segment.write_bytes(data[: state.cut])
    head = session / "head.json"
    if state.head == "stale":
        head.unlink(missing_ok=True)
        if state.photo.stale_head is not None:
            head.write_bytes(state.photo.stale_head)
    elif state.head == "empty":
        head.write_bytes(b"")
    elif state.head == "missing":
        head.unlink(missing_ok=True)
    return world, data


def check(state: State, base: Path, reference: list[Any]) -> str | None:
    """Recover one state; None when it ended as it must, else what went wrong."""
    world, data = build(state, base)
    session = world.root / "sessions" / state.source
    quarantined_before = _quarantine(session)
    proc = subprocess.run(
        world.command("recover", state.source, "--json"),
        capture_output=True,
        env=world.env,
        check=False,
        timeout=120,
    )
    if proc.returncode != 0:
        return f"recover exit {proc.returncode}: {proc.stdout[-400:]!r} {proc.stderr[-600:]!r}"
    info = describe(world.root, state.source)
    if info.get("state") != "COMPLETED":
        return f"state {info.get('state')} after recover"
    if info["messages"] != reference:
        return "the thread differs from a crash-free run"
    workspace = base / "ws"
    notified = (workspace / "quickstart-output" / "notifications.log").read_text().splitlines()
    if len(notified) != 1:
        return f"notify ran {len(notified)} times"
    remembered = json.loads((workspace / "remembered.json").read_text())
    if len(remembered) != 1:
        return f"remembered {remembered}"
    if (workspace / "notes.txt").read_text() != "the sky is blue\n":
        return "notes.txt is wrong"
    journal = (session / "journal" / state.photo.segment).read_bytes()
    if not journal.startswith(data[: state.photo.floor]):
        return "bytes that were synced are gone"
    torn = _torn(data, state.cut)
    quarantined = _quarantine(session)
    for name, content in quarantined_before.items():
        if quarantined.get(name) != content:
            return f"quarantine/{name} from before was replaced or removed"
    new = {name: content for name, content in quarantined.items() if quarantined_before.get(name) != content}
    if torn and list(new.values()) != [torn]:
        return f"the torn {len(torn)} bytes are not in quarantine ({sorted(new)})"
    if not torn and new:
        return f"quarantined {sorted(new)} with nothing torn"
    said = verdict(world.root, state.source)
    if said != "intact":
        return f"verify says {said}"
    return None


def _torn(data: bytes, cut: int) -> bytes:
    """The bytes a cut at `cut` leaves after the last whole record (none when only the newline is lost)."""
    start = data.rfind(b"\n", 0, cut) + 1
    if data[cut : cut + 1] == b"\n":
        return b""  # an intact record without its newline: kept, the newline put back
    return data[start:cut]


def _quarantine(session: Path) -> dict[str, bytes]:
    folder = session / "quarantine"
    return {p.name: p.read_bytes() for p in folder.iterdir()} if folder.is_dir() else {}


def run_states(states: list[State], base: Path, reference: list[Any], workers: int = 2) -> dict[str, Any]:
    started = time.monotonic()

    done: list[str | None] = []

    def one(item: tuple[int, State]) -> tuple[State, str | None]:
        index, state = item
        problem = check(state, base / f"state-{index}", reference)
        done.append(problem)  # progress, for a long run's log: failures as they happen
        if problem or len(done) % 100 == 0:
            failed = sum(1 for p in done if p)
            print(f"  {len(done)}/{len(states)} states, {failed} failed; {state.name}: {problem}", flush=True)
        return state, problem

    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(one, enumerate(states)))
    failures = [(state.name, problem) for state, problem in results if problem]
    figures = {
        "states": len(states),
        "passed": len(states) - len(failures),
        "seconds": round(time.monotonic() - started, 1),
        "by_head": {h: sum(1 for s in states if s.head == h) for h in HEADS},
        "sources": sorted({s.source for s in states}),
    }
    print(f"power-loss states: {json.dumps(figures)}")
    for name, problem in failures[:20]:
        print(f"  FAIL {name}: {problem}")
    assert not failures, f"{len(failures)} of {len(states)} states failed, e.g. {failures[:5]}"
    return figures


def test_the_sources_sync_as_the_durability_rules_say(sources: tuple[Sources, dict[str, list[Path]]]) -> None:
    """Every tool with an effect has its intent synced before it runs, every checkpoint is
    synced, and the photographs cover every sync of the crash-free run."""
    _, scenarios = sources
    clean = photos(scenarios["clean"])
    last = clean[-1].path / "session" / "journal" / clean[-1].segment
    data = last.read_bytes()
    synced_ends = {p.floor for p in clean[1:]} | {len(data)}
    records = data.splitlines(keepends=True)
    offset = 0
    for line in records:
        offset += len(line)
        record = json.loads(line)
        kind = record["type"]
        effect = record["data"].get("side_effect") in ("write", "execute")
        if kind == "checkpoint.created" or kind == "session.completed" or (kind == "tool.intent" and effect):
            assert offset in synced_ends, (kind, offset, sorted(synced_ends))
    assert len(clean) >= 9


def test_power_loss_states_sample(
    sources: tuple[Sources, dict[str, list[Path]]], reference: list[Any], tmp_path: Path
) -> None:
    _, scenarios = sources
    states = all_states(scenarios)
    assert len(states) > 400  # what the slow run covers
    run_states(spread(states, CI_STATES), tmp_path, reference)


@pytest.mark.slow
def test_every_power_loss_state(
    sources: tuple[Sources, dict[str, list[Path]]], reference: list[Any], tmp_path: Path
) -> None:
    _, scenarios = sources
    run_states(all_states(scenarios), tmp_path, reference)


def test_build_cuts_only_after_the_floor(sources: tuple[Sources, dict[str, list[Path]]]) -> None:
    """The state builder itself: cuts never go below what was synced, and every record after
    it is cut at its boundary and inside."""
    _, scenarios = sources
    for photo in photos(scenarios["clean"]):
        found = cuts(photo)
        assert found[0] == photo.floor and all(c >= photo.floor for c in found)
        data = (photo.path / "session" / "journal" / photo.segment).read_bytes()
        assert os.path.getsize(photo.path / "session" / "journal" / photo.segment) == found[-1] == len(data)
