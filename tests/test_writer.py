"""The session writer (handshake_cli/engine/writer.py) and the clients that open it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import tomli_w

from handshake_cli.engine.jobs import Job, load_job
from handshake_cli.engine.writer import open_writer
from handshake_cli.errors import SessionLocked
from handshake_cli.paths import Paths
from handshake_cli.session.state import ACTIVE, COMPLETED, fold, initial_head, read_head
from handshake_cli.storage.filesystem import FilesystemStore
from handshake_cli.storage.journal.scan import scan
from handshake_cli.storage.store import SessionDir
from tests.support.cli import CliResult

KEY_VAR = "HANDSHAKE_TEST_PROVIDER_KEY"
KEY = "not-a-known-shape-but-still-a-secret-4f9a2c"  # only the variable's name can hide it


def stopped_openai_session(tmp_path: Path, root: Path) -> tuple[SessionDir, Job]:
    """A session created from an openai job that reads its key from KEY_VAR, never run."""
    job_file = tmp_path / "job.toml"
    job = {
        "name": "keyed",
        "prompt": {"user": "say hi"},
        "model": {
            "provider": "openai",
            "base_url": "http://127.0.0.1:9/v1",
            "model": "m",
            "api_key_env": KEY_VAR,
        },
    }
    job_file.write_text(tomli_w.dumps(job))
    loaded = load_job(job_file)
    workspace = tmp_path / "ws"
    workspace.mkdir()
    created = {
        "job_name": loaded.name,
        "model": {"provider": loaded.model.provider, "id": loaded.model.id},
        "prompt": {"user": loaded.user},
        "workspace": str(workspace),
    }
    config = {"job": loaded.to_config(), "workspace": str(workspace)}
    store = FilesystemStore(Paths(root))
    return store.session(store.create_session(config, created, head_for=initial_head)), loaded


def test_the_writer_holds_the_lock_and_keeps_the_fold_in_step(tmp_path: Path, root: Path) -> None:
    session, job = stopped_openai_session(tmp_path, root)
    store = FilesystemStore(Paths(root))
    with open_writer(store, session.session_id, job=job, environ={}) as writer:
        with pytest.raises(SessionLocked), open_writer(store, session.session_id):
            pass
        writer.transition(ACTIVE, "run started")
        writer.append("model.request", {"turn": 1, "message_count": 1}, sync=False)
        writer.end(COMPLETED, "the model answered")
    records = scan(session.journal, session.session_id).records
    assert [r.type for r in records][-4:] == [
        "model.request",
        "session.state_change",
        "checkpoint.created",
        "session.completed",
    ]
    assert fold(session.session_id, records).as_json() == writer.record.as_json()
    assert writer.thread.in_flight is not None and writer.thread.in_flight["request_seq"] == records[-4].seq
    assert (read_head(session.path) or {}).get("state") == COMPLETED
    with open_writer(store, session.session_id) as again:  # the lock was let go
        assert again.record.as_json() == writer.record.as_json()


def test_checkpoint_of_a_stopped_session_masks_the_provider_key_in_its_reason(
    cli: Callable[..., CliResult], tmp_path: Path, root: Path
) -> None:
    """The provider's key variable is masked like `secret_env`, also when `handshake checkpoint`
    writes the checkpoint itself (it used to build its masker from `secret_env` alone)."""
    session_id = stopped_openai_session(tmp_path, root)[0].session_id
    result = cli(
        "checkpoint",
        session_id,
        "--reason",
        f"the key is {KEY}",
        "--root",
        str(root),
        "--json",
        extra_env={KEY_VAR: KEY},
    )
    assert result.code == 0, result.stderr
    assert result.json["running"] is False
    last = scan(root / "sessions" / session_id / "journal", session_id).records[-1]
    assert last.type == "checkpoint.created"
    assert last.data["reason"] == f"requested: the key is [masked:env:{KEY_VAR}]"
    for path in (root / "sessions" / session_id).rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path
