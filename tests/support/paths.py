"""Where the repository, its fixtures and the tests' data live."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "fixtures"
# Golden sessions and their expected `inspect`/`--verify` output (fixtures/build_golden.py).
GOLDEN = FIXTURES / "sessions"
# Everything the tests read that is not a fixture: job files, scripts, tools, golden text.
DATA = REPO / "tests" / "data"
