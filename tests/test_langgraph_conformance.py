"""HandshakeSaver against LangGraph's own checkpointer conformance suite
(`langgraph-checkpoint-conformance`): every base capability and the extended ones
(copy_thread, delete_for_runs, prune), each suite on a fresh saver over a fresh root: a
directory, and a PostgreSQL database (a fresh one on the test run's server)."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncGenerator, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip(
    "langgraph.checkpoint.conformance", reason="the test extra is not installed (pip install -e '.[test]')"
)

from langgraph.checkpoint.conformance import checkpointer_test, validate

from handshake_cli.langgraph import HandshakeSaver


@contextmanager
def directory_root() -> Iterator[str]:
    with tempfile.TemporaryDirectory() as root:
        yield str(Path(root))


@contextmanager
def postgres_root() -> Iterator[str]:
    from tests.support.postgres import fresh_database

    yield fresh_database()  # dropped at the test's end (tests/conftest.py)


@pytest.fixture(params=["directory", "postgres"])
def fresh_root(request: pytest.FixtureRequest) -> Callable[[], Any]:
    if request.param == "postgres":
        request.getfixturevalue("postgres_server")
        return postgres_root
    return directory_root


def test_the_saver_passes_every_capability_of_the_conformance_suite(fresh_root: Callable[[], Any]) -> None:
    @checkpointer_test(name="HandshakeSaver")
    async def handshake_saver() -> AsyncGenerator[HandshakeSaver, None]:
        with fresh_root() as root, HandshakeSaver(root) as saver:
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
    assert sum(passed for passed, _ in counts.values()) == 81, counts  # the suite's every test ran
