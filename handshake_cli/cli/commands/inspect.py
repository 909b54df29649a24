"""`handshake inspect`: list sessions, describe one, show its events, or verify its files."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from handshake_cli.cli.options import Json, Root
from handshake_cli.cli.output import Printer, Result, run_command
from handshake_cli.errors import ExitCode, IntegrityError, UsageError
from handshake_cli.vocabulary import Status, Verdict

if TYPE_CHECKING:
    from datetime import datetime

    from handshake_cli.storage.contract import SessionStore

# The core is imported inside the functions that use it: `--help`, `--version` and every
# TAB press load this module, and should not pay for the journal and the store.


def inspect(
    session: Annotated[
        str | None, typer.Argument(metavar="[SESSION]", help="The session to describe; omit to list all.")
    ] = None,
    events: Annotated[bool, typer.Option("--events", help="Show the journal's records in order.")] = False,
    verify: Annotated[
        bool, typer.Option("--verify", help="Check every checksum, the chain, artifacts and head.json.")
    ] = False,
    at: Annotated[
        int | None, typer.Option("--at", metavar="SEQ", help="Show the session as it stood at record SEQ.")
    ] = None,
    types: Annotated[
        list[str] | None,
        typer.Option(
            "--type", metavar="TYPE", help="With --events: only these record types (tool = tool.*)."
        ),
    ] = None,
    since_seq: Annotated[
        int | None,
        typer.Option("--since-seq", metavar="SEQ", help="With --events: from record SEQ on.", min=1),
    ] = None,
    tail: Annotated[
        int | None, typer.Option("--tail", metavar="N", help="With --events: only the last N records.", min=0)
    ] = None,
    root: Root = None,
    json_: Json = False,
) -> int:
    """Show what happened, offline, without taking the session's lock."""

    def body() -> Result:
        from handshake_cli.paths import Paths
        from handshake_cli.storage.open import open_store

        store = open_store(Paths.resolve(root))
        if session is None:
            if events or verify or at is not None:
                raise UsageError("--events, --verify and --at need a SESSION")
            return _listing(store)
        if verify:
            return _verification(store, session)
        if (types or since_seq or tail is not None) and not events:
            raise UsageError("--type, --since-seq and --tail go with --events")
        if events:
            return _events(store, session, at, types or [], since_seq, tail)
        if at is not None:
            return _at(store, session, at)
        return _description(store, session)

    return run_command("inspect", json_, body)


def _listing(store: SessionStore) -> Result:
    from handshake_cli.session import status

    rows = status.list_sessions(store)
    exit_code = status.listing_exit_code(rows)

    def render(out: Printer) -> None:
        if not rows:
            out.line(f"no sessions under {store.paths.shown_root}")
            return
        now = _now()
        out.table(
            ["SESSION", "JOB", "STATE", "AGE", "LAST CHECKPOINT", "CHECKPOINTS", "SIZE", "LOCK", "ATTENTION"],
            [
                [
                    r["session_id"],
                    r.get("job_name") or "-",
                    r["state"],
                    _ago(now, r.get("updated_at")),
                    _ago(now, r.get("last_checkpoint_at")),
                    str(r.get("checkpoint_count", "-")),
                    _size(r.get("size_bytes")),
                    f"pid {holder['pid']}" if (holder := r.get("lock_holder")) else "-",
                    "yes" if r.get("needs_attention") else "",
                ]
                for r in rows
            ],
        )
        for r in rows:
            if r.get("error"):
                out.line(f"{r['session_id']}: {r['error']['message']}")

    data = {"root": store.paths.shown_root, "sessions": rows}
    # Every session that could be read is listed; the exit code says the worst found among the rest.
    return Result(data, render, exit_code=exit_code, status=Status.OK if exit_code == 0 else Status.ERROR)


def _description(store: SessionStore, session_id: str) -> Result:
    from handshake_cli.readers.describe import describe

    info = describe(store, session_id)

    def render(out: Printer) -> None:
        out.line(f"session     {info['session_id']}", style="bold")
        out.line(f"job         {info.get('job_name') or '-'}")
        out.line(f"state       {info['state']}")
        out.line(f"model       {info['model']['id'] or '-'} ({info['model']['backend'] or '-'})")
        out.line(f"created     {info.get('created_at')}")
        out.line(f"updated     {info.get('updated_at')}  (seq {info['last_seq']})")
        ckpt = info["checkpoint_artifact_id"]
        out.line(
            f"checkpoints {info['checkpoint_count']}"
            + (f", last {ckpt[:12]} at {info['last_checkpoint_at']}" if ckpt else "")
        )
        holder = info["lock_holder"]
        out.line("lock        " + (f"held by pid {holder['pid']} on {holder['host']}" if holder else "free"))
        verify = ["handshake", "inspect", info["session_id"], "--verify", *store.paths.root_args()]
        _render_integrity(out, info["integrity"], " ".join(verify))
        out.line()
        out.line(f"messages ({len(info['messages'])})", style="bold")
        for message in info["messages"]:
            out.line(f"  {message.get('role', '?'):<9} {_clip(message.get('content'))}")
        if info["abandoned_streams"]:
            out.line()
            out.line(f"abandoned model calls ({len(info['abandoned_streams'])})", style="bold")
            for stream in info["abandoned_streams"]:
                streamed = "text not in the records read" if stream["text"] is None else _clip(stream["text"])
                out.line(
                    f"  turn {stream['turn']} ({stream['reason']}, seq {stream['request_seq']}): {streamed}"
                )
                for call in stream.get("tool_calls") or []:
                    out.line(f"    tool call {call['name'] or '?'}: {_clip(call['arguments'])}")
        if info.get("langgraph"):
            _render_thread(out, info["langgraph"])
        if info["tool_calls"]:
            out.line()
            out.line(f"tool calls ({len(info['tool_calls'])})", style="bold")
            out.table(
                ["CALL", "TOOL", "STATE"],
                [[c["tool_call_id"], str(c.get("tool")), c.get("state", "?")] for c in info["tool_calls"]],
            )

    return Result(info, render)


def _render_thread(out: Printer, thread: dict[str, Any]) -> None:
    """A LangGraph thread's session: its checkpoints, pending writes and channels."""
    out.line()
    out.line(f"LangGraph thread {thread['thread_id']!r} ({thread['checkpoints']} checkpoints)", style="bold")
    for ns in thread["namespaces"]:
        out.line(
            f"  namespace {ns['checkpoint_ns'] or '(root)'}: {ns['checkpoints']} checkpoints, newest "
            f"{ns['newest_checkpoint']} (step {ns['newest_step']}), "
            f"{len(ns['pending_writes'])} pending writes"
        )
    if thread["channels"]:
        out.table(
            ["CHANNEL", "TYPE", "BYTES", "STORED"],
            [
                [c["channel"], str(c["type"]), str(c["bytes"]), "artifact" if c["artifact_id"] else "inline"]
                for c in thread["channels"]
            ],
        )


def _render_integrity(out: Printer, integrity: dict[str, Any], full_check: str = "") -> None:
    """Either report: a full one (`--verify`, small journals) or, for a journal over
    describe.FULL_CHECK_BYTES, the records from the newest checkpoint on, which has no
    artifact or head.json findings and says how to check everything."""
    verdict = integrity["verdict"]
    style = {"intact": "green", "repairable": "yellow"}.get(verdict, "red")
    if integrity.get("scope") == "from_checkpoint":
        out.line(f"integrity   {verdict} (records from seq {integrity['checked_from_seq']} on)", style=style)
    else:
        out.line(f"integrity   {verdict}", style=style)
    damage = integrity["journal"]["damage"]
    if damage:
        out.line(
            f"  journal: {damage['kind']} in {damage['segment']} at byte {damage['offset']} "
            f"({damage['length']} bytes): {damage['detail']}"
        )
    if "artifacts" not in integrity:
        out.line(f"  everything, artifacts and head.json too: {full_check or integrity['full_check']}")
        return
    for problem in integrity["artifacts"]["problems"]:
        where = problem.get("pack") or problem.get("path")
        out.line(
            f"  artifact: {problem['kind']} in {where}"
            + (f" at byte {problem['offset']}" if "offset" in problem else "")
        )
    for missing in integrity["artifacts"]["missing"]:
        out.line(f"  artifact: {missing['artifact_id']} named by seq {missing['named_by_seq']} is missing")
    for name, diff in integrity["head"]["differences"].items():
        out.line(f"  head.json: {name} is {diff['head']!r}, the journal says {diff['journal']!r}")
    if integrity.get("job") == "changed":
        out.line("  session.toml: [job] was edited after the session started (record 1's job_sha256)")
    elif integrity.get("job") == "unbound":
        out.line("  session.toml: [job] is not bound to the journal (made before handshake bound jobs)")


def _verification(store: SessionStore, session_id: str) -> Result:
    from handshake_cli.readers.verify import verify

    report = verify(store, session_id)
    data = {"session_id": session_id, **report.as_json()}

    def render(out: Printer) -> None:
        out.line(f"session     {session_id}")
        out.line(f"records     {report.journal.count} (last seq {report.journal.last_seq})")
        out.line(f"artifacts   {report.artifacts_checked} checked")
        _render_integrity(out, data)

    if report.verdict == Verdict.DAMAGED:
        message = report.damage_message(session_id)
        error = IntegrityError(message)
        data["error"] = {"code": error.code, "exit_code": int(error.exit_code), "message": message}
        guidance = [
            "the records before the damage are intact; read them with:",
            " ".join(["handshake", "inspect", session_id, "--events", *store.paths.root_args()]),
        ]
        return Result(data, render, exit_code=ExitCode.INTEGRITY, status=Status.ERROR, guidance=guidance)
    if report.journal.torn_tail or report.head_differences:
        # What `recover` repairs (it cuts the tail, rewrites head.json), but it may also resume
        # the session: point at the plan first.
        guidance = [
            "recover repairs this; see what it would do with:",
            " ".join(["handshake", "recover", session_id, "--dry-run", *store.paths.root_args()]),
        ]
        return Result(data, render, guidance=guidance)
    return Result(data, render)


def _events(
    store: SessionStore,
    session_id: str,
    at: int | None,
    types: list[str],
    since_seq: int | None,
    tail: int | None,
) -> Result:
    from handshake_cli.readers.events import events as read_events

    events = read_events(store, session_id, at=at, types=types, since_seq=since_seq, tail=tail)

    def render(out: Printer) -> None:
        out.table(
            ["SEQ", "+SECONDS", "TYPE", "DATA"],
            [[str(e["seq"]), _fmt_elapsed(e["elapsed"]), e["type"], _clip(e["data"], 60)] for e in events],
        )

    return Result({"session_id": session_id, "events": events}, render)


def _now() -> datetime:
    from datetime import UTC, datetime

    return datetime.now(UTC)


def _ago(now: datetime, ts: str | None) -> str:
    """A timestamp as a person reads it in a listing: how long ago (for display only)."""
    from handshake_cli.readers.events import parse_ts

    moment = parse_ts(ts)
    if moment is None:
        return "-"
    seconds = max(0, int((now - moment).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def _fmt_elapsed(value: float | None) -> str:
    return "-" if value is None else f"+{value:.3f}"


def _at(store: SessionStore, session_id: str, at: int) -> Result:
    from handshake_cli.readers.events import session_at

    data = session_at(store, session_id, at)

    def render(out: Printer) -> None:
        base = f" (from checkpoint {data['from_checkpoint']})" if data["from_checkpoint"] else ""
        out.line(f"session {session_id} at seq {at}: {data['state']}{base}")
        for message in data["messages"]:
            out.line(f"  {message.get('role', '?'):<9} {_clip(message.get('content'))}")

    return Result(data, render)


def _clip(value: Any, width: int = 70) -> str:
    import json

    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = text.replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def _size(size: int | None) -> str:
    if size is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024  # type: ignore[assignment]
    return str(size)
