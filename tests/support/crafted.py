"""Crafting journals: take a real session's journal, change a record's content and re-seal it
(checksum and chain, with codec.checksum), so that only the content is wrong; plus the
blunter edits (bit flips, cuts, moved lines, junk segments) and a way to run the CLI in-process.

Used by tests/test_crafted_journals.py.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from handshake_cli.session.thread import canonical
from handshake_cli.storage.journal.codec import checksum, genesis
from handshake_cli.storage.journal.scan import list_segments

_PREV = b',"prev":"'


@dataclass
class Line:
    segment: str
    content: bytes  # without the newline


def read_lines(journal_dir: Path) -> list[Line]:
    lines = []
    for name in list_segments(journal_dir):
        data = (journal_dir / name).read_bytes()
        for content in data.split(b"\n")[:-1]:
            lines.append(Line(name, content))
    return lines


def write_lines(journal_dir: Path, lines: list[Line]) -> None:
    by_segment: dict[str, list[bytes]] = {name: [] for name in list_segments(journal_dir)}
    for line in lines:
        by_segment.setdefault(line.segment, []).append(line.content + b"\n")
    for name, contents in by_segment.items():
        (journal_dir / name).write_bytes(b"".join(contents))


def head_of(content: bytes) -> bytes:
    """The record up to (not including) `,"prev":"`: what a crafted edit replaces."""
    return content[: content.rindex(_PREV, 0, len(content) - 40)]


def seal(head: bytes, prev: str) -> tuple[bytes, str]:
    prefix = head + _PREV + prev.encode("ascii") + b'"'
    digest = checksum(prefix)
    return prefix + b',"sum":"' + digest.encode("ascii") + b'"}', digest


def reseal_from(lines: list[Line], index: int, session_id: str) -> None:
    """Recompute prev and sum of lines[index:] so the chain holds again."""
    prev = genesis(session_id)
    for position, line in enumerate(lines):
        if _PREV not in line.content[: len(line.content) - 40]:
            continue  # junk an earlier edit wrote: it stays junk, and the chain goes past it
        if position >= index:
            line.content, prev = seal(head_of(line.content), prev)
        else:
            prev = line.content[-34:-2].decode("ascii", "replace")


def replace_head(journal_dir: Path, session_id: str, index: int, head: bytes) -> Line:
    """Give record `index` (0-based) the content `head` and re-seal the journal from it."""
    lines = read_lines(journal_dir)
    lines[index].content = head + _PREV + b"0" * 32 + b'","sum":"' + b"0" * 32 + b'"}'
    reseal_from(lines, index, session_id)
    write_lines(journal_dir, lines)
    return lines[index]


def offset_of(journal_dir: Path, index: int) -> tuple[str, int]:
    lines = read_lines(journal_dir)
    target = lines[index]
    offset = sum(len(line.content) + 1 for line in lines[:index] if line.segment == target.segment)
    return target.segment, offset


def decoded(content: bytes) -> dict[str, Any]:
    """A line as JSON; ValueError for one an earlier edit made unreadable (deep nesting too)."""
    try:
        return dict(json.loads(content))
    except RecursionError:
        raise ValueError("nested too deep to decode") from None


# -- crafted record contents -----------------------------------------------------------------
# Each kind: (record type it targets or None for any, maker(record dict, head bytes) -> head).


def _with_data(obj: dict[str, Any], data: bytes) -> bytes:
    start = json.dumps({"seq": obj["seq"], "ts": obj["ts"], "type": obj["type"]}, separators=(",", ":"))
    return start[:-1].encode() + b',"data":' + data


def _data(obj: dict[str, Any], **changes: Any) -> bytes:
    data = {**obj["data"], **changes}
    return _with_data(obj, json.dumps(data, separators=(",", ":")).encode())


def _sub(head: bytes, old: bytes, new: bytes) -> bytes:
    assert old in head, (old, head[:200])
    return head.replace(old, new, 1)


def _deep(levels: int) -> bytes:
    return b'{"x":' + b"[" * levels + b"]" * levels + b"}"


def _message(obj: dict[str, Any], **changes: Any) -> bytes:
    return _data(obj, message={**obj["data"]["message"], **changes})


Maker = Callable[[dict[str, Any], bytes], bytes]
KINDS: dict[str, tuple[str | None, Maker]] = {
    "invalid_json": (None, lambda o, h: h[:-1] if h.endswith(b"}") else h + b","),
    "invalid_utf8": ("model.chunk", lambda o, h: _sub(h, b'"text":"', b'"text":"\xff\xfe')),
    "raw_nul": ("model.chunk", lambda o, h: _sub(h, b'"text":"', b'"text":"\x00')),
    "raw_newline_escape_broken": ("model.chunk", lambda o, h: _sub(h, b'"text":"', b'"text":"\\q')),
    "deep_100k": (None, lambda o, h: _with_data(o, _deep(100_000))),
    "deep_300": (None, lambda o, h: _with_data(o, _deep(300))),
    "data_string": (None, lambda o, h: _with_data(o, b'"data"')),
    "data_list": (None, lambda o, h: _with_data(o, b"[1,2]")),
    "data_null": (None, lambda o, h: _with_data(o, b"null")),
    "data_nan": (None, lambda o, h: _with_data(o, b'{"x":NaN}')),
    "data_infinity": (None, lambda o, h: _with_data(o, b'{"x":-Infinity}')),
    "huge_int": (None, lambda o, h: _with_data(o, b'{"x":' + b"9" * 5000 + b"}")),
    "message_string": ("model.completed", lambda o, h: _data(o, message="hello")),
    "tool_calls_string": ("model.completed", lambda o, h: _message(o, tool_calls="call")),
    "tool_call_number": ("model.completed", lambda o, h: _message(o, tool_calls=[7])),
    "tool_call_without_id": ("model.completed", lambda o, h: _message(o, tool_calls=[{"tool": "x"}])),
    "tool_call_args_list": (
        "model.completed",
        lambda o, h: _message(o, tool_calls=[{"tool_call_id": "c", "tool": "x", "args": [1]}]),
    ),
    "turn_string": ("model.completed", lambda o, h: _data(o, turn="2")),
    "request_turn_string": ("model.request", lambda o, h: _data(o, turn="1")),
    "request_turn_missing": ("model.request", lambda o, h: _with_data(o, b'{"message_count":2}')),
    "chunk_text_number": ("model.chunk", lambda o, h: _data(o, text=5)),
    "chunk_turn_bool": ("model.chunk", lambda o, h: _data(o, turn=True)),
    "intent_call_id_list": ("tool.intent", lambda o, h: _data(o, tool_call_id=["x"])),
    "intent_args_string": ("tool.intent", lambda o, h: _data(o, args="{}")),
    "state_change_to_number": ("session.state_change", lambda o, h: _data(o, to=3)),
    "created_prompt_string": ("session.created", lambda o, h: _data(o, prompt="hi")),
    "created_model_id_number": ("session.created", lambda o, h: _data(o, model={"id": 1, "provider": "x"})),
    "covers_seq_string": (
        "checkpoint.created",
        lambda o, h: _sub(h, b'"covers_seq":', b'"covers_seq":"1",' + b'"x":'),
    ),
    "checkpoint_id_number": (
        "checkpoint.created",
        lambda o, h: _sub(h, b'"checkpoint_id":"', b'"checkpoint_id":5,"y":"'),
    ),
    "seq_field_disagrees": (None, lambda o, h: h + b',"seq":' + str(o["seq"] + 7).encode()),
    "seq_leading_zero": (None, lambda o, h: _sub(h, b'{"seq":', b'{"seq":0')),
    "seq_float": (
        None,
        lambda o, h: _sub(
            h, b'{"seq":' + str(o["seq"]).encode(), b'{"seq":' + str(o["seq"]).encode() + b".0"
        ),
    ),
    "extra_top_key": (None, lambda o, h: h + b',"extra":1'),
    "ts_number": (None, lambda o, h: _sub(h, b'"ts":"' + o["ts"].encode() + b'"', b'"ts":12')),
    "type_number": (None, lambda o, h: _sub(h, b'"type":"' + o["type"].encode() + b'"', b'"type":12')),
    "type_not_a_name": (
        None,
        lambda o, h: _sub(h, b'"type":"' + o["type"].encode() + b'"', b'"type":"Not A Type!"'),
    ),
    "duplicate_key_bad_last": (
        "model.chunk",
        lambda o, h: _with_data(o, b'{"turn":1,"turn":"one","text":"a"}'),
    ),
    "not_an_object": (None, lambda o, h: b'{"seq":' + str(o["seq"]).encode() + b',"x":[}'),
}


def resealed_checkpoint(head: bytes, body_change: Callable[[dict[str, Any]], None]) -> bytes:
    """A checkpoint.created head whose body is changed and whose artifact_id is the changed
    body's real sha256: the record is well formed, the checkpoint is not (checkpoint_invalid)."""
    import hashlib

    obj = json.loads(head + b',"prev":"","sum":""}')
    data = obj["data"]
    body = data["body"]
    body_change(body)
    encoded = canonical(body)
    fields = {k: v for k, v in data.items() if k != "body"}
    fields["artifact_id"] = hashlib.sha256(encoded).hexdigest()
    data_bytes = canonical(fields)[:-1] + b',"body":' + encoded + b"}"
    return _with_data(obj, data_bytes)


BODY_KINDS: dict[str, Callable[[dict[str, Any]], None]] = {
    "session_string": lambda b: b.__setitem__("session", "x"),
    "session_extra_key": lambda b: b["session"].__setitem__("surprise", 1),
    "messages_items_numbers": lambda b: b["messages"].__setitem__("items", [1, 2]),
    "messages_not_object": lambda b: b.__setitem__("messages", [1]),
    "ledger_from_string": lambda b: b["ledger"].__setitem__("from", "0"),
    "pending_call_string": lambda b: b.__setitem__("pending_tool_calls", ["call"]),
    "turn_string": lambda b: b.__setitem__("turn", "3"),
    "in_flight_string": lambda b: b.__setitem__("in_flight", "yes"),
    "in_flight_turn_none": lambda b: b.__setitem__(
        "in_flight", {"turn": None, "request_seq": 1, "segment": "00000001.jsonl", "offset": 0}
    ),
    "parent_string": lambda b: b.__setitem__("parent", "ck-1"),
    "snapshot_false_no_parent": lambda b: b.update(snapshot=False, parent=None),
    "message_count_bool": lambda b: b.__setitem__("message_count", True),
}


# -- running handshake -----------------------------------------------------------------------


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str


def cli_in_process(root: Path, *args: str) -> Outcome:
    """`handshake ARGS --root ROOT` in this process (fast enough for hypothesis), output captured."""
    from handshake_cli.cli.app import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    previous = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main([*args, "--root", str(root)])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        finally:
            signal.signal(signal.SIGINT, previous[0])
            signal.signal(signal.SIGTERM, previous[1])
    return Outcome(code, out.getvalue(), err.getvalue())


def cli_subprocess(root: Path, *args: str, env: dict[str, str] | None = None) -> Outcome:
    proc = subprocess.run(
        [sys.executable, "-m", "handshake_cli", *args, "--root", str(root)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    return Outcome(proc.returncode, proc.stdout, proc.stderr)


# Lock bookkeeping, not stored session data: a command that takes the lock of a crashed
# session clears the dead writer's owner.json.
_LOCK_FILES = {"lock", "owner.json"}


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every stored file of a session and its bytes (lock bookkeeping aside)."""
    return {
        str(path.relative_to(directory)): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file() and not path.is_symlink() and str(path.relative_to(directory)) not in _LOCK_FILES
    }


def copy_session(source_root: Path, target_root: Path) -> None:
    if target_root.exists():
        shutil.rmtree(target_root)
    shutil.copytree(source_root, target_root, symlinks=True)
    os.chmod(target_root, 0o700)


SEGMENT_NAME = re.compile(r"\d{8}\.jsonl")
