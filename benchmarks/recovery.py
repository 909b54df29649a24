"""Recovery cost against the length of a session's history (issue 4): rebuilding an
interrupted session should cost time proportional to the journal after its newest
checkpoint, not to the whole journal.

    python benchmarks/recovery.py [--sizes 10000,100000,1000000] [--tail 500] [--dir DIR]

For each size N a real session is built whose journal holds N records: a history of model
turns (model.request, model.chunk..., model.completed with one tool call, tool.intent,
tool.result), checkpoints written by the real CheckpointWriter from the real Thread at
tool-call boundaries (one at the session's start, one about every --checkpoint-every
records, one right before the tail), then the same tail for every N: a model turn that
was streaming when the process died (a model.request and chunks, no model.completed).
With --mid-turn the newest checkpoint falls inside that turn instead (as the runner's
"every 4096 tokens" checkpoint does), so the model.request comes before it.

Measured, in-process, median of --repeat runs, against a baseline from the same run:
- rebuild+plan: `rebuild(session)` + `make_plan(view, [])`, the planning part of
  `handshake recover --dry-run`, twice: with head.json naming the newest checkpoint, and
  with head.json naming the checkpoint taken when the run started, which is what the runner
  leaves behind after a crash (it rewrites head.json only at state transitions). Either way
  recovery must start from the newest checkpoint, and the benchmark checks that it does;
- the baseline: `journal.scan(..., decode=False)` of the whole journal (a full verify);
- for the breakdown: loading the newest checkpoint alone (`checkpoints.load`), and
  `in_flight_text(view)`, which a real (not dry-run) recovery calls next.

The claim holds when rebuild+plan stays roughly flat as N grows while the full scan grows
linearly. The completed messages in the history carry a short content (not the
concatenated chunk text) so the thread stays small; the thread still grows with the
number of turns, and the checkpoint-load column shows what that costs. The "read" column
counts the records rebuild decoded: the tail, plus whatever else it chose to read (journal
segments are rotated at 8 MiB, so where the newest checkpoint falls in its segment
matters). Everything is read with a warm page cache (the session was just written).
"""

from __future__ import annotations

import argparse
import copy
import gc
import resource
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from handshake_cli.engine.jobs import Job, Limits, ModelSpec, ScriptedTurn, ToolSpec
from handshake_cli.engine.tools.gate import idempotency_key, tool_call_id
from handshake_cli.engine.writer import open_writer
from handshake_cli.paths import Paths
from handshake_cli.recovery.plan import make_plan
from handshake_cli.recovery.view import in_flight_text, rebuild
from handshake_cli.session.checkpoints import CheckpointRef, load
from handshake_cli.session.state import ACTIVE, ModelSession, initial_head, write_head
from handshake_cli.session.thread import Thread
from handshake_cli.storage.filesystem import FilesystemStore
from handshake_cli.storage.journal.codec import DEFAULT_SEGMENT_BYTES, Record
from handshake_cli.storage.journal.scan import list_segments, scan
from handshake_cli.storage.store import SessionDir, Store

DELTAS_PER_CHUNK = 8
# A few chunk texts to cycle through (8 deltas each, as a batching runner writes them).
TEXTS = [
    " ".join(f"{word}{i}" for word in ("the", "model", "streams", "its", "answer", "in", "small", "words"))
    + " "
    for i in range(16)
]
TOOL = ToolSpec(name="read_file", side_effect="read", idempotency="idempotent", builtin="read_file")


@dataclass
class Built:
    session: SessionDir
    records: int
    tail: int
    newest: CheckpointRef
    first: CheckpointRef
    newest_head: ModelSession  # what head.json holds if it was refreshed at the newest checkpoint
    stale_head: ModelSession  # what the runner leaves: head.json from the "run started" transition
    in_flight_turn: int
    messages: int
    checkpoints: int
    checkpoint_bytes: int
    seconds: float


def store_of(session: SessionDir) -> FilesystemStore:
    """The filesystem store whose root holds `session` (`<root>/sessions/<id>`)."""
    return FilesystemStore(Paths(session.path.parent.parent))


class Generator:
    """Appends a session's records through the real session writer, keeping only the live Thread."""

    def __init__(self, session: SessionDir, job: Job, segment_bytes: int) -> None:
        self.session = session
        self.sid = session.session_id
        self._closing = ExitStack()
        self.writer = self._closing.enter_context(
            open_writer(
                store_of(session), session.session_id, job=job, environ={}, segment_bytes=segment_bytes
            )
        )
        self.record: ModelSession = self.writer.record
        self.thread: Thread = self.writer.thread
        self.job = job
        self.last_checkpoint_seq = 0
        self._text = 0

    @property
    def seq(self) -> int:
        return self.writer.last_seq

    def append(self, type_: str, data: dict[str, Any]) -> Record:
        return self.writer.append(type_, data, sync=False)

    def start(self) -> CheckpointRef:
        """The run starts: a transition to ACTIVE, its checkpoint, and head.json."""
        ref = self.writer.transition(ACTIVE, "run started")
        assert ref is not None  # the default policy checkpoints at every transition
        self.last_checkpoint_seq = self.seq
        return ref

    def checkpoint(self, reason: str) -> CheckpointRef:
        ref = self.writer.checkpoint(reason)  # synced, as the runner does
        self.last_checkpoint_seq = self.seq
        return ref

    def request(self) -> int:
        turn = self.thread.turn + 1
        self.append("model.request", {"turn": turn, "message_count": len(self.thread.messages)})
        return turn

    def chunks(self, turn: int, first_index: int, count: int) -> int:
        append = self.append
        for i in range(count):
            self._text = (self._text + 1) % len(TEXTS)
            append(
                "model.chunk",
                {
                    "turn": turn,
                    "index": first_index + i * DELTAS_PER_CHUNK,
                    "count": DELTAS_PER_CHUNK,
                    "text": TEXTS[self._text],
                },
            )
        return first_index + count * DELTAS_PER_CHUNK

    def turn_with_tool_call(self, chunks: int) -> None:
        """request, chunks, completed (one read_file call), intent, result: chunks + 4 records."""
        turn = self.request()
        self.chunks(turn, 0, chunks)
        call_id = tool_call_id(turn, 0)
        args = {"path": f"notes/{turn % 50}.md"}
        message = {
            "role": "assistant",
            "content": f"Reading notes/{turn % 50}.md.",
            "tool_calls": [{"tool_call_id": call_id, "tool": TOOL.name, "args": args}],
        }
        self.append("model.completed", {"turn": turn, "message": message, "finish_reason": "tool_calls"})
        self.append(
            "tool.intent",
            {
                "tool_call_id": call_id,
                "tool": TOOL.name,
                "args": args,
                "idempotency_key": idempotency_key(self.sid, call_id, TOOL.name, args),
                "side_effect": TOOL.side_effect,
                "idempotency": TOOL.idempotency,
            },
        )
        self.append(
            "tool.result",
            {"tool_call_id": call_id, "tool": TOOL.name, "output": {"path": args["path"], "content": "ok\n"}},
        )

    def close(self) -> None:
        self.writer.sync()
        self._closing.close()


def make_job(tmp: Path) -> Job:
    return Job(
        name="recovery-bench",
        source=str(tmp / "job.toml"),
        user="summarise the notes",
        model=ModelSpec(
            provider="scripted", id="scripted", deterministic=True, script=(ScriptedTurn("done"),)
        ),
        tools=(TOOL,),
        limits=Limits(max_turns=1_000_000),
    )


def build(
    tmp: Path,
    n: int,
    tail: int,
    chunks_per_turn: int,
    checkpoint_every: int,
    mid_turn: bool,
    segment_bytes: int = DEFAULT_SEGMENT_BYTES,
) -> Built:
    started = time.perf_counter()
    job = make_job(tmp)
    workspace = tmp / f"ws-{n}"
    workspace.mkdir()
    created = {
        "job_name": job.name,
        "model": {"provider": "scripted", "id": "scripted"},
        "prompt": {"user": job.user},
    }
    session = Store(Paths(tmp / "root")).create_session(
        {"job": job.to_config(), "workspace": str(workspace)},
        created,
        head_for=initial_head,
        session_id=f"recovery-{n}",
    )
    gen = Generator(session, job, segment_bytes)
    first = gen.start()
    stale_head = copy.deepcopy(gen.record)

    history_end = n - tail  # the seq of the newest checkpoint
    # With --mid-turn, the interrupted turn's request and first chunks come before it.
    before = 1 + chunks_per_turn // 4 if mid_turn else 0
    boundary = history_end - 1 - before  # the seq of the last tool.result of the history
    if boundary - gen.seq < 4:
        raise SystemExit(
            f"--sizes {n} is too small for --tail {tail} and --chunks-per-turn {chunks_per_turn}"
        )
    while gen.seq < boundary:
        remaining = boundary - gen.seq
        if gen.seq - gen.last_checkpoint_seq >= checkpoint_every and remaining > chunks_per_turn + 10:
            gen.checkpoint("tool call completed")
            continue
        chunks = chunks_per_turn
        if remaining - (chunks + 4) < 5:
            chunks = remaining - 4  # the last turn of the history takes what is left
        gen.turn_with_tool_call(chunks)
    if mid_turn:
        turn = gen.request()
        index = gen.chunks(turn, 0, before - 1)
        newest = gen.checkpoint("every 4096 tokens")
    else:
        newest = gen.checkpoint("tool call completed")
        turn = gen.request()
        index = gen.chunks(turn, 0, 0)
    newest_head = copy.deepcopy(gen.record)
    assert gen.seq == history_end + (0 if mid_turn else 1), (gen.seq, history_end)
    gen.chunks(turn, index, n - gen.seq)  # the tail: the stream the crash cut short
    assert gen.seq == n, (gen.seq, n)
    messages = len(gen.thread.messages)
    count, written = gen.record.checkpoint_count, gen.writer.checkpoint_bytes
    gen.close()
    return Built(
        session=session,
        records=n,
        tail=n - newest.seq,
        newest=newest,
        first=first,
        newest_head=newest_head,
        stale_head=stale_head,
        in_flight_turn=turn,
        messages=messages,
        checkpoints=count,
        checkpoint_bytes=written,
        seconds=time.perf_counter() - started,
    )


@dataclass
class Case:
    times: list[float]
    read: int = 0  # records rebuild read (and decoded)
    scanned_from: int = 0
    flight: list[float] | None = None


def rebuild_once(built: Built, case: Case) -> None:
    session = built.session
    gc.collect()
    start = time.perf_counter()
    view = rebuild(store_of(session), session.session_id)
    plan = make_plan(view, [])
    case.times.append(time.perf_counter() - start)
    # What recovery must find whatever head.json says: the newest checkpoint, the call in flight.
    assert view.base is not None and view.base.seq == built.newest.seq, (view.base, built.newest)
    assert plan.action == "resume" and plan.reason == "interrupted", plan.as_json()
    assert plan.in_flight and plan.in_flight["turn"] == built.in_flight_turn, plan.in_flight
    assert view.last_seq == built.records and view.damage is None
    case.read, case.scanned_from = len(view.records), view.scanned_from
    if case.flight is not None:
        start = time.perf_counter()
        text = in_flight_text(view)
        case.flight.append(time.perf_counter() - start)
        assert text
    del view, plan


def measure(built: Built, repeat: int) -> dict[str, Any]:
    session = built.session
    scans: list[float] = []
    loads: list[float] = []
    newest = Case([], flight=[])
    stale = Case([], flight=[])
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        result = scan(session.journal, session.session_id, decode=False)
        scans.append(time.perf_counter() - start)
        assert result.count == built.records and result.damage is None
        start = time.perf_counter()
        load(store_of(session), built.newest, session.session_id)
        loads.append(time.perf_counter() - start)
        write_head(session.path, built.newest_head)
        rebuild_once(built, newest)
        write_head(session.path, built.stale_head)
        rebuild_once(built, stale)
    return {
        "scan": statistics.median(scans),
        "load": statistics.median(loads),
        "newest": newest,
        "stale": stale,
    }


def rows(ctx: Any, sizes: list[int] | None = None, repeat: int | None = None) -> list[Any]:
    """For the driver (benchmarks/run.py): rebuild+plan against a full scan at each size, on
    the sessions long_sessions.py builds (shared within a run), head.json stale as a crash
    leaves it; and the flatness: the largest size's rebuild+plan over the smallest's."""
    from common import row
    from long_sessions import records_session

    sizes = sizes or ctx.pick([10_000, 100_000, 1_000_000], [10_000, 100_000], [10_000])
    repeat = repeat or ctx.pick(9, 5, 2)
    out = []
    first: float | None = None
    for n in sizes:
        built = records_session(ctx, n)
        result = measure(built, repeat)
        times = [t * 1e3 for t in result["stale"].times]
        ms = statistics.median(times)
        first = first or ms
        out.append(
            row(
                "recovery",
                f"rebuild+plan, {n:,} records",
                ms,
                "ms",
                baseline="full scan (no decode)",
                baseline_value=result["scan"] * 1e3,
                ratio=ms / (result["scan"] * 1e3),
                samples=times,
                note=f"read {result['stale'].read:,} records; head.json stale, as after a crash"
                if n == sizes[0]
                else "",
            )
        )
    if len(sizes) > 1 and first:
        out.append(
            row(
                "recovery",
                f"rebuild+plan, {sizes[-1]:,} over {sizes[0]:,} records",
                out[-1].value,
                "ms",
                baseline=f"rebuild+plan at {sizes[0]:,}",
                baseline_value=first,
                ratio=(out[-1].value or 0) / first,
                note="flat in history: the cost follows the tail after the newest checkpoint",
            )
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes",
        default="10000,100000,1000000",
        help="journal sizes in records, comma-separated (default: 10000,100000,1000000)",
    )
    parser.add_argument(
        "--tail", type=int, default=500, help="records after the newest checkpoint (default 500)"
    )
    parser.add_argument(
        "--chunks-per-turn", type=int, default=1000, help="model.chunk records per history turn"
    )
    parser.add_argument(
        "--checkpoint-every", type=int, default=50_000, help="a checkpoint about every this many records"
    )
    parser.add_argument(
        "--mid-turn", action="store_true", help="the newest checkpoint falls inside the cut turn"
    )
    parser.add_argument(
        "--segment-mib",
        type=float,
        default=DEFAULT_SEGMENT_BYTES / 2**20,
        help="journal segment size the session is written with (default: the runner's, 8)",
    )
    parser.add_argument("--repeat", type=int, default=5, help="runs per measurement; the median is shown")
    parser.add_argument("--dir", default=None, help="where to write (default: a temp dir)")
    args = parser.parse_args()
    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]
    rows = []
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp_name:
        tmp = Path(tmp_name)
        for n in sizes:
            built = build(
                tmp,
                n,
                args.tail,
                args.chunks_per_turn,
                args.checkpoint_every,
                args.mid_turn,
                int(args.segment_mib * 2**20),
            )
            print(
                f"built {n:>9,} records in {built.seconds:5.1f} s: {built.checkpoints} checkpoints "
                f"({built.checkpoint_bytes / 1e6:.2f} MB), {built.messages} messages in the thread, "
                f"tail {built.tail} records",
                file=sys.stderr,
            )
            result = measure(built, args.repeat)
            result["built"] = built
            result["rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            result["segments"] = len(list_segments(built.session.journal))
            rows.append(result)
    base_ms = {key: statistics.median(rows[0][key].times) * 1e3 for key in ("newest", "stale")}
    print(
        f"head: head.json names the newest checkpoint{' (taken mid-turn)' if args.mid_turn else ''}, "
        "or (stale) the one from the run's start, as the runner leaves it after a crash"
    )
    print(
        f"{'N':>9} {'segs':>4} {'tail':>5} {'head':>6} {'read':>9} {'rebuild+plan':>12} {'full scan':>10} "
        f"{'ratio':>7} {'vs 1st N':>8}   {'ckpt load':>9} {'in_flight':>9} {'peak RSS':>8}"
    )
    for row in rows:
        built = row["built"]
        for key in ("newest", "stale"):
            case: Case = row[key]
            ms = statistics.median(case.times) * 1e3
            flight = statistics.median(case.flight or [0.0]) * 1e3
            print(
                f"{built.records:>9,} {row['segments']:>4} {built.tail:>5} {key:>6} {case.read:>9,}"
                f" {ms:>9.2f} ms "
                f"{row['scan'] * 1e3:>7.1f} ms {ms / (row['scan'] * 1e3):>7.3f} {ms / base_ms[key]:>7.2f}x"
                f"   {row['load'] * 1e3:>6.2f} ms {flight:>6.2f} ms {row['rss']:>5.0f} MB"
            )
    print(
        "read: records rebuild scanned and decoded (segments: of the whole journal);\n"
        "ratio: rebuild+plan / full scan (decode=False); vs 1st N: rebuild+plan / that of the first size;\n"
        "ckpt load: checkpoints.load of the newest checkpoint alone (part of rebuild+plan);\n"
        "in_flight: in_flight_text(view), which a real recovery calls after planning (not part of it);\n"
        "peak RSS: of this process so far (it only grows)"
    )


if __name__ == "__main__":
    main()
