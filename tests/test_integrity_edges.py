"""Integrity at the edges of what recovery relies on (issue 11, defects 1-3).

- A checkpoint record is trusted only where its seq says it sits: a copy of an old
  checkpoint line appended to a finished journal, or a stale segment whose name sorts last,
  must never become the point recovery resumes from (that would run a finished
  non-idempotent call again).
- Quarantined bytes are never overwritten: two torn tails cut at the same offset are both kept.
- The job stored in session.toml is bound to record 1 (`job_sha256`): an edited `[job]` is
  damage (exit 5), nothing runs; a session made before the binding still recovers.

Every session is made by the real console script; crashes are real SIGKILLs.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import tomli_w

from handshake_cli.storage.journal.codec import encode, genesis
from tests.support.cli import Cli, crash_run
from tests.support.jobs import send_job
from tests.support.sessions import effects, session_dir, snapshot


def journal_lines(root: Path, session_id: str) -> list[bytes]:
    segment = session_dir(root, session_id) / "journal" / "00000001.jsonl"
    return segment.read_bytes().splitlines(keepends=True)


def completed_send_session(hs: Cli, tmp_path: Path, workspace: Path, session_id: str) -> Path:
    job = send_job(tmp_path)
    result = hs("run", str(job), "--session-id", session_id, "--workspace", str(workspace))
    assert result.code == 0, result.stdout + result.stderr
    assert len(effects(workspace)) == 1
    return job


def first_checkpoint_line(lines: list[bytes]) -> bytes:
    """The first checkpoint.created line: taken before `send` ran."""
    for line in lines:
        if json.loads(line)["type"] == "checkpoint.created":
            return line
    raise AssertionError("no checkpoint in the journal")


def reseal(lines: list[bytes], session_id: str, edit: Any) -> list[bytes]:
    """The same records with `edit(seq, data)` applied to each record's data, the chain and
    checksums written anew: what a journal handshake wrote that way would hold."""
    out, prev = [], genesis(session_id)
    for line in lines:
        record = json.loads(line)
        data = edit(record["seq"], record["data"])
        line, prev = encode(record["seq"], record["ts"], record["type"], data, prev)
        out.append(line)
    return out


# -- defect 1: a checkpoint that does not sit where its seq says -----------------------------


def test_an_old_checkpoint_appended_to_a_finished_journal_is_damage_not_a_resume_point(
    hs: Cli, root: Path, tmp_path: Path, workspace: Path
) -> None:
    completed_send_session(hs, tmp_path, workspace, "copied-ck")
    segment = session_dir(root, "copied-ck") / "journal" / "00000001.jsonl"
    lines = segment.read_bytes().splitlines(keepends=True)
    with segment.open("ab") as out:
        out.write(first_checkpoint_line(lines))
    before = snapshot(session_dir(root, "copied-ck"))

    assert hs("inspect", "copied-ck", "--verify").code == 5
    dry = hs("recover", "copied-ck", "--dry-run", "--json")
    assert dry.code == 5, dry.stdout
    result = hs("recover", "copied-ck")
    assert result.code == 5, result.stdout + result.stderr
    assert "corrupt" in result.stderr
    assert len(effects(workspace)) == 1  # the finished send did not run again
    assert snapshot(session_dir(root, "copied-ck")) == before


def test_a_stale_segment_that_sorts_last_is_damage_not_a_resume_point(
    hs: Cli, root: Path, tmp_path: Path, workspace: Path
) -> None:
    completed_send_session(hs, tmp_path, workspace, "stale-seg")
    journal = session_dir(root, "stale-seg") / "journal"
    lines = (journal / "00000001.jsonl").read_bytes().splitlines(keepends=True)
    checkpoint = first_checkpoint_line(lines)
    seq = json.loads(checkpoint)["seq"]
    # A segment named after that checkpoint's seq holding it and what followed it then: every
    # line intact and linked to the one before, only its place in the journal is wrong.
    (journal / f"{seq:08d}.jsonl").write_bytes(b"".join(lines[seq - 1 : seq + 2]))
    before = snapshot(session_dir(root, "stale-seg"))

    assert hs("inspect", "stale-seg", "--verify").code == 5
    result = hs("recover", "stale-seg")
    assert result.code == 5, result.stdout + result.stderr
    assert len(effects(workspace)) == 1
    assert snapshot(session_dir(root, "stale-seg")) == before


def test_an_interrupted_session_still_resumes_from_its_newest_checkpoint(
    hs: Cli, home_env: dict[str, str], root: Path, tmp_path: Path, workspace: Path
) -> None:
    """The anchoring check does not refuse a healthy journal (several segments included)."""
    crash_run(home_env, send_job(tmp_path, probe=True), "healthy", workspace, "after_result")
    plan = hs("recover", "healthy", "--dry-run", "--json")
    assert plan.code == 0, plan.stdout
    assert plan.json["checkpoint"] is not None
    result = hs("recover", "healthy")
    assert result.code == 0, result.stdout + result.stderr
    assert len(effects(workspace)) == 1
    assert hs("inspect", "healthy", "--verify").code == 0


# -- defect 2: quarantine files are never replaced -------------------------------------------


def test_two_torn_tails_cut_at_the_same_offset_are_both_kept(
    hs: Cli, home_env: dict[str, str], root: Path, tmp_path: Path, workspace: Path
) -> None:
    crash_run(home_env, send_job(tmp_path, probe=True), "twice", workspace, "after_intent")
    segment = session_dir(root, "twice") / "journal" / "00000001.jsonl"
    offset = segment.stat().st_size
    quarantine = session_dir(root, "twice") / "quarantine"

    with segment.open("ab") as out:
        out.write(b'{"seq":99,"ts":"first torn tail')
    blocked = hs("recover", "twice", "--cancel")  # cuts the tail whatever the plan
    assert blocked.code == 0, blocked.stdout + blocked.stderr
    first = {p.name: p.read_bytes() for p in quarantine.iterdir()}
    assert first == {f"00000001.jsonl.{offset}.torn": b'{"seq":99,"ts":"first torn tail'}

    # The cancelled session's journal grew past `offset`; put a second torn tail exactly there.
    with segment.open("r+b") as out:
        out.truncate(offset)
        out.seek(offset)
        out.write(b'{"seq":99,"ts":"second, different')
    hs("recover", "twice")
    kept = {p.name: p.read_bytes() for p in quarantine.iterdir()}
    assert kept[f"00000001.jsonl.{offset}.torn"] == b'{"seq":99,"ts":"first torn tail'
    assert kept[f"00000001.jsonl.{offset}.2.torn"] == b'{"seq":99,"ts":"second, different'
    assert len(kept) == 2


def test_a_recovery_that_died_after_quarantining_keeps_one_copy(
    hs: Cli, home_env: dict[str, str], root: Path, tmp_path: Path, workspace: Path
) -> None:
    """Cutting the same bytes again finds them already kept: no second file."""
    import subprocess

    from tests.support.cli import handshake

    crash_run(home_env, send_job(tmp_path, probe=True), "again", workspace, "after_intent")
    segment = session_dir(root, "again") / "journal" / "00000001.jsonl"
    with segment.open("ab") as out:
        out.write(b'{"seq":12,"torn')
    killed = subprocess.run(
        handshake("recover", "again"),
        env={**home_env, "HANDSHAKE_CRASH_AT": "recovery_after_quarantine"},
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert killed.returncode == -9
    result = hs("recover", "again")
    assert result.code == 0, result.stdout + result.stderr
    kept = list((session_dir(root, "again") / "quarantine").iterdir())
    assert [p.read_bytes() for p in kept] == [b'{"seq":12,"torn']
    assert len(effects(workspace)) == 1


# -- defect 3: the stored job is bound to record 1 -------------------------------------------


def edit_job(root: Path, session_id: str, change: Any) -> None:
    path = session_dir(root, session_id) / "session.toml"
    config = tomllib.loads(path.read_text(encoding="utf-8"))
    change(config)
    path.write_text(tomli_w.dumps(config), encoding="utf-8")


def test_record_one_carries_the_digest_of_the_stored_job(
    hs: Cli, root: Path, tmp_path: Path, workspace: Path
) -> None:
    from handshake_cli.storage.store import job_digest

    completed_send_session(hs, tmp_path, workspace, "bound")
    first = json.loads(journal_lines(root, "bound")[0])
    config = tomllib.loads((session_dir(root, "bound") / "session.toml").read_text(encoding="utf-8"))
    assert first["data"]["job_sha256"] == job_digest(config["job"])
    verify = hs("inspect", "bound", "--verify", "--json")
    assert verify.code == 0 and verify.json["job"] == "bound"


def test_an_edited_job_is_refused_and_nothing_runs(
    hs: Cli, home_env: dict[str, str], root: Path, tmp_path: Path, workspace: Path
) -> None:
    crash_run(home_env, send_job(tmp_path, probe=True), "edited", workspace, "after_intent")

    def loosen(config: dict[str, Any]) -> None:  # the in-doubt send would now simply run again
        config["job"]["tools"][0]["idempotency"] = "idempotent"

    edit_job(root, "edited", loosen)
    before = snapshot(session_dir(root, "edited"))

    verify = hs("inspect", "edited", "--verify", "--json")
    assert verify.code == 5, verify.stdout
    assert verify.json["job"] == "changed"
    for args in (("recover", "edited"), ("recover", "edited", "--dry-run"), ("inspect", "edited")):
        result = hs(*args)
        assert result.code == 5, (args, result.stdout, result.stderr)
        assert "[job]" in result.stderr and "session.toml" in result.stderr
    assert effects(workspace) == []
    after = snapshot(session_dir(root, "edited"))
    after.pop("lock", None), before.pop("owner.json")  # a dead run's lock record, cleared by recover
    assert after == {k: v for k, v in before.items() if k != "lock"}


def test_a_changed_script_turn_is_refused(
    hs: Cli, home_env: dict[str, str], root: Path, tmp_path: Path, workspace: Path
) -> None:
    crash_run(home_env, send_job(tmp_path, probe=True), "script", workspace, "after_intent")

    def reword(config: dict[str, Any]) -> None:
        turns = config["job"]["model"]["turns"]
        turns[0]["tool_calls"][0]["args"]["message"] = "something else"

    edit_job(root, "script", reword)
    assert hs("recover", "script").code == 5
    assert effects(workspace) == []


def test_the_workspace_path_stays_editable(
    hs: Cli, home_env: dict[str, str], root: Path, tmp_path: Path, workspace: Path
) -> None:
    crash_run(home_env, send_job(tmp_path, probe=True), "moved", workspace, "after_intent")
    moved = tmp_path / "moved-ws"
    workspace.rename(moved)
    edit_job(root, "moved", lambda config: config.update(workspace=str(moved)))
    result = hs("recover", "moved")
    assert result.code == 0, result.stdout + result.stderr
    assert len(effects(moved)) == 1


def test_a_session_made_before_the_binding_still_recovers(
    hs: Cli, home_env: dict[str, str], root: Path, tmp_path: Path, workspace: Path
) -> None:
    crash_run(home_env, send_job(tmp_path, probe=True), "older", workspace, "after_intent")
    segment = session_dir(root, "older") / "journal" / "00000001.jsonl"

    def unbind(seq: int, data: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in data.items() if k != "job_sha256"} if seq == 1 else data

    segment.write_bytes(b"".join(reseal(segment.read_bytes().splitlines(keepends=True), "older", unbind)))
    (session_dir(root, "older") / "head.json").unlink()  # its checkpoint id named the old bytes
    verify = hs("inspect", "older", "--verify", "--json")
    assert verify.json["job"] == "unbound", verify.stdout
    result = hs("recover", "older")
    assert result.code == 0, result.stdout + result.stderr
    assert len(effects(workspace)) == 1


def test_a_checkpoint_of_a_session_with_a_torn_tail_says_recover_cuts_it(
    hs: Cli, home_env: dict[str, str], root: Path, tmp_path: Path, workspace: Path
) -> None:
    """A writer killed in the middle of a record leaves part of it; `checkpoint` of the stopped
    session must not append after it, and names the command that cuts it."""
    crash_run(home_env, send_job(tmp_path, probe=True), "torn", workspace, "after_intent")
    segment = session_dir(root, "torn") / "journal" / "00000001.jsonl"
    before = segment.read_bytes() + b'{"seq":99,"ts":"a record cut short'
    segment.write_bytes(before)

    refused = hs("checkpoint", "torn", "--json")
    assert refused.code == 5
    assert refused.json["error"]["code"] == "journal_needs_repair"
    assert refused.json["guidance"] == ["handshake recover torn"]
    assert segment.read_bytes() == before  # nothing appended after the torn record

    assert hs("recover", "torn", "--json").code == 0
    assert hs("checkpoint", "torn", "--json").code == 0
