"""Starting a session from a job, and checkpointing a session on request.

`start` creates the session (nothing exists on disk until the job has been validated and its
provider is available), opens its writer, and drives it with the runner. `checkpoint` asks a
running session for a checkpoint through its request channel, or, for a stopped one, opens
its writer (the lock, the journal folded) and takes the checkpoint itself.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from handshake_cli.engine.jobs import Job
from handshake_cli.engine.loop import Cancellation, Observer, QuietObserver, Runner, RunResult
from handshake_cli.engine.providers import Provider, make_provider
from handshake_cli.engine.writer import open_writer, session_masker
from handshake_cli.errors import SessionLocked, UsageError
from handshake_cli.session.state import ACTIVE, initial_head
from handshake_cli.storage import lock as session_lock
from handshake_cli.storage.contract import SessionStore

if TYPE_CHECKING:
    from handshake_cli.engine.tools.mcp import McpHost


def start(
    job: Job,
    store: SessionStore,
    *,
    workspace: Path,
    session_id: str | None = None,
    observer: Observer | None = None,
    environ: Mapping[str, str] | None = None,
    on_created: Any = None,
) -> RunResult:
    env = dict(os.environ if environ is None else environ)
    if not workspace.is_dir():
        raise UsageError(f"workspace {workspace} is not a directory")
    # A missing API key is refused before anything exists.
    provider = make_provider(job.model, env, workspace)
    masker = session_masker(job, env)
    # So is an MCP server that cannot start, or that does not offer what the job names.
    host, listings, run_job = start_mcp_servers(job, workspace, env, masker.mask_json)
    try:
        return _start(
            job, run_job, store, workspace, session_id, observer, env, on_created, provider, host, listings
        )
    finally:
        if host is not None:
            host.close()


def start_mcp_servers(
    job: Job, workspace: Path, env: Mapping[str, str], mask: Callable[[Any], Any], *, check: bool = True
) -> tuple[McpHost | None, dict[str, list[dict[str, Any]]], Job]:
    """Start the job's MCP servers (none: nothing is imported) and list their tools. Returns
    the host, each server's listing (masked) and the job with the servers' tools added.
    `check`: refuse (exit 2) a job that names a tool a server does not offer; recovery
    does not, it compares with what was journaled."""
    if not job.mcp:
        return None, {}, job
    from handshake_cli.engine.tools import mcp_tools

    host_class = _mcp_host_class()
    host = host_class(job.mcp, workspace=workspace, environ=env)
    try:
        listings = {name: mask(tools) for name, tools in host.start().items()}
        for index, server in enumerate(job.mcp):
            if check:
                mcp_tools.check_listing(server, index, listings[server.name], job.source)
        extra = mcp_tools.all_tool_specs(job.tools, job.mcp, listings)
    except BaseException:
        host.close()
        raise
    return host, listings, replace(job, tools=(*job.tools, *extra))


def _mcp_host_class() -> type[McpHost]:
    try:
        from handshake_cli.engine.tools.mcp import McpHost
    except ImportError as exc:
        raise UsageError(
            f"this job declares MCP servers, which need the MCP SDK ({exc}); "
            "install handshake with its mcp extra: pip install 'handshake-cli[mcp]'"
        ) from None
    return McpHost


def _start(
    job: Job,
    run_job: Job,
    store: SessionStore,
    workspace: Path,
    session_id: str | None,
    observer: Observer | None,
    env: dict[str, str],
    on_created: Any,
    provider: Provider,
    host: McpHost | None,
    listings: dict[str, list[dict[str, Any]]],
) -> RunResult:
    masker = session_masker(job, env)
    # Secrets never enter a session: the prompt, the script and every path are masked too.
    config = masker.mask_json({"job": job.to_config(), "workspace": str(workspace)})
    created = masker.mask_json(
        {
            "job_name": job.name,
            "model": {"provider": job.model.provider, "id": job.model.id},
            "prompt": {"system": job.system, "user": job.user} if job.system else {"user": job.user},
            "workspace": str(workspace),
        }
    )
    created["process"] = session_lock.this_process()  # who wrote it: the session's history names the run
    session_id = store.create_session(config, created, head_for=initial_head, session_id=session_id)
    if on_created is not None:
        on_created(session_id)
    observer = observer or QuietObserver()
    with open_writer(store, session_id, job=job, environ=env, observer=observer) as writer:
        cancel = Cancellation()
        restore = cancel.install()
        try:
            runner = Runner(
                writer, run_job, workspace, provider, observer=observer, cancel=cancel, environ=env, mcp=host
            )
            if host is not None:
                for name, tools in listings.items():
                    writer.append("mcp.tools", host.record(name, tools), sync=False)
                    if (process := host.process(name)) is not None:
                        # durable with the first intent, before any call can reach the server
                        writer.append("mcp.process", process, sync=False)
            writer.transition(ACTIVE, "run started")
            return runner.drive()
        finally:
            restore()


@dataclass
class CheckpointAnswer:
    session_id: str
    checkpoint: dict[str, Any]
    running: bool  # taken by the running session (True) or by this process (False)

    def as_json(self) -> dict[str, Any]:
        return {"session_id": self.session_id, "running": self.running, **self.checkpoint}


def checkpoint(store: SessionStore, session_id: str, *, reason: str | None, wait: float) -> CheckpointAnswer:
    store.read_config(session_id)
    holder = store.holder(session_id)
    if holder is None:
        try:
            return _checkpoint_stopped(store, session_id, reason)
        except SessionLocked:
            holder = store.holder(session_id)
            if holder is None:
                raise
    here = holder.is_alive()  # None: a holder on another machine, which no signal reaches
    if here is False or (here is None and store.request_poll is None):
        raise SessionLocked(
            f"session {session_id} is held by {holder.describe()}; handshake can only ask a session "
            "running on this machine for a checkpoint",
            details={"lock_holder": holder.as_json()},
        )
    request = store.submit_request(session_id, reason)
    if here:
        try:
            os.kill(holder.pid, signal.SIGUSR1)
        except ProcessLookupError:
            store.withdraw_request(session_id, request)
            return _checkpoint_stopped(store, session_id, reason)

    # A holder that dies (a crash, a kill -9) or lets go never answers: stop waiting then, and
    # take the checkpoint from the journal as for any stopped session. One on another machine
    # finds the request by itself (`request_poll`); it is gone once the store names no holder,
    # or another one.
    def holds() -> bool:
        return holder.is_alive() is not False if here else store.holder(session_id) == holder

    try:
        payload = store.wait_for_answer(session_id, request, wait, alive=holds)
    except BaseException:
        store.withdraw_request(session_id, request)
        raise
    if payload is None:
        store.withdraw_request(session_id, request)
        if not holds():
            return _checkpoint_stopped(store, session_id, reason)
        raise SessionLocked(
            f"session {session_id} is running ({holder.describe()}) and did not reach a boundary "
            f"within {wait:g} s; nothing was checkpointed",
            guidance=[
                " ".join(
                    [
                        "handshake",
                        "checkpoint",
                        session_id,
                        "--wait",
                        str(max(wait * 4, 30)),
                        *store.paths.root_args(),
                    ]
                )
            ],
        )
    return CheckpointAnswer(session_id, payload, running=True)


def _checkpoint_stopped(store: SessionStore, session_id: str, reason: str | None) -> CheckpointAnswer:
    # The job gives the masker a run of it has: `secret_env` and the provider's key variable.
    stored = store.read_config(session_id).get("job") or {}
    job = Job.from_config(stored, origin=f"{store.location(session_id)}/session.toml [job]")
    with open_writer(store, session_id, job=job) as writer:
        masked = writer.masker.mask(reason) if reason else None
        # `process` tells this checkpoint, a process of its own, from one a running session takes
        ref = writer.checkpoint(
            f"requested: {masked}" if masked else "requested", process=session_lock.this_process()
        )
        writer.write_head()
        return CheckpointAnswer(session_id, ref.as_json(), running=False)
