"""Per tool step, handshake against its peers at equal durability, in the same run, on the same
disk, interleaved round by round.

    python benchmarks/peer_steps.py [--steps N] [--rounds N] [--venv DIR] [--no-install] [--dir DIR]

- handshake: one read_file tool-call boundary through the real runner (intent, tool, result,
  checkpoint; one fdatasync);
- LangGraph: a super-step with a tool through SqliteSaver (langgraph-checkpoint-sqlite) at
  PRAGMA synchronous=FULL in WAL mode: `put_writes` of the tool's result, then `put` of the next
  checkpoint (two commits, two syncs). Target: handshake's step >= 2x as fast;
- DBOS: a workflow of one step on SQLite (DBOS's SQLite system database, its own settings:
  a rollback journal, synchronous FULL). Target: handshake's step >= 10x as fast.

The peers run in their own virtual environment (benchmarks/peers/requirements.txt, pinned),
made on first use at benchmarks/.peers-venv (git-ignored), in a subprocess that answers one
JSON line a command (benchmarks/peers/steps.py). If that environment cannot be made or the
peers fail, their rows say why and are skipped; this never fails the run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from boundary import read_boundary
from common import (
    Context,
    Row,
    counting_syncs,
    interleave,
    median,
    peers_venv,
    per_round_ratio,
    print_rows,
    row,
    skipped,
)

HERE = Path(__file__).resolve().parent
SUITE = "peers"
VENV = peers_venv()
REQUIREMENTS = HERE / "peers" / "requirements.txt"
SCRIPT = HERE / "peers" / "steps.py"
LANGGRAPH = "LangGraph super-step with a tool (put_writes + put)"
DBOS = "DBOS workflow of one step (SQLite)"


def _tail(text: str | bytes | None) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""


def ensure_venv(venv: Path, install: bool) -> tuple[Path | None, str | None]:
    """(the peers' python, None) or (None, why not). Remade when the requirements change."""
    python = venv / "bin" / "python"
    stamp = venv / "requirements.sha256"
    want = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    if python.exists() and stamp.exists() and stamp.read_text().strip() == want:
        return python, None
    if not install:
        return None, f"no peers' environment at {venv} (the driver makes it unless told not to)"
    print(f"  making the peers' environment at {venv} ...", file=sys.stderr)
    try:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True, capture_output=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "-r", str(REQUIREMENTS)],
            check=True,
            capture_output=True,
            timeout=1200,
        )
    except subprocess.CalledProcessError as exc:
        return None, f"could not make the peers' environment: {_tail(exc.stderr) or exc}"
    except (subprocess.TimeoutExpired, OSError) as exc:
        return None, f"could not make the peers' environment: {exc}"
    stamp.write_text(want + "\n")
    return python, None


class Peers:
    """benchmarks/peers/steps.py in the peers' environment, one JSON line a command."""

    def __init__(self, python: Path, directory: Path) -> None:
        self.process = subprocess.Popen(
            [str(python), str(SCRIPT), str(directory)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def ask(self, op: str, **args: Any) -> dict[str, Any]:
        assert self.process.stdin and self.process.stdout
        self.process.stdin.write(json.dumps({"op": op, **args}) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            self.process.wait(timeout=10)
            err = self.process.stderr.read() if self.process.stderr else ""
            raise RuntimeError(f"the peers' process ended: {_tail(err)}")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise RuntimeError(answer["error"])
        return answer

    def close(self) -> None:
        try:
            self.ask("quit")
        except (RuntimeError, OSError, ValueError):
            pass
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


STRACE = ["strace", "-f", "-c", "-e", "trace=fsync,fdatasync"]


def _strace_syncs(python: Path, op: str, steps: int, directory: Path) -> int | None:
    """fsync + fdatasync calls (strace -f -c) of a peers' process that runs `steps` steps of op."""
    directory.mkdir(parents=True, exist_ok=True)
    out = directory / f"strace-{op}-{steps}.txt"
    commands = "".join(json.dumps(c) + "\n" for c in ({"op": op, "steps": steps}, {"op": "quit"}))
    try:
        subprocess.run(
            [*STRACE, "-o", str(out), str(python), str(SCRIPT), str(directory / f"{op}-{steps}")],
            input=commands,
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        )
        return sum(
            int(line.split()[3])
            for line in out.read_text().splitlines()
            if line.split()[-1:] in (["fsync"], ["fdatasync"])
        )
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def syncs_per_step(python: Path, op: str, directory: Path) -> float | None:
    """The peer's syncs a step, by strace where it is installed: (at 30 steps - at 10) / 20."""
    if not shutil.which("strace"):
        return None
    low, high = _strace_syncs(python, op, 10, directory), _strace_syncs(python, op, 30, directory)
    return (high - low) / 20 if low is not None and high is not None else None


def handshake_syncs_per_step(tmp: Path, steps: int = 20) -> float:
    tmp.mkdir(parents=True, exist_ok=True)
    ours = read_boundary(tmp)
    try:
        ours.measure(1)
        with counting_syncs() as syncs:
            ours.measure(steps)
        return len(syncs) / steps
    finally:
        ours.close()


def _per_step(x: float | None) -> str:
    return "?" if x is None else f"{x:g}"


def skipped_rows(reason: str) -> list[Row]:
    return [
        skipped(SUITE, LANGGRAPH, reason, ">= 2x"),
        skipped(SUITE, DBOS, reason, ">= 10x"),
    ]


def rows(
    ctx: Context, steps: int | None = None, rounds: int | None = None, dbos_steps: int | None = None
) -> list[Row]:
    if ctx.peers_venv is None:
        return skipped_rows("the peers are turned off (--no-peers)")
    python, why = ensure_venv(ctx.peers_venv, ctx.install_peers)
    if python is None:
        return skipped_rows(why or "no peers' environment")
    steps = steps or ctx.pick(100, 40, 10)
    dbos_steps = dbos_steps or max(5, steps // 4)
    rounds = rounds or ctx.pick(9, 6, 2)
    tmp = ctx.fresh_dir("peers")
    peers = Peers(python, tmp / "peers")
    ours = read_boundary(tmp)
    try:
        info = peers.ask("info")
        ours.measure(2)
        ours.cpu.clear()
        lg_cpu: list[float] = []
        dbos_cpu: list[float] = []
        get_tuple: list[float] = []
        checkpoints: list[int] = []

        def langgraph() -> float:
            answer = peers.ask("langgraph", steps=steps)
            lg_cpu.append(answer["cpu_per_step"])
            get_tuple.append(answer["get_tuple"])
            checkpoints.append(answer["checkpoints"])
            return float(answer["per_step"])

        def dbos() -> float:
            answer = peers.ask("dbos", steps=dbos_steps)
            dbos_cpu.append(answer["cpu_per_step"])
            return float(answer["per_step"])

        times = interleave(
            {"handshake": lambda: ours.measure(steps), "langgraph": langgraph, "dbos": dbos}, rounds
        )
    except (RuntimeError, OSError, ValueError, KeyError) as exc:
        return skipped_rows(f"the peers failed: {exc}")
    finally:
        peers.close()
        ours.close()
    syncs = {
        "handshake": handshake_syncs_per_step(tmp / "hs-syncs"),
        "langgraph": syncs_per_step(python, "langgraph", tmp / "lg-syncs"),
        "dbos": syncs_per_step(python, "dbos", tmp / "dbos-syncs"),
    }
    us = 1e6
    hs = median(times["handshake"])
    versions = info.get("versions", {})
    lg_settings, dbos_settings = info.get("langgraph", {}), info.get("dbos", {})
    return [
        row(
            SUITE,
            "handshake read tool step",
            hs * us,
            "us",
            samples=times["handshake"],
            note=(
                f"CPU {median(ours.cpu) * us:.0f} us, {_per_step(syncs['handshake'])} syncs a step; "
                f"{rounds} rounds of {steps} steps "
                f"(DBOS: {dbos_steps}); ratios below: the peer's time / handshake's, per round"
            ),
        ),
        row(
            SUITE,
            LANGGRAPH,
            median(times["langgraph"]) * us,
            "us",
            baseline="handshake read tool step",
            baseline_value=hs * us,
            ratio=median(per_round_ratio(times["langgraph"], times["handshake"])),
            at_least=2,
            samples=times["langgraph"],
            note=(
                f"langgraph-checkpoint-sqlite {versions.get('langgraph-checkpoint-sqlite')}, "
                f"journal_mode={lg_settings.get('journal_mode')}, "
                f"synchronous={lg_settings.get('synchronous')} (2 = FULL), "
                f"SQLite {info.get('sqlite')}; CPU {median(lg_cpu) * us:.0f} us, "
                f"{_per_step(syncs['langgraph'])} syncs a step (strace)"
            ),
        ),
        row(
            SUITE,
            "LangGraph get_tuple (latest checkpoint)",
            median(get_tuple) * 1e3,
            "ms",
            note=f"on a thread of up to {max(checkpoints)} checkpoints",
        ),
        row(
            SUITE,
            DBOS,
            median(times["dbos"]) * us,
            "us",
            baseline="handshake read tool step",
            baseline_value=hs * us,
            ratio=median(per_round_ratio(times["dbos"], times["handshake"])),
            at_least=10,
            samples=times["dbos"],
            note=(
                f"dbos {versions.get('dbos')}, journal_mode={dbos_settings.get('journal_mode')}, "
                f"synchronous={dbos_settings.get('synchronous')}; CPU {median(dbos_cpu) * us:.0f} us, "
                f"{_per_step(syncs['dbos'])} syncs a step (strace)"
            ),
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--venv", type=Path, default=VENV)
    parser.add_argument("--no-install", action="store_true", help="do not make the peers' environment")
    parser.add_argument("--dir", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp_name:
        ctx = Context("full", Path(tmp_name), peers_venv=args.venv, install_peers=not args.no_install)
        print_rows(rows(ctx, args.steps, args.rounds))


if __name__ == "__main__":
    main()
