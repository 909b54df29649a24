"""The timeline's model (readers/timeline), pure: records in, what the page draws out.

The browser tests (tests/test_timeline.py) show real sessions; these pin the folding rules on
a long history built in memory, where what must never be folded sits among hundreds of
uneventful turns: a call run again, an abandoned stream, the edges of each process.
"""

from __future__ import annotations

from typing import Any

from handshake_cli.readers.timeline import MAX_STEPS, build
from handshake_cli.readers.timeline.fold import KEEP_EDGE
from handshake_cli.session.story import tell
from handshake_cli.storage.journal.codec import Record

TURNS = 900
RERUN_TURN = 400
ABANDONED_TURN = 500


class History:
    def __init__(self) -> None:
        self.records: list[Record] = []

    def add(self, kind: str, data: dict[str, Any]) -> int:
        seq = len(self.records) + 1
        ts = f"2026-12-03T10:00:{seq % 60:02d}.000000Z"
        self.records.append(Record(seq, ts, kind, data, "0" * 32, f"{seq:032x}", "00000001.jsonl", seq * 200))
        return seq

    def turn(self, turn: int, *, abandoned: bool = False, intents: int = 1) -> None:
        self.add("model.request", {"turn": turn, "message_count": 2 * turn})
        for index in range(3):
            self.add("model.chunk", {"turn": turn, "index": index, "count": 1, "text": "word "})
        if abandoned:
            self.add("model.stream_aborted", {"turn": turn, "reason": "interrupted", "chunks": 3})
            self.add("model.request", {"turn": turn, "message_count": 2 * turn})
            self.add("model.chunk", {"turn": turn, "index": 0, "count": 1, "text": "word "})
        call = {"tool_call_id": f"call-{turn}-0", "tool": "read_file", "args": {"path": "a"}}
        message = {"role": "assistant", "content": "word word word ", "tool_calls": [call]}
        self.add("model.completed", {"turn": turn, "message": message, "finish_reason": "tool_calls"})
        for _ in range(intents):
            self.add(
                "tool.intent",
                {**call, "idempotency_key": "k", "side_effect": "read", "idempotency": "idempotent"},
            )
        self.add("tool.result", {"tool_call_id": call["tool_call_id"], "tool": "read_file", "output": "ok"})


def long_history() -> list[Record]:
    history = History()
    history.add("session.created", {"job_name": "long", "model": {"provider": "scripted", "id": "s"}})
    history.add("session.state_change", {"from": "CREATED", "to": "ACTIVE", "reason": "run started"})
    for turn in range(1, TURNS + 1):
        history.turn(turn, abandoned=turn == ABANDONED_TURN, intents=2 if turn == RERUN_TURN else 1)
        if turn % 40 == 0:
            history.add(
                "checkpoint.created", {"checkpoint_id": f"ck-{turn}", "reason": "tool call completed"}
            )
    return history.records


def model_of(records: list[Record]) -> dict[str, Any]:
    processes = tell(records).as_json()["processes"]
    return build(records, processes, session={"session_id": "long"})


def held_by(model: dict[str, Any], kind: str) -> set[int]:
    return {
        seq
        for item in model["items"]
        if item["kind"] == kind
        for first, last in item["seqs"]
        for seq in range(first, last + 1)
    }


def test_a_long_history_is_folded_to_about_max_steps_blocks_and_every_record_stays_reachable() -> None:
    records = long_history()
    model = model_of(records)
    limits = model["limits"]
    assert limits["steps"] > MAX_STEPS and limits["buckets"] > 0
    drawn = limits["steps"] - limits["steps_in_buckets"] + limits["buckets"]
    assert drawn <= MAX_STEPS + 10, limits
    every = {seq for item in model["items"] for first, last in item["seqs"] for seq in range(first, last + 1)}
    assert every == {r.seq for r in records}
    assert [row[0] for row in model["records"]["rows"]] == [r.seq for r in records]


def test_what_a_post_mortem_looks_for_is_never_folded() -> None:
    model = model_of(long_history())
    folded = held_by(model, "bucket")
    calls = {item["tool_call_id"]: item for item in model["items"] if item["kind"] == "call"}
    rerun = calls[f"call-{RERUN_TURN}-0"]
    assert rerun["outcome"] == "rerun" and len(rerun["intents"]) == 2
    assert not set(rerun["intents"]) & folded
    turns = [item for item in model["items"] if item["kind"] == "turn"]
    abandoned = [t for t in turns if t["status"] == "abandoned"]
    assert [(t["turn"], t["reason"]) for t in abandoned] == [(ABANDONED_TURN, "interrupted")]
    assert not held_by({"items": abandoned}, "turn") & folded
    # The edges of the process are drawn turn by turn: the first and the last turns.
    drawn_turns = sorted({t["turn"] for t in turns})
    assert drawn_turns[: KEEP_EDGE - 1] == list(range(1, KEEP_EDGE))
    assert drawn_turns[-KEEP_EDGE:] == list(range(TURNS - KEEP_EDGE + 1, TURNS + 1))


def test_a_short_history_is_drawn_whole() -> None:
    records = long_history()[:300]
    model = model_of(records)
    assert model["limits"]["buckets"] == 0
    assert not [item for item in model["items"] if item["kind"] == "bucket"]
    # Chunks share their turn's column: a turn of a request, 3 chunks and its end is 3 columns.
    first = next(item for item in model["items"] if item["kind"] == "turn")
    assert first["x1"] - first["x0"] == 2
