"""Which store a root names (`storage/open.py`), and a PostgreSQL root's password kept out of
everything handshake prints."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from handshake_cli.errors import ExitCode, UsageError
from handshake_cli.paths import Paths, without_password
from handshake_cli.storage.filesystem import FilesystemStore
from handshake_cli.storage.open import open_store
from tests.support.cli import CliResult

SECRET = "s3cr3t-pw"
URL = f"postgresql://ci:{SECRET}@db.example:5432/handshake?sslmode=require&password={SECRET}&x=1"


@pytest.mark.parametrize(
    ("typed", "shown"),
    [
        (URL, "postgresql://ci@db.example:5432/handshake?sslmode=require&x=1"),
        ("postgres://ci@db.example/handshake", "postgres://ci@db.example/handshake"),
        ("postgresql://ci:pw@db.example", "postgresql://ci@db.example"),
        (
            "postgresql:///handshake?host=/run/postgresql&password=pw",
            "postgresql:///handshake?host=/run/postgresql",
        ),
        ("postgresql://db.example/handshake?password=pw", "postgresql://db.example/handshake"),
    ],
)
def test_a_url_is_shown_without_its_password(typed: str, shown: str) -> None:
    assert without_password(typed) == shown
    paths = Paths.resolve(typed)
    assert paths.url == typed  # kept as typed: the store connects with it
    assert paths.shown_root == shown
    assert paths.root_args() == ["--root", shown]


def test_a_url_from_the_environment_is_not_repeated_and_a_directory_is_a_path(tmp_path: Path) -> None:
    from_env = Paths.resolve(None, {"HANDSHAKE_HOME": URL})
    assert from_env.url == URL and from_env.root_args() == []
    directory = Paths.resolve(str(tmp_path / "root"))
    assert directory.url is None and directory.shown_root == str(tmp_path / "root")


def test_a_directory_opens_the_filesystem_store(tmp_path: Path) -> None:
    assert isinstance(open_store(Paths(tmp_path)), FilesystemStore)


def test_a_url_without_the_postgres_store_is_a_usage_error_that_hides_the_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "handshake_cli.storage.postgres", None)  # as if not installed
    with pytest.raises(UsageError) as caught:
        open_store(Paths.resolve(URL))
    assert caught.value.exit_code == ExitCode.USAGE
    assert "postgres" in caught.value.message and SECRET not in caught.value.message


def test_no_command_prints_a_url_password(cli: Callable[..., CliResult]) -> None:
    """Whatever the PostgreSQL store answers (not installed, or no server there), nothing
    handshake prints or writes as JSON holds the password."""
    url = f"postgresql://ci:{SECRET}@127.0.0.1:9/handshake?connect_timeout=1"
    commands = (
        ["inspect"],
        ["inspect", "some-session", "--verify"],
        ["recover", "--all"],
        ["gc", "--dry-run"],
    )
    for args in commands:
        result = cli(*args, "--root", url, "--json")
        assert result.code != 0
        assert SECRET not in result.stdout + result.stderr


def test_a_directory_root_never_loads_a_database_driver(tmp_path: Path) -> None:
    probe = (
        "import sys\n"
        "from handshake_cli.cli.entry import main\n"
        "try:\n"
        f"    main(['inspect', '--root', {str(tmp_path)!r}, '--json'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "loaded = [m for m in sys.modules if m.split('.')[0] in ('psycopg', 'psycopg_binary')"
        " or m == 'handshake_cli.storage.postgres']\n"
        "print(loaded, file=sys.stderr)\n"
        "sys.exit(1 if loaded else 0)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_gc_on_a_store_without_files_keeps_an_unfinished_session_and_says_why() -> None:
    """gc decides and removes through the contract on any store (docs/DECISIONS.md, "gc on any
    store"): a session that never finished stays, named in the report with its reason."""
    from handshake_cli.maintenance.gc import collect
    from handshake_cli.maintenance.gc.policy import Policy
    from handshake_cli.storage.memory import MemoryStore

    store = MemoryStore()
    store.create_session({"job": {}}, {}, head_for=lambda record: {"last_seq": record.seq}, session_id="kept")
    report = collect(store, Policy(older_than=0.0))
    assert [entry["session_id"] for entry in report.skipped] == ["kept"]
    assert store.session_ids() == ["kept"]
