"""The session-store conformance suite: what every store must do, proven against each one.

Written against `handshake_cli.storage.contract` only: a test reaches a store through its
contract, and reaches past it only through the harness (tests/conformance/stores.py), for
what a contract must not offer (damaging bytes, a crash, another process). A store is
anything that passes this file; the filesystem store passes it over real files and real
processes, the in-memory store in milliseconds.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from handshake_cli.errors import (
    ArtifactCorrupt,
    IntegrityError,
    InvalidSessionId,
    JournalNeedsRepair,
    NotFound,
    SessionExists,
    SessionLocked,
)
from handshake_cli.storage.contract import Durability, JournalAppender, Lease, SessionStore
from handshake_cli.storage.journal.codec import Record, encode
from handshake_cli.storage.journal.records import RecordRefused
from handshake_cli.storage.journal.scan import Start
from tests.conformance.stores import STORES, Harness, make_harness

CONFIG = {"job": {"name": "conformance", "prompt": {"user": "hello"}}, "workspace": "/nowhere"}
CREATED = {"job_name": "conformance", "workspace": "/nowhere"}
ELSEWHERE = "handshake run job.toml --session-id elsewhere"


# What a record's `data` may be: any JSON object the encoder writes.
JSON_VALUE = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)
RECORD_DATA = st.dictionaries(st.text(max_size=8), JSON_VALUE, max_size=4)


def head_for(record: Record) -> dict[str, Any]:
    return {"state": "CREATED", "last_seq": record.seq}


def new_session(store: SessionStore, session_id: str | None = None) -> str:
    return store.create_session(CONFIG, CREATED, head_for=head_for, session_id=session_id)


def notes(appender: JournalAppender, count: int) -> list[Record]:
    return [appender.append("test.note", {"n": n}) for n in range(count)]


def append_notes(lease: Lease, count: int) -> list[Record]:
    """`count` records appended under `lease`, through an appender opened for them."""
    journal = lease.open_journal()
    try:
        return notes(journal, count)
    finally:
        journal.close()


def write_notes(store: SessionStore, session_id: str, count: int) -> list[Record]:
    with store.acquire(session_id) as lease:
        return append_notes(lease, count)


def start_at(record: Record) -> Start:
    return Start(record.segment, record.offset, record.seq, record.prev)


@pytest.fixture(params=STORES)
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Harness:
    return make_harness(request.param, tmp_path)


@pytest.fixture
def store(harness: Harness) -> SessionStore:
    return harness.store


@pytest.fixture
def session_id(store: SessionStore) -> str:
    return new_session(store, "conformance-1")


@pytest.fixture
def appender(store: SessionStore, session_id: str) -> Iterator[JournalAppender]:
    with store.acquire(session_id, command="conformance") as lease:
        journal = lease.open_journal()
        try:
            yield journal
        finally:
            journal.close()


# -- sessions --------------------------------------------------------------------------------------


def test_a_created_session_is_listed_with_its_config_first_record_and_head(store: SessionStore) -> None:
    assert store.session_ids() == []
    second = new_session(store, "b-session")
    first = new_session(store, "a-session")
    generated = new_session(store)

    assert store.session_ids() == sorted([first, second, generated])
    config = store.read_config(first)
    assert config["job"] == CONFIG["job"] and config["workspace"] == "/nowhere"
    assert config["session_id"] == first and isinstance(config["format_version"], int)
    result = store.scan(first)
    assert result.damage is None
    [record] = result.records
    assert record.seq == 1 and record.type == "session.created" and record.ts == config["created_at"]
    assert record.data["job_name"] == "conformance" and record.data["session_id"] == first
    assert {"format_version", "job_sha256"} <= set(record.data)
    head = store.read_head(first)
    assert head is not None and head["state"] == "CREATED" and head["last_seq"] == 1


def test_a_session_id_is_checked_and_never_made_twice(store: SessionStore) -> None:
    session_id = new_session(store, "only-once")
    with pytest.raises(SessionExists):
        new_session(store, session_id)
    with pytest.raises(InvalidSessionId):
        new_session(store, "../escape")
    with pytest.raises(InvalidSessionId):
        store.scan("../escape")
    assert store.session_ids() == [session_id]
    assert [r.seq for r in store.scan(session_id).records] == [1]


def test_a_session_that_is_not_there_is_not_found_by_any_operation(store: SessionStore) -> None:
    for operation in (
        store.scan,
        store.last_record,
        store.read_config,
        store.read_head,
        store.holder,
        store.quarantined,
        store.acquire,
        store.remove_session,
    ):
        with pytest.raises(NotFound):
            operation("no-such-session")


def test_a_removed_session_is_gone_whole_and_the_others_stay(store: SessionStore) -> None:
    kept, removed = new_session(store, "kept"), new_session(store, "removed")
    with store.acquire(removed) as lease:
        lease.put_artifact(b"an artifact")
        append_notes(lease, 2)
        with pytest.raises(SessionLocked):  # never under a writer
            store.remove_session(removed)

    store.remove_session(removed)

    assert store.session_ids() == [kept]
    with pytest.raises(NotFound):
        store.scan(removed)
    with pytest.raises(NotFound):
        store.remove_session(removed)
    assert [r.seq for r in store.scan(kept).records] == [1]
    new_session(store, removed)  # the id is free again
    assert [r.seq for r in store.scan(removed).records] == [1]


def test_a_lease_holder_removes_its_session_whole_and_the_lease_ends_with_it(store: SessionStore) -> None:
    kept, removed = new_session(store, "kept"), new_session(store, "removed")
    with store.acquire(removed, command="handshake gc") as lease:
        lease.put_artifact(b"an artifact" * 100)
        append_notes(lease, 3)
        lease.remove_session()
        assert store.session_ids() == [kept]  # at once, while the `with` still runs

    for operation in (
        store.scan,
        store.last_record,
        store.session_bytes,
        store.artifact_sizes,
        store.acquire,
    ):
        with pytest.raises(NotFound):
            operation(removed)
    assert [r.seq for r in store.scan(kept).records] == [1]
    new_session(store, removed)  # the id is free again, and the new session is whole and new
    assert [r.seq for r in store.scan(removed).records] == [1]
    assert store.artifact_sizes(removed) == {}


def test_a_session_held_elsewhere_cannot_be_leased_to_remove_it(harness: Harness) -> None:
    store = harness.store
    session_id = new_session(store, "held")
    with harness.hold_elsewhere(session_id, ELSEWHERE):
        with pytest.raises(SessionLocked):
            store.acquire(session_id, command="handshake gc")
        assert store.session_ids() == [session_id]
    with store.acquire(session_id, command="handshake gc") as lease:  # free once its holder ends
        lease.remove_session()
    assert store.session_ids() == []


def test_gc_removes_a_session_only_unchanged_and_unheld(harness: Harness) -> None:
    store = harness.store
    kept, removed = new_session(store, "kept"), new_session(store, "removed")
    with store.acquire(removed) as lease:
        lease.put_artifact(b"an artifact" * 100)
        last = append_notes(lease, 2)[-1]
    with harness.hold_elsewhere(removed, ELSEWHERE), pytest.raises(SessionLocked):
        store.remove_unchanged(removed, last)
    moved = write_notes(store, removed, 1)[-1]
    assert store.remove_unchanged(removed, last) is None  # the journal moved: nothing changed
    assert store.last_record(removed) == moved and store.session_ids() == [kept, removed]

    size = store.session_bytes(removed)
    # What it took: what `session_bytes` said, plus what taking the lease wrote (owner.json).
    assert size <= (store.remove_unchanged(removed, moved) or 0) <= size + 4096
    assert store.session_ids() == [kept]
    with pytest.raises(NotFound):
        store.remove_unchanged(removed, moved)
    assert harness.reopen().session_ids() == [kept]  # durable
    new_session(store, removed)  # the id is free again
    with store.acquire(removed):  # and its lease with it
        pass


def test_artifact_sizes_list_every_artifact_and_dropped_ones_go_for_good(harness: Harness) -> None:
    store = harness.store
    session_id = new_session(store, "artifacts")
    named, unnamed = b"named " * 1000, b"unnamed " * 700
    with store.acquire(session_id) as lease:
        named_id, unnamed_id = lease.put_artifact(named), lease.put_artifact(unnamed)
        journal = lease.open_journal()
        try:
            added_id = journal.add_artifact(b"added to the journal")
            journal.append("test.note", {"artifact": named_id}, durability=Durability.NOW)
        finally:
            journal.close()
    sizes = store.artifact_sizes(session_id)
    assert sizes[named_id] == len(named) and sizes[unnamed_id] == len(unnamed)
    assert sizes[added_id] == len(b"added to the journal")
    assert set(sizes) == {named_id, unnamed_id, added_id}

    before = store.session_bytes(session_id)
    with store.acquire(session_id, command="handshake gc") as lease:
        freed = lease.drop_artifacts([unnamed_id, "0" * 64])  # an id it does not have is no error
    assert freed == len(unnamed)
    assert store.session_bytes(session_id) <= before - len(unnamed)
    with pytest.raises(NotFound):
        store.get_artifact(session_id, unnamed_id)
    assert unnamed_id not in store.artifact_sizes(session_id)
    assert store.get_artifact(session_id, named_id) == named
    assert store.get_artifact(session_id, added_id) == b"added to the journal"

    reopened = harness.reopen()  # durable: the next process (or a restarted machine) agrees
    assert set(reopened.artifact_sizes(session_id)) == {named_id, added_id}


# -- appends and scans -----------------------------------------------------------------------------


def test_records_come_back_in_order_as_they_were_appended(
    harness: Harness, store: SessionStore, session_id: str, appender: JournalAppender
) -> None:
    data: list[dict[str, Any]] = [
        {"text": "plain"},
        {"text": "ünïcödé, 漢字 and 🙂", "nested": {"list": [1, 2.5, None, True]}},
        {"empty": {}},
        {"text": 'line\nbreaks\tand "quotes" and \\'},
    ]
    appended = [appender.append("test.note", item, durability=Durability.NEXT_SYNC) for item in data]
    appended.append(appender.append("model.chunk", {"turn": 1, "index": 0, "count": 1, "text": "hi"}))
    assert appender.last_seq == 6

    result = store.scan(session_id)

    assert result.damage is None and result.count == 6 and result.last_seq == 6
    assert result.records[1:] == appended
    assert [r.seq for r in result.records] == [1, 2, 3, 4, 5, 6]
    for before, record in zip(result.records, result.records[1:], strict=False):
        assert record.prev == before.sum  # the chain
    for record in result.records:  # the store keeps the codec's bytes, exactly
        line, digest = encode(record.seq, record.ts, record.type, record.data, record.prev)
        assert digest == record.sum
        assert harness.stored_line(session_id, record) == line


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    batches=st.lists(st.tuples(st.lists(RECORD_DATA, max_size=4), st.sampled_from(Durability)), max_size=4)
)
def test_any_appended_data_scans_back_the_same(
    store: SessionStore, batches: list[tuple[list[dict[str, Any]], Durability]]
) -> None:
    session_id = new_session(store)
    appended: list[Record] = []
    with store.acquire(session_id) as lease:
        journal = lease.open_journal()
        for batch, durability in batches:
            appended += [journal.append("test.note", data, durability=durability) for data in batch]
            journal.sync()
        journal.close()

    result = store.scan(session_id)

    assert result.damage is None
    assert result.records[1:] == appended
    assert [r.data for r in result.records[1:]] == [d for batch, _ in batches for d in batch]
    assert store.last_record(session_id) == result.records[-1]
    for record in result.records:
        assert store.record_at(session_id, record.segment, record.offset) == record


def test_what_scan_decodes_is_chosen_and_everything_is_still_checked(
    store: SessionStore, session_id: str, appender: JournalAppender
) -> None:
    notes(appender, 3)
    appender.append("model.chunk", {"text": "kept"})

    checked = store.scan(session_id, decode=False)
    assert checked.records == [] and checked.count == 5 and checked.last_seq == 5
    assert checked.damage is None
    chunks = store.scan(session_id, decode=frozenset({"model.chunk"}))
    assert [r.data["text"] for r in chunks.records] == ["kept"] and chunks.count == 5


def test_a_record_the_codec_refuses_is_never_written(
    store: SessionStore, session_id: str, appender: JournalAppender
) -> None:
    with pytest.raises(RecordRefused):
        appender.append("Not A Type", {})
    with pytest.raises(RecordRefused):
        appender.append("model.request", {"turn": "one"})  # readers would call it damage

    assert appender.append("test.note", {"after": True}).seq == 2  # still usable
    assert [r.type for r in store.scan(session_id).records] == ["session.created", "test.note"]


def test_the_last_record_and_any_record_are_read_by_position(
    store: SessionStore, session_id: str, appender: JournalAppender
) -> None:
    appended = notes(appender, 4)
    assert store.last_record(session_id) == appended[-1]
    for record in appended:
        assert store.record_at(session_id, record.segment, record.offset) == record
    assert store.record_at(session_id, appended[0].segment, 10**9) is None


def test_a_scan_from_a_trusted_record_reads_it_and_what_follows(
    store: SessionStore, session_id: str, appender: JournalAppender
) -> None:
    appended = notes(appender, 9)
    middle = appended[4]

    result = store.scan(session_id, start=start_at(middle))

    assert result.damage is None
    assert result.records == appended[4:]
    assert result.count == 5 and result.last_seq == 10
    assert store.scan(session_id, start=start_at(appended[-1])).records == [appended[-1]]
    # A start whose `prev` does not link is found out: the scan trusts only what it is told.
    wrong = Start(middle.segment, middle.offset, middle.seq, "0" * 32)
    broken = store.scan(session_id, start=wrong)
    assert broken.records == [] and broken.corruption is not None


# -- durability ------------------------------------------------------------------------------------


def test_what_was_synced_is_there_after_a_reopen_and_the_rest_is_a_prefix(
    harness: Harness, store: SessionStore, session_id: str
) -> None:
    with store.acquire(session_id) as lease:
        journal = lease.open_journal()
        now = journal.append("test.note", {"n": "now"})  # durable on return
        riding = journal.append("test.note", {"n": "riding"}, durability=Durability.NEXT_SYNC)
        carried = journal.append("test.note", {"n": "carried"})  # syncs `riding` too
        synced = journal.append("test.note", {"n": "synced"}, durability=Durability.NEXT_SYNC)
        journal.sync()
        unsynced = journal.append("test.note", {"n": "unsynced"}, durability=Durability.NEXT_SYNC)
        journal.close()

    reopened = harness.reopen()

    result = reopened.scan(session_id)
    assert result.damage is None
    durable = [now, riding, carried, synced]
    assert result.records[1:] in (durable, [*durable, unsynced])  # lost, or kept: never a gap
    assert reopened.session_ids() == [session_id]
    assert reopened.holder(session_id) is None  # the lease ended with its holder


def test_an_artifact_added_to_the_journal_is_durable_with_the_record_that_names_it(
    harness: Harness, store: SessionStore, session_id: str
) -> None:
    with store.acquire(session_id) as lease:
        journal = lease.open_journal()
        ident = journal.add_artifact(b"large tool output")
        assert store.get_artifact(session_id, ident) == b"large tool output"  # readable at once
        journal.append("test.note", {"artifact_id": ident})  # Durability.NOW: the artifact first
        journal.close()

    reopened = harness.reopen()

    assert reopened.get_artifact(session_id, ident) == b"large tool output"
    assert reopened.last_record(session_id) is not None
    assert reopened.scan(session_id).records[-1].data == {"artifact_id": ident}


# -- damage ----------------------------------------------------------------------------------------


def test_a_damaged_record_in_the_middle_is_corruption_and_is_never_returned(
    harness: Harness, store: SessionStore, session_id: str
) -> None:
    appended = write_notes(store, session_id, 5)
    damaged = appended[2]
    harness.flip_bit(session_id, damaged, 30)

    result = store.scan(session_id)

    assert result.records[1:] == appended[:2]
    assert result.corruption is not None and result.torn_tail is None
    assert (result.corruption.segment, result.corruption.offset) == (damaged.segment, damaged.offset)
    assert store.record_at(session_id, damaged.segment, damaged.offset) is None
    with store.acquire(session_id) as lease:
        with pytest.raises(IntegrityError):
            lease.open_journal()
        with pytest.raises(IntegrityError):
            lease.repair_torn_tail(result.corruption)  # corruption is never cut off
    assert store.quarantined(session_id) == []


def _line_length(record: Record) -> int:
    return len(encode(record.seq, record.ts, record.type, record.data, record.prev)[0])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.integers(0, 3), where=st.floats(0, 1, exclude_max=True), bit=st.integers(0, 7))
def test_any_flipped_bit_is_damage_and_no_damaged_record_is_returned(
    harness: Harness, which: int, where: float, bit: int
) -> None:
    store = harness.store
    session_id = new_session(store)
    appended = write_notes(store, session_id, 4)
    damaged = appended[which]
    harness.flip_bit(session_id, damaged, int(where * (_line_length(damaged) - 1)), bit)  # not the newline

    result = store.scan(session_id)

    assert result.records[1:] == appended[:which]
    assert result.damage is not None
    assert (result.damage.segment, result.damage.offset) == (damaged.segment, damaged.offset)
    assert result.damage.repairable == (damaged is appended[-1])  # a torn tail only at the end


# -- artifacts -------------------------------------------------------------------------------------


def test_an_artifact_is_kept_under_its_content_id_and_checked_on_every_read(
    harness: Harness, store: SessionStore, session_id: str
) -> None:
    with store.acquire(session_id) as lease:
        ident = lease.put_artifact(b"checkpoint bytes")
        assert lease.put_artifact(b"checkpoint bytes") == ident  # the same bytes, the same artifact
        other = lease.put_artifact(b"other bytes")
    assert ident == hashlib.sha256(b"checkpoint bytes").hexdigest()
    assert store.get_artifact(session_id, ident) == b"checkpoint bytes"

    with pytest.raises(NotFound):
        store.get_artifact(session_id, hashlib.sha256(b"never stored").hexdigest())
    with pytest.raises(ArtifactCorrupt):
        store.get_artifact(session_id, "../../etc/passwd")
    harness.damage_artifact(session_id, ident)
    with pytest.raises(ArtifactCorrupt):
        store.get_artifact(session_id, ident)
    assert store.get_artifact(session_id, other) == b"other bytes"


# -- the lease -------------------------------------------------------------------------------------


def test_a_lease_is_held_by_one_holder_who_is_named_to_the_next(store: SessionStore, session_id: str) -> None:
    assert store.holder(session_id) is None
    lease = store.acquire(session_id, command="handshake run job.toml")
    try:
        assert lease.session_id == session_id
        assert lease.holder.pid == os.getpid() and lease.holder.command == "handshake run job.toml"
        assert store.holder(session_id) == lease.holder
        with pytest.raises(SessionLocked) as refused:
            store.acquire(session_id, command="handshake checkpoint")
        assert lease.holder.describe() in refused.value.message
        assert refused.value.details["lock_holder"] == lease.holder.as_json()
    finally:
        lease.release()
    assert store.holder(session_id) is None
    with store.acquire(session_id) as again:
        assert store.holder(session_id) == again.holder


def test_a_lease_held_elsewhere_refuses_this_writer_and_never_blocks_a_reader(
    harness: Harness, store: SessionStore, session_id: str
) -> None:
    with harness.hold_elsewhere(session_id, ELSEWHERE) as other:
        with pytest.raises(SessionLocked) as refused:
            store.acquire(session_id, command="handshake recover")
        assert f"pid {other.pid}" in refused.value.message and ELSEWHERE in refused.value.message
        assert refused.value.details["lock_holder"]["pid"] == other.pid
        assert refused.value.details["lock_holder"]["command"] == ELSEWHERE
        holder = store.holder(session_id)
        assert holder is not None and (holder.pid, holder.command) == (other.pid, ELSEWHERE)
        # Readers never take the lease.
        assert [r.seq for r in store.scan(session_id).records] == [1]
        assert store.last_record(session_id) is not None and store.read_head(session_id) is not None
        with pytest.raises(SessionLocked):
            store.remove_session(session_id)

    assert store.holder(session_id) is None  # its holder ended, however it ended
    with store.acquire(session_id, command="handshake recover") as lease:
        assert lease.holder.command == "handshake recover"


# -- the head cache --------------------------------------------------------------------------------


def test_the_head_cache_is_what_was_written_and_may_lag_the_journal(
    store: SessionStore, session_id: str
) -> None:
    with store.acquire(session_id) as lease:
        assert lease.write_head({"state": "ACTIVE", "last_seq": 2, "checkpoint_count": 0})
        append_notes(lease, 3)

        head = store.read_head(session_id)
        assert head is not None
        assert {"state": "ACTIVE", "last_seq": 2, "checkpoint_count": 0}.items() <= head.items()
        last = store.last_record(session_id)
        assert last is not None and last.seq == 4  # the store never refreshes the cache itself

        assert lease.write_head({"state": "PAUSED", "last_seq": 4})
    head = store.read_head(session_id)
    assert head is not None and head["state"] == "PAUSED" and "checkpoint_count" not in head


# -- a torn tail, and quarantine -------------------------------------------------------------------


def test_a_torn_tail_is_cut_off_into_quarantine_and_the_journal_goes_on(
    harness: Harness, store: SessionStore, session_id: str
) -> None:
    appended = write_notes(store, session_id, 2)
    cut_short = encode(4, "2026-01-01T00:00:00Z", "test.note", {"n": "lost"}, appended[-1].sum)[0][:40]
    harness.tear(session_id, cut_short)

    torn = store.scan(session_id)
    assert torn.records[1:] == appended and torn.corruption is None
    assert torn.torn_tail is not None and torn.torn_tail.length == len(cut_short)
    assert store.last_record(session_id) == appended[-1]

    with store.acquire(session_id) as lease:
        with pytest.raises(JournalNeedsRepair):
            lease.open_journal()
        repair = lease.repair_torn_tail(torn.torn_tail)
        assert repair["length"] == len(cut_short) and repair["quarantined"] is not None
        journal = lease.open_journal()
        after = journal.append("test.note", {"n": "after the repair"})
        journal.close()

    reopened = harness.reopen()  # the cut and the quarantined bytes are durable
    result = reopened.scan(session_id)
    assert result.damage is None and result.records[1:] == [*appended, after]
    assert reopened.quarantined(session_id) == [repair["quarantined"]]
    assert reopened.read_quarantined(session_id, repair["quarantined"]) == cut_short


def test_quarantine_never_overwrites_what_it_keeps(
    harness: Harness, store: SessionStore, session_id: str
) -> None:
    kept: dict[str, bytes] = {}
    # The same place torn three times: twice with different bytes, once again with the first.
    for tail in (b'{"seq":2,"ts":"torn', b'{"seq":2,"ts":"torn differently', b'{"seq":2,"ts":"torn'):
        harness.tear(session_id, tail)
        damage = store.scan(session_id).torn_tail
        assert damage is not None
        with store.acquire(session_id) as lease:
            name = lease.repair_torn_tail(damage)["quarantined"]
        assert name is not None
        assert kept.setdefault(name, tail) == tail  # a name never holds other bytes
        assert store.scan(session_id).damage is None

    assert len(kept) == 2
    assert store.quarantined(session_id) == sorted(kept)
    for name, tail in kept.items():
        assert store.read_quarantined(session_id, name) == tail
    with pytest.raises(NotFound):
        store.read_quarantined(session_id, "quarantine/never-written.torn")


# -- operations the commands need (issue 16: every command through the contract) ------------


def test_a_record_is_read_with_its_line_and_record_1_without_a_scan(
    harness: Harness, store: SessionStore, session_id: str
) -> None:
    appended = write_notes(store, session_id, 3)
    first = store.first_record(session_id)
    assert first is not None and first.seq == 1 and first.type == "session.created"
    for record in appended:
        found = store.record_line_at(session_id, record.segment, record.offset)
        assert found is not None
        assert found[0] == record
        assert found[1] + b"\n" == harness.stored_line(session_id, record)
    assert store.record_line_at(session_id, appended[0].segment, 10**9) is None
    harness.flip_bit(session_id, appended[1], 5)
    assert store.record_line_at(session_id, appended[1].segment, appended[1].offset) is None


def test_a_scan_started_near_a_record_reaches_it_and_what_follows(
    store: SessionStore, session_id: str
) -> None:
    appended = write_notes(store, session_id, 6)
    for record in appended:
        start = store.start_near(session_id, record.seq)
        result = store.scan(session_id, start=start)
        assert result.damage is None
        assert [r.seq for r in result.records if r.seq >= record.seq] == list(range(record.seq, 8))
        assert result.records[0].seq <= record.seq


def test_records_of_a_type_are_found_newest_first_only_where_they_belong(
    harness: Harness, store: SessionStore, session_id: str
) -> None:
    with store.acquire(session_id) as lease:
        journal = lease.open_journal()
        marks = []
        for n in range(5):
            journal.append("test.note", {"n": n})
            marks.append(journal.append("test.mark", {"n": n}))
        journal.close()
    found = list(store.find_backwards(session_id, "test.mark"))
    assert [record for record, _ in found] == marks[::-1]
    assert all(line + b"\n" == harness.stored_line(session_id, record) for record, line in found)
    assert [r.seq for r, _ in store.find_backwards(session_id, "test.mark", at_most=7)] == [7, 5, 3]
    # A copy of an old line at the end is intact, but not where its seq says: never found.
    harness.tear(session_id, harness.stored_line(session_id, marks[0]))
    assert [record for record, _ in store.find_backwards(session_id, "test.mark")] == marks[::-1]


def test_sizes_grow_with_what_is_stored(store: SessionStore, session_id: str) -> None:
    journal, whole = store.journal_bytes(session_id), store.session_bytes(session_id)
    assert 0 < journal <= whole
    write_notes(store, session_id, 3)
    with store.acquire(session_id) as lease:
        lease.put_artifact(b"x" * 4096)
    assert store.journal_bytes(session_id) > journal
    assert store.session_bytes(session_id) >= whole + 4096
    assert session_id in store.location(session_id)


def test_artifacts_are_checked_and_damage_reported_not_raised(
    harness: Harness, store: SessionStore, session_id: str
) -> None:
    with store.acquire(session_id) as lease:
        good, bad = lease.put_artifact(b"good"), lease.put_artifact(b"bad")
    check = store.check_artifacts(session_id)
    assert check["checked"] == 2 and check["problems"] == [] and check["present"] == {good, bad}
    harness.damage_artifact(session_id, bad)
    check = store.check_artifacts(session_id)
    assert [(p["kind"], p.get("artifact_id")) for p in check["problems"]] == [("artifact_corrupt", bad)]
    assert good in check["present"]


def test_a_checkpoint_request_reaches_the_holder_and_its_answer_the_asker(
    store: SessionStore, session_id: str
) -> None:
    with store.acquire(session_id) as lease:
        assert lease.pending_requests() == []
        asked = store.submit_request(session_id, "before the deploy")
        gone = store.submit_request(session_id, None)
        store.withdraw_request(session_id, gone)
        assert lease.pending_requests() == [asked]
        assert store.wait_for_answer(session_id, asked, 0) is None
        assert lease.answer_request(asked, {"checkpoint_id": "ck-1"})
        assert lease.pending_requests() == []
    assert store.wait_for_answer(session_id, asked, 5) == {"checkpoint_id": "ck-1"}
    assert store.wait_for_answer(session_id, asked, 0) is None  # an answer is read once


def test_an_asker_stops_waiting_once_the_holder_is_gone(store: SessionStore, session_id: str) -> None:
    """`alive` is how an asker on another machine notices a holder that died or let go
    (`request_poll`: such a holder looks for requests by itself, at least this often)."""
    assert store.request_poll is None or store.request_poll > 0
    asked = store.submit_request(session_id, None)
    looks: list[bool] = []

    def alive() -> bool:
        looks.append(False)
        return False

    assert store.wait_for_answer(session_id, asked, 3600, alive=alive) is None  # not an hour
    assert looks == [False]
    store.withdraw_request(session_id, asked)
    with store.acquire(session_id) as lease:
        assert lease.pending_requests() == []


def test_the_config_is_checked_against_record_1_unless_asked_not_to(
    store: SessionStore, session_id: str
) -> None:
    assert store.read_config(session_id, check_job=False) == store.read_config(session_id)


def _files(store: SessionStore, session_id: str) -> dict[str, bytes | None]:
    """The session's bundle files, read whole (None for a directory)."""
    found: dict[str, bytes | None] = {}
    skipped: list[dict[str, str]] = []
    for item in store.session_files(session_id, skipped):
        if isinstance(item, str):
            found[item] = None
        else:
            data = item.read()
            assert len(data) == item.size and item.read() == b""
            found[item.name] = data
    assert skipped == []
    return found


def test_a_session_leaves_as_files_and_comes_back_from_them_byte_for_byte(
    store: SessionStore, session_id: str
) -> None:
    with store.acquire(session_id) as lease:
        journal = lease.open_journal()
        ident = journal.add_artifact(b"large output " * 100)
        journal.append("test.note", {"artifact": ident})
        journal.close()
        lease.write_head({"state": "ACTIVE", "last_seq": 2})
    before = store.scan(session_id)
    files = _files(store, session_id)
    names = list(files)
    assert names.index("head.json") < names.index("session.toml") < names.index("journal")
    assert any(name.startswith("journal/") for name in names)
    staging = store.staging_area(session_id)
    try:
        top = staging / "sessions" / session_id
        top.mkdir(parents=True)
        for name, data in files.items():
            if data is None:
                (top / name).mkdir(parents=True, exist_ok=True)
            else:
                (top / name).parent.mkdir(parents=True, exist_ok=True)
                (top / name).write_bytes(data)
        with pytest.raises(SessionExists):
            store.import_session(session_id, staging)
        store.remove_session(session_id)
        store.import_session(session_id, staging)
    finally:
        import shutil

        shutil.rmtree(staging, ignore_errors=True)
    after = store.scan(session_id)
    assert after.records == before.records and after.damage is None
    assert store.get_artifact(session_id, ident) == b"large output " * 100
    assert store.read_head(session_id) == {"format_version": 1, "state": "ACTIVE", "last_seq": 2}
    assert store.read_config(session_id) == store.read_config(session_id, check_job=False)
    assert _files(store, session_id) == files
