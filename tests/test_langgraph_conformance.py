"""HandshakeSaver against LangGraph's own checkpointer conformance suite
(`langgraph-checkpoint-conformance`): every base capability and the extended ones
(copy_thread, delete_for_runs, prune), each suite on a fresh saver over a fresh root."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncGenerator
from pathlib import Path

import pytest

pytest.importorskip(
    "langgraph.checkpoint.conformance", reason="the test extra is not installed (pip install -e '.[test]')"
)

from langgraph.checkpoint.conformance import checkpointer_test, validate

from handshake_cli.langgraph import HandshakeSaver


def test_the_saver_passes_every_capability_of_the_conformance_suite() -> None:
    @checkpointer_test(name="HandshakeSaver")
    async def handshake_saver() -> AsyncGenerator[HandshakeSaver, None]:
        with tempfile.TemporaryDirectory() as root, HandshakeSaver(Path(root)) as saver:
            yield saver

    report = asyncio.run(validate(handshake_saver))
    failures = {
        name: [str(f) for f in result.failures]
        for name, result in report.results.items()
        if result.passed is not True
    }
    counts = {name: (result.tests_passed, result.tests_failed) for name, result in report.results.items()}
    assert not failures, f"{counts}\n{failures}"
    assert all(result.detected for result in report.results.values()), counts
