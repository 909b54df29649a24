"""Long sessions (issue 13): what reading one costs does not grow with its history.

- Loading a checkpoint lazily reads its own record and nothing else; its messages, ledger and
  abandoned calls are read (and checked, link by link) from the delta chain only when used,
  and then equal what an eager load gives.
- Planning a recovery (`recover --dry-run`) decodes no message of the history, and, for a
  plan without calls in doubt, the in-process rebuild does not parse session.toml's job.
- A self-contradicting newest checkpoint is still passed over by a lazy load.

Reads are counted at the one function every checkpoint read goes through
(`checkpoints.record_at`) and session.toml reads at `SessionDir.read_config`: no timing.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from handshake_cli.engine import launch
from handshake_cli.engine.jobs import load_job
from handshake_cli.paths import Paths
from handshake_cli.recovery import execute
from handshake_cli.recovery.plan import make_plan
from handshake_cli.recovery.view import rebuild
from handshake_cli.session import checkpoints
from handshake_cli.session.checkpoints import CheckpointInvalid, CheckpointRef, load
from handshake_cli.session.thread import LazyThread, digest, fold_thread
from handshake_cli.storage.filesystem import FilesystemStore
from handshake_cli.storage.journal import scan as journal_scan
from handshake_cli.storage.journal.scan import scan
from handshake_cli.storage.journal.writer import JournalWriter
from handshake_cli.storage.store import SessionDir
from tests.support.jobs import READ, write_job

TURNS = 40


@pytest.fixture(scope="module")
def long_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SessionDir]:
    """A finished session of TURNS read_file turns: a checkpoint after every call, so its
    newest checkpoint sits at the end of a long delta chain."""
    tmp = tmp_path_factory.mktemp("long")
    turns: list[dict[str, Any]] = [
        {
            "text": f"Reading f.txt, turn {i}.",
            "tool_calls": [{"tool": "read_file", "args": {"path": "f.txt"}}],
        }
        for i in range(TURNS)
    ]
    job = write_job(tmp / "job", [*turns, {"text": "Done."}], [READ], limits={"max_turns": TURNS + 1})
    workspace = tmp / "ws"
    workspace.mkdir()
    (workspace / "f.txt").write_text("some content\n")
    store = FilesystemStore(Paths(tmp / "root"))
    result = launch.start(load_job(job), store, workspace=workspace, session_id="long")
    assert result.state == "COMPLETED"
    yield store.session("long")


def store_of(session: SessionDir) -> FilesystemStore:
    """The filesystem store whose root holds `session` (`<root>/sessions/<id>`)."""
    return FilesystemStore(Paths(session.path.parent.parent))


class Reads:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        real = checkpoints.record_at

        def counted(*where: Any) -> Any:
            self.count += 1
            return real(*where)

        monkeypatch.setattr(checkpoints, "record_at", counted)


def newest_ref(session: SessionDir) -> tuple[CheckpointRef, list[Any]]:
    records = scan(session.journal, session.session_id).records
    newest = [r for r in records if r.type == "checkpoint.created"][-1]
    return CheckpointRef.from_record(newest), records


def chain_length(session: SessionDir, ref: CheckpointRef) -> int:
    body = checkpoints.read_body(store_of(session), ref, session.session_id)
    length = 1
    while not body["snapshot"]:
        body = checkpoints.read_body(
            store_of(session), CheckpointRef.from_json(body["parent"]), session.session_id
        )
        length += 1
    return length


def test_a_lazy_load_reads_one_record_and_the_chain_only_when_used(
    long_session: SessionDir, monkeypatch: pytest.MonkeyPatch
) -> None:
    ref, records = newest_ref(long_session)
    links = chain_length(long_session, ref)
    assert links > 5, "the fixture should give the newest checkpoint a long delta chain"
    eager = load(store_of(long_session), ref, long_session.session_id)
    reads = Reads(monkeypatch)
    lazy = load(store_of(long_session), ref, long_session.session_id, lazy=True)
    assert reads.count == 1  # its own record, whatever the session's length
    assert isinstance(lazy.thread, LazyThread) and not lazy.thread.loaded
    assert (lazy.thread.pending, lazy.thread.turn, lazy.thread.in_flight) == (
        eager.thread.pending,
        eager.thread.turn,
        eager.thread.in_flight,
    )
    assert lazy.thread.messages == eager.thread.messages  # now the chain is read, link by link
    assert reads.count == links
    assert lazy.thread.ledger == eager.thread.ledger and lazy.thread.abandoned == eager.thread.abandoned
    assert reads.count == links  # once
    expected = fold_thread(records[: ref.covers_seq])
    assert lazy.thread.messages == expected.messages and lazy.thread.ledger == expected.ledger


def test_a_lazy_thread_keeps_what_the_fold_adds_after_its_checkpoint(long_session: SessionDir) -> None:
    records = scan(long_session.journal, long_session.session_id).records
    deltas = [r for r in records if r.type == "checkpoint.created" and not r.data["snapshot"]]
    middle = deltas[len(deltas) // 2]
    ref = CheckpointRef.from_record(middle)
    after = [r for r in records if r.seq > middle.data["covers_seq"]]
    assert any(r.type == "tool.result" for r in after)
    lazy = load(store_of(long_session), ref, long_session.session_id, lazy=True).thread
    folded = fold_thread(after, base=lazy)
    assert isinstance(folded, LazyThread) and not folded.loaded  # appends wait for the parts
    whole = fold_thread(records)
    assert (folded.messages, folded.ledger, folded.pending, folded.turn) == (
        whole.messages,
        whole.ledger,
        whole.pending,
        whole.turn,
    )


def test_planning_reads_no_history_and_no_job(
    long_session: SessionDir, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_config(self: SessionDir, **_: Any) -> dict[str, Any]:
        raise AssertionError("session.toml was read")

    full = rebuild(store_of(long_session), long_session.session_id)
    reads = Reads(monkeypatch)
    monkeypatch.setattr(SessionDir, "read_config", no_config)
    view = rebuild(store_of(long_session), long_session.session_id, read_job=False, lazy_thread=True)
    plan = make_plan(view, [])
    assert plan.as_json() == make_plan(full, []).as_json()
    assert reads.count == 0  # the candidate found from the end is the record: no read of the chain
    assert isinstance(view.thread, LazyThread) and not view.thread.loaded
    assert view.record.as_json() == full.record.as_json()


def test_dry_run_decodes_no_message_of_the_history(
    long_session: SessionDir, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = store_of(long_session)
    reads = Reads(monkeypatch)
    result = execute.recover(store, "long", execute.Options(dry_run=True))
    assert result.plan.action == "nothing" and not result.executed
    assert reads.count == 0


def test_a_lazy_load_still_refuses_a_newest_checkpoint_that_contradicts_itself(
    long_session: SessionDir, tmp_path: Path
) -> None:
    import shutil

    copy_dir = tmp_path / "sessions" / "long"
    shutil.copytree(long_session.path, copy_dir)
    session = SessionDir("long", copy_dir)
    ref, records = newest_ref(session)
    good = next(r for r in records if r.seq == ref.seq)
    forged = copy.deepcopy(good.data)
    forged["checkpoint_id"] = forged["body"]["checkpoint_id"] = "ck-999"
    forged["body"]["message_count"] += 1  # more messages than it holds
    forged["artifact_id"] = digest(forged["body"])
    journal = JournalWriter.open(session.journal, "long")
    try:
        bad = journal.append("checkpoint.created", forged, sync=True)
    finally:
        journal.close()
    with pytest.raises(CheckpointInvalid, match="tail id"):
        load(store_of(session), CheckpointRef.from_record(bad), "long", lazy=True)
    view = rebuild(store_of(session), session.session_id, read_job=False, lazy_thread=True)
    assert view.base is not None and view.base.checkpoint_id == good.data["checkpoint_id"]
    assert [s["checkpoint_id"] for s in view.skipped] == ["ck-999"]


def test_a_checkpoint_is_hashed_in_the_bytes_it_was_written_in(
    long_session: SessionDir, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its body is not encoded again to be checked (that costs as much as the body is long)."""
    encoded_bodies: list[str] = []
    real = digest

    def watched(value: Any) -> str:
        if isinstance(value, dict) and "checkpoint_id" in value:
            encoded_bodies.append(value["checkpoint_id"])
        return real(value)

    monkeypatch.setattr(checkpoints, "digest", watched)
    ref, _ = newest_ref(long_session)
    loaded = load(store_of(long_session), ref, long_session.session_id)
    assert loaded.thread.messages and encoded_bodies == []


@pytest.mark.parametrize("window", [64, 1000, 1 << 30])
def test_the_newest_checkpoint_is_found_whatever_the_search_window(
    long_session: SessionDir, monkeypatch: pytest.MonkeyPatch, window: int
) -> None:
    from handshake_cli.recovery import view as view_module
    from handshake_cli.storage.journal import backwards

    ref, _ = newest_ref(long_session)
    monkeypatch.setattr(backwards, "FIRST_WINDOW", window)
    found = list(view_module.checkpoint_candidates(store_of(long_session), long_session.session_id))
    every = [
        r
        for r in scan(long_session.journal, long_session.session_id).records
        if r.type == "checkpoint.created"
    ]
    assert [r.seq for r in found] == [r.seq for r in reversed(every)]
    assert found[0].seq == ref.seq


@pytest.mark.parametrize("tail", [b"", b'{"seq":99999,"ts":"torn', b"garbage\n" + b"x" * 40])
def test_a_scan_from_a_checkpoint_reads_from_its_offset_and_reports_what_a_full_scan_does(
    long_session: SessionDir, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tail: bytes
) -> None:
    import shutil

    from handshake_cli.storage.journal.scan import Start

    copy_dir = tmp_path / "sessions" / "long"
    shutil.copytree(long_session.path, copy_dir)
    session = SessionDir("long", copy_dir)
    segment = sorted(session.journal.iterdir())[-1]
    with open(segment, "ab") as handle:
        handle.write(tail)
    full = scan(session.journal, "long")
    ref, _ = newest_ref(session)
    at = next(r for r in full.records if r.seq == ref.seq)
    starts: list[int] = []
    real = journal_scan.read_segment

    def spy(path: Path, start: int = 0) -> tuple[bytes, int]:
        starts.append(start)
        return real(path, start)

    monkeypatch.setattr(journal_scan, "read_segment", spy)
    partial = scan(session.journal, "long", start=Start(at.segment, at.offset, at.seq, at.prev))
    assert starts == [at.offset]  # the bytes before the checkpoint are not read
    assert [(r.seq, r.offset) for r in partial.records] == [
        (r.seq, r.offset) for r in full.records if r.seq >= at.seq
    ]
    assert (partial.last_seq, partial.last_sum, partial.damage) == (full.last_seq, full.last_sum, full.damage)
    assert partial.valid_ends[segment.name] == full.valid_ends[segment.name]


def _walked_depth_exceeds(value: Any, limit: int) -> bool:
    """The depth check as it was: a walk of the decoded value (the reference)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def test_the_depth_check_on_the_text_agrees_with_a_walk_of_the_value() -> None:
    """Brackets, quotes and backslashes inside strings and keys, escaped or not, UTF-8 or
    ASCII-escaped, nested just under, at and over the limit."""
    import json
    import random

    from handshake_cli.storage.journal.records import depth_exceeds

    rnd = random.Random(13)
    leaves = [1, "a[b]{", 'q"\\\\"[', "\\", None, True, 2.5, "é[}", '\\"]', "\\\\", '{\\\\[\\"']
    keys = ["k[", 'x"{', "\\\\", "z", "é]"]

    def value(depth: int) -> Any:
        if depth <= 0 or rnd.random() < 0.2:
            return rnd.choice(leaves)
        if rnd.random() < 0.5:
            return [value(depth - 1) for _ in range(rnd.randint(0, 3))]
        return {rnd.choice(keys) + str(i): value(depth - 1) for i in range(rnd.randint(0, 3))}

    def nested(levels: int, inner: Any) -> Any:
        for level in range(levels):
            inner = [inner] if level % 2 else {'a\\"[': inner}
        return inner

    checked = 0
    for index in range(600):
        data = nested(rnd.randint(0, 30), value(rnd.randint(0, 6))) if index % 2 else value(8)
        for limit in (1, 2, 3, 5, 8, 13, 30):
            for ascii_only in (True, False):
                text = json.dumps({"data": data}, ensure_ascii=ascii_only, separators=(",", ":"))
                expected = _walked_depth_exceeds({"data": data}, limit)
                assert depth_exceeds(text.encode(), {"data": data}, limit) == expected, (text, limit)
                checked += expected
    assert checked > 100  # the deep cases were reached
    deep = json.loads("[" * 250 + "]" * 250)
    assert depth_exceeds(json.dumps(deep).encode(), deep) and not depth_exceeds(b"[[]]", [[]])
