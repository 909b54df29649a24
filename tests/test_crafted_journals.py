"""Crafted journals: records with a valid checksum and chain but content handshake never
writes, and random edits of real journals. What users may rely on, whatever the bytes: only
documented exit codes (never 1, never a traceback), damage named by segment and offset, and
nothing stored changed except what recovery documents (a torn tail cut and quarantined).

Real sessions are made once per module by the console script (finished, interrupted with
and without checkpoints, blocked) and copied for each case. The hypothesis suite runs the
readers and recovery in-process (a few hundred examples by default, thousands under
`-m slow`); a few cases go through real subprocesses.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, note, settings
from hypothesis import strategies as st

from handshake_cli import journal
from tests import crafted
from tests.crafted import BODY_KINDS, KINDS, cli_in_process, cli_subprocess, snapshot
from tests.peak_memory import PEAK_KIB
from tests.test_run import write_job

HERE = Path(__file__).resolve().parent
EFFECT = HERE / "recover_jobs" / "effect.py"

TURNS = [
    {
        "text": "Writing the first file now.",
        "tool_calls": [{"tool": "write_file", "args": {"path": "a.txt", "content": "one"}}],
    },
    {"text": "Reading it back to be sure.", "tool_calls": [{"tool": "read_file", "args": {"path": "a.txt"}}]},
    {
        "text": "And a second file after that.",
        "tool_calls": [{"tool": "write_file", "args": {"path": "b.txt", "content": "two"}}],
    },
    {"text": "All done here."},
]
TOOLS = [
    {"name": "write_file", "builtin": "write_file", "side_effect": "write", "idempotency": "idempotent"},
    {"name": "read_file", "builtin": "read_file", "side_effect": "read", "idempotency": "idempotent"},
]
NO_CHECKPOINTS = {
    "every_messages": 1000,
    "every_tokens": 100000,
    "after_tool_call": False,
    "on_state_change": False,
}

# Exit codes a reader or recovery may give for a damaged or crafted journal (README's table).
DOCUMENTED = {0, 2, 3, 5, 6, 7, 74, 75}


def _run(root: Path, *args: str, crash_at: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {"NO_COLOR": "1", "PATH": "/usr/bin:/bin", "HOME": str(root.parent)}
    if crash_at:
        env["HANDSHAKE_CRASH_AT"] = crash_at
    return subprocess.run(
        [sys.executable, "-m", "handshake_cli", *args, "--root", str(root)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
        start_new_session=True,
    )


@pytest.fixture(scope="module")
def bases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Roots each holding one real session named after its state."""
    top = tmp_path_factory.mktemp("bases")
    made: dict[str, Path] = {}

    def make(
        name: str,
        turns: list[dict[str, Any]],
        tools: list[dict[str, Any]],
        crash_at: str | None,
        **top_keys: Any,
    ) -> Path:
        root = top / name / "root"
        workspace = top / name / "ws"
        workspace.mkdir(parents=True)
        job = write_job(top / name / "job", turns, tools, **top_keys)
        proc = _run(
            root, "run", str(job), "--session-id", name, "--workspace", str(workspace), crash_at=crash_at
        )
        expected = -signal.SIGKILL if crash_at else 0
        assert proc.returncode == expected, proc.stdout + proc.stderr
        made[name] = root
        return root

    make("finished", TURNS, TOOLS, None)
    make("interrupted", TURNS, TOOLS, "before_result:3")
    make("bare", TURNS, TOOLS, "before_result:3", checkpoint=NO_CHECKPOINTS)
    send = {
        "name": "send",
        "command": [sys.executable, str(EFFECT)],
        "side_effect": "execute",
        "idempotency": "non_idempotent",
    }
    root = make(
        "blocked",
        [
            {"text": "Sending.", "tool_calls": [{"tool": "send", "args": {"message": "hi"}}]},
            {"text": "Sent."},
        ],
        [send],
        "before_result",
    )
    proc = _run(root, "recover", "blocked")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    return made


def install(bases: dict[str, Path], name: str, target: Path) -> tuple[Path, Path]:
    """A copy of base session `name` under `target`; returns (root, its journal dir)."""
    crafted.copy_session(bases[name], target)
    return target, target / "sessions" / name / "journal"


def lines_of(journal_dir: Path) -> list[crafted.Line]:
    return crafted.read_lines(journal_dir)


def index_of(journal_dir: Path, type_: str | None, *, last: bool = False) -> int:
    """The last record of `type_` (any type: the one before the last record, or the last)."""
    lines = lines_of(journal_dir)
    if type_ is None:
        return len(lines) - 1 if last else len(lines) - 2
    matches = [i for i, line in enumerate(lines) if crafted.decoded(line.content)["type"] == type_]
    assert matches, type_
    return matches[-1]


def assert_no_bug(outcome: crafted.Outcome, allowed: set[int] = DOCUMENTED) -> None:
    text = outcome.stdout + outcome.stderr
    assert outcome.code in allowed, (outcome.code, text[-3000:])
    assert "Traceback" not in text and "internal error" not in text, text[-3000:]


# -- defect 4: 25+ kinds of crafted record -----------------------------------------------------


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_crafted_record_is_damage_for_every_reader(
    kind: str, bases: dict[str, Path], tmp_path: Path
) -> None:
    type_, maker = KINDS[kind]
    base = "finished" if type_ == "checkpoint.created" else "bare"
    root, journal_dir = install(bases, base, tmp_path / "root")
    index = index_of(journal_dir, type_)
    content = lines_of(journal_dir)[index].content
    head = maker(crafted.decoded(content), crafted.head_of(content))
    crafted.replace_head(journal_dir, base, index, head)
    segment, offset = crafted.offset_of(journal_dir, index)
    where = rf"{re.escape(segment)} (offset|byte) {offset}\b"
    before = snapshot(root / "sessions" / base)

    verify = cli_in_process(root, "inspect", base, "--verify", "--json")
    assert_no_bug(verify, {5})
    damage = json.loads(verify.stdout)["journal"]["damage"]
    assert (damage["kind"], damage["segment"], damage["offset"]) == ("corrupt", segment, offset), damage

    for args in (["recover", base, "--dry-run"], ["recover", base]):
        outcome = cli_in_process(root, *args)
        assert_no_bug(outcome, {5})
        assert re.search(where, outcome.stdout + outcome.stderr), outcome.stderr
    for args in (
        ["inspect", base, "--json"],
        ["inspect", base],
        ["inspect", base, "--events"],
        ["inspect", base, "--events", "--json"],
        ["inspect", base, "--at", "2"],
        ["inspect", "--json"],
        ["gc", "--dry-run", "--json"],
    ):
        assert_no_bug(cli_in_process(root, *args))
    assert snapshot(root / "sessions" / base) == before


def test_there_are_at_least_25_kinds() -> None:
    assert len(KINDS) >= 25


@pytest.mark.parametrize("kind", ["data_string", "message_string", "invalid_utf8", "deep_100k"])
def test_a_crafted_last_record_is_damage_not_a_torn_tail(
    kind: str, bases: dict[str, Path], tmp_path: Path
) -> None:
    """A last record with a valid checksum was not torn by a crash: recovery does not cut it."""
    type_, maker = KINDS[kind]
    root, journal_dir = install(bases, "bare", tmp_path / "root")
    lines = lines_of(journal_dir)
    index = index_of(journal_dir, type_)
    lines = lines[: index + 1]  # make the target the last record
    crafted.write_lines(journal_dir, lines)
    head = maker(crafted.decoded(lines[index].content), crafted.head_of(lines[index].content))
    crafted.replace_head(journal_dir, "bare", index, head)
    before = snapshot(root / "sessions" / "bare")
    verify = cli_subprocess(root, "inspect", "bare", "--verify", "--json")
    assert_no_bug(verify, {5})
    assert json.loads(verify.stdout)["journal"]["damage"]["kind"] == "corrupt"
    recover = cli_subprocess(root, "recover", "bare")
    assert_no_bug(recover, {5})
    assert snapshot(root / "sessions" / "bare") == before


@pytest.mark.parametrize("kind", sorted(BODY_KINDS))
def test_a_crafted_checkpoint_body_with_a_valid_hash_is_passed_over(
    kind: str, bases: dict[str, Path], tmp_path: Path
) -> None:
    """A body whose sha256 checks out but whose shape handshake never writes is
    checkpoint_invalid: recovery falls back to an older checkpoint and finishes the run."""
    root, journal_dir = install(bases, "interrupted", tmp_path / "root")
    index = index_of(journal_dir, "checkpoint.created")
    content = lines_of(journal_dir)[index].content
    head = crafted.resealed_checkpoint(crafted.head_of(content), BODY_KINDS[kind])
    crafted.replace_head(journal_dir, "interrupted", index, head)

    verify = cli_in_process(root, "inspect", "interrupted", "--verify", "--json")
    assert_no_bug(verify, {0})
    problems = json.loads(verify.stdout)["artifacts"]["problems"]
    # --verify checks each body on its own; a delta's missing parent is the loader's to find.
    expected = [] if kind == "snapshot_false_no_parent" else ["checkpoint_invalid"]
    assert [p["kind"] for p in problems] == expected, problems
    plan = cli_in_process(root, "recover", "interrupted", "--dry-run", "--json")
    assert_no_bug(plan, {0})
    assert json.loads(plan.stdout)["skipped_checkpoints"], plan.stdout
    assert_no_bug(cli_in_process(root, "inspect", "interrupted", "--json"), {0})
    done = cli_in_process(root, "recover", "interrupted", "--json")
    assert_no_bug(done, {0})
    final = cli_in_process(root, "inspect", "interrupted", "--json")
    assert json.loads(final.stdout)["state"] == "COMPLETED"


def test_a_record_larger_than_the_limit_is_refused_before_it_is_written(tmp_path: Path) -> None:
    journal_dir = tmp_path / "journal"
    journal_dir.mkdir()
    with journal.JournalWriter.create(journal_dir, "big") as writer:
        writer.append("session.created", {"job_name": "x"})
        with pytest.raises(journal.RecordRefused, match="limit"):
            writer.append("model.chunk", {"turn": 1, "text": "x" * journal.MAX_RECORD_BYTES})
        with pytest.raises(journal.RecordRefused, match="nests deeper"):
            writer.append("note.deep", {"x": json.loads("[" * 250 + "]" * 250)})
        with pytest.raises(journal.RecordRefused, match="not one handshake writes"):
            writer.append("model.completed", {"turn": 1, "message": "hello"})
        writer.append("session.completed", {"reason": "ok", "turns": 0})
    result = journal.scan(journal_dir, "big")
    assert result.damage is None and result.count == 2


def test_a_5_mb_prompt_still_runs(tmp_path: Path) -> None:
    root = tmp_path / "root"
    job = write_job(tmp_path / "job", [{"text": "ok"}], [])
    text = job.read_text().replace('user = "Do the thing."', 'user = "' + "p" * (5 * 1024 * 1024) + '"')
    job.write_text(text)
    proc = _run(root, "run", str(job), "--session-id", "big-prompt", "--workspace", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    verify = _run(root, "inspect", "big-prompt", "--verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_an_oversized_segment_is_damage_and_never_loaded_whole(
    bases: dict[str, Path], tmp_path: Path
) -> None:
    """A last segment of 512 MiB (sparse: it costs no disk) is corrupt where its records end;
    readers read at most MAX_SEGMENT_BYTES of it (the RSS check is the test's own bound)."""
    root, journal_dir = install(bases, "finished", tmp_path / "root")
    last = journal.list_segments(journal_dir)[-1]
    path = journal_dir / last
    size = path.stat().st_size
    with path.open("r+b") as handle:
        handle.truncate(512 * 1024 * 1024)
    before = {name: (journal_dir / name).stat().st_size for name in journal.list_segments(journal_dir)}
    probe = (
        "import sys\n"
        "from handshake_cli.cli.app import main\n"
        "try:\n    main(sys.argv[1:])\n"
        "except SystemExit as exc:\n"
        "    code = exc.code\n"
        f"rss = {PEAK_KIB}\n"
        "print('RSS', rss, file=sys.stderr)\n"
        "sys.exit(code)\n"
    )
    for args in (
        ["inspect", "finished", "--verify", "--json"],
        ["recover", "finished", "--dry-run"],
        ["inspect", "--json"],
    ):
        proc = subprocess.run(
            [sys.executable, "-c", probe, *args, "--root", str(root)],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
        rss_kib = int(proc.stderr.rsplit("RSS ", 1)[1].split()[0])
        print(args, "peak", rss_kib, "KiB")
        assert rss_kib < 400 * 1024, (args, rss_kib)
        if args[0] == "inspect" and "--verify" in args:
            assert proc.returncode == 5, proc.stdout + proc.stderr
            damage = json.loads(proc.stdout)["journal"]["damage"]
            assert (damage["kind"], damage["segment"], damage["offset"]) == ("corrupt", last, size)
            assert "more than the" in damage["detail"]
        else:
            assert proc.returncode in (0, 5), proc.stdout + proc.stderr
    assert size < journal.MAX_SEGMENT_BYTES
    assert {
        name: (journal_dir / name).stat().st_size for name in journal.list_segments(journal_dir)
    } == before


# -- the hypothesis suite ----------------------------------------------------------------------

BASES = ("finished", "interrupted", "bare", "blocked")
SMALL_RECORD = 32 * 1024  # the limits the suite runs with (the real ones are 64 MiB and 72 MiB)
SMALL_SEGMENT = 256 * 1024
CHECKS = {"suite_examples": 0}


def _type(line: crafted.Line) -> str | None:
    try:
        return str(crafted.decoded(line.content)["type"])
    except (ValueError, KeyError, TypeError):
        return None  # an earlier edit left a line that is no record


def _edit(draw: st.DrawFn, journal_dir: Path, session_id: str) -> str:
    """Apply one random edit to the journal; return its description."""
    lines = lines_of(journal_dir)
    segments = journal.list_segments(journal_dir)
    what = draw(
        st.sampled_from(
            [
                "content",
                "body",
                "flip",
                "cut",
                "insert",
                "duplicate",
                "swap",
                "drop",
                "oversized",
                "oversized_segment",
                "junk_segment",
                "junk_tail",
            ]
        )
    )
    if not lines:
        return f"{what} (no whole line left)"
    index = draw(st.integers(0, len(lines) - 1))
    line = lines[index]
    if what == "content":
        kind = draw(st.sampled_from(sorted(KINDS)))
        type_, maker = KINDS[kind]
        candidates = [i for i, item in enumerate(lines) if type_ is None or _type(item) == type_]
        if candidates:
            index = draw(st.sampled_from(candidates))
            try:
                head = maker(crafted.decoded(lines[index].content), crafted.head_of(lines[index].content))
            except (AssertionError, ValueError, KeyError, TypeError, AttributeError):
                return "content (not applicable)"
            crafted.replace_head(journal_dir, session_id, index, head)
        return f"content {kind} at {index}"
    if what == "body":
        checkpoints = [i for i, item in enumerate(lines) if _type(item) == "checkpoint.created"]
        if not checkpoints:
            return "body (none)"
        index = draw(st.sampled_from(checkpoints))
        kind = draw(st.sampled_from(sorted(BODY_KINDS)))
        try:
            head = crafted.resealed_checkpoint(crafted.head_of(lines[index].content), BODY_KINDS[kind])
        except (ValueError, KeyError, TypeError, AttributeError):
            return "body (not applicable)"
        crafted.replace_head(journal_dir, session_id, index, head)
        return f"body {kind} at {index}"
    if what in ("flip", "cut", "junk_tail"):
        name = draw(st.sampled_from(segments))
        path = journal_dir / name
        data = bytearray(path.read_bytes())
        if not data:
            return what + " (empty)"
        at = draw(st.integers(0, len(data) - 1))
        if what == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif what == "cut":
            del data[at:]
        else:
            data += draw(st.binary(min_size=1, max_size=200))
        path.write_bytes(bytes(data))
        return f"{what} {name}@{at}"
    if what == "insert":
        other = lines[draw(st.integers(0, len(lines) - 1))]
        lines.insert(index, crafted.Line(line.segment, other.content))
    elif what == "duplicate":
        lines.insert(index + 1, crafted.Line(line.segment, line.content))
    elif what == "swap":
        other = draw(st.integers(0, len(lines) - 1))
        lines[index].content, lines[other].content = lines[other].content, lines[index].content
    elif what == "drop":
        del lines[index]
    elif what == "oversized":
        # A record past the record limit (scaled down by `small_limits`), sealed and chained.
        try:
            last = crafted.decoded(lines[-1].content)
        except ValueError:
            return "oversized (no record to follow)"
        head = crafted._with_data(
            {"seq": last["seq"] + 1, "ts": last["ts"], "type": "model.chunk"},
            json.dumps({"turn": 1, "text": "y" * (SMALL_RECORD + 100)}).encode(),
        )
        content, _ = crafted.seal(head, last["sum"])
        lines.append(crafted.Line(segments[-1], content))
    elif what == "oversized_segment":
        path = journal_dir / segments[-1]
        path.write_bytes(path.read_bytes() + b"z" * (SMALL_SEGMENT + 10))
        return "oversized_segment"
    elif what == "junk_segment":
        last_seq = len(lines)
        name = journal.segment_name(draw(st.sampled_from([last_seq + 1, last_seq, 1, last_seq + 5])))
        if name in segments:
            return "junk_segment (exists)"
        (journal_dir / name).write_bytes(draw(st.binary(max_size=300)))
        return f"junk_segment {name}"
    crafted.write_lines(journal_dir, lines)
    return f"{what} at {index}"


def _check_only_recovery_changed(before: dict[str, bytes], after: dict[str, bytes], recovered: bool) -> None:
    """Readers change nothing; recovery only appends, or cuts a torn tail it quarantined."""
    for name, old in before.items():
        if not name.startswith("journal/"):
            continue
        new = after.get(name)
        assert new is not None, f"{name} disappeared"
        if new == old:
            continue
        assert recovered, f"{name} changed by a reader"
        if new.startswith(old):
            continue
        quarantined = [k for k in after if k.startswith(f"quarantine/{name.split('/')[1]}.")]
        assert quarantined, f"{name} was cut without a quarantine file"
        offset = int(quarantined[-1].split(".")[-2])
        assert new[:offset] == old[:offset]
        assert after[quarantined[-1]] == old[offset:], "the quarantine does not hold the cut bytes"
    for name, old in before.items():
        if name.startswith("quarantine/"):
            assert after.get(name) == old, f"{name} changed"


def _readers(session_id: str) -> list[list[str]]:
    return [
        ["inspect", session_id, "--json"],
        ["inspect", session_id],
        ["inspect", session_id, "--events", "--json"],
        ["inspect", session_id, "--at", "3", "--json"],
        ["inspect", "--json"],
        ["recover", session_id, "--dry-run", "--json"],
        ["gc", "--dry-run", "--json"],
    ]


def _exercise(root: Path, session_id: str, readers: list[list[str]]) -> list[tuple[str, int]]:
    """`inspect --verify`, the given readers, then `recover`; checks after each."""
    session = root / "sessions" / session_id
    before = snapshot(session)
    seen = []
    for args in [["inspect", session_id, "--verify", "--json"], *readers]:
        outcome = cli_in_process(root, *args)
        assert_no_bug(outcome)
        seen.append((" ".join(args[:1] + args[2:3]), outcome.code))
    middle = snapshot(session)
    _check_only_recovery_changed(before, middle, recovered=False)
    outcome = cli_in_process(root, "recover", session_id, "--json")
    assert_no_bug(outcome)
    seen.append(("recover", outcome.code))
    after = snapshot(session)
    _check_only_recovery_changed(before, after, recovered=outcome.code in (0, 3, 75))
    if outcome.code == 5:
        assert {k: v for k, v in after.items() if k.startswith("journal/")} == {
            k: v for k, v in before.items() if k.startswith("journal/")
        }
    return seen


def _one_example(bases: dict[str, Path], data: st.DataObject, work: Path, *, everything: bool) -> None:
    base = data.draw(st.sampled_from(BASES))
    root, journal_dir = install(bases, base, work)
    edits = [_edit(data.draw, journal_dir, base) for _ in range(data.draw(st.integers(1, 3)))]
    # Every reader in the slow run; in CI two of them per example (each costs ~0.1 s here).
    readers = _readers(base)
    if not everything:
        readers = [
            readers[i] for i in data.draw(st.sets(st.integers(0, len(readers) - 1), min_size=2, max_size=2))
        ]
    seen = _exercise(root, base, readers)
    CHECKS["suite_examples"] += 1
    note(f"{base}: {edits} -> {seen}")


@pytest.fixture
def small_limits(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Limits scaled down so an oversized line or segment is a few KiB, not 64 MiB."""
    from handshake_cli import records

    monkeypatch.setattr(records, "MAX_RECORD_BYTES", SMALL_RECORD)
    monkeypatch.setattr(journal, "MAX_RECORD_BYTES", SMALL_RECORD)
    monkeypatch.setattr(journal, "MAX_SEGMENT_BYTES", SMALL_SEGMENT)
    yield


# No shrinking: an example is a whole session copied and read ~8 times; the note says what was done.
@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)
@given(data=st.data())
def test_crafted_journals_ci(
    bases: dict[str, Path], tmp_path_factory: pytest.TempPathFactory, small_limits: None, data: st.DataObject
) -> None:
    _one_example(bases, data, tmp_path_factory.mktemp("case") / "root", everything=False)


@pytest.mark.slow
@settings(
    max_examples=int(os.environ.get("HANDSHAKE_CRAFTED_EXAMPLES", "3000")),
    deadline=None,
    suppress_health_check=list(HealthCheck),
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)
@given(data=st.data())
def test_crafted_journals_slow(
    bases: dict[str, Path], tmp_path_factory: pytest.TempPathFactory, small_limits: None, data: st.DataObject
) -> None:
    _one_example(bases, data, tmp_path_factory.mktemp("case") / "root", everything=True)


@pytest.mark.parametrize("seed", range(4))
def test_crafted_journals_through_the_console_script(
    seed: int, bases: dict[str, Path], tmp_path: Path
) -> None:
    """A few edited journals through real processes: the same promises outside pytest's process."""
    rng = random.Random(seed)
    base = BASES[seed % len(BASES)]
    root, journal_dir = install(bases, base, tmp_path / "root")
    kind = sorted(KINDS)[rng.randrange(len(KINDS))]
    type_, maker = KINDS[kind]
    index = index_of(journal_dir, type_) if type_ != "checkpoint.created" or base != "bare" else 1
    content = lines_of(journal_dir)[index].content
    try:
        head = maker(crafted.decoded(content), crafted.head_of(content))
    except AssertionError:
        head = KINDS["data_string"][1](crafted.decoded(content), crafted.head_of(content))
    crafted.replace_head(journal_dir, base, index, head)
    before = snapshot(root / "sessions" / base)
    for args in (
        ["inspect", base, "--verify"],
        ["inspect", base, "--events"],
        ["recover", base, "--dry-run"],
        ["recover", base],
    ):
        assert_no_bug(cli_subprocess(root, *args))
    after = snapshot(root / "sessions" / base)
    _check_only_recovery_changed(before, after, recovered=True)
    shutil.rmtree(root)
