"""Crafted bundles: `handshake import` against everything a hostile or broken bundle can be.

The promise (DESIGN section 9, docs/FORMAT.md "Limits"): whatever the bundle, import answers
with a documented exit code — 0 for a good bundle, 2 for one handshake will not take, 5 for
a damaged one — never a traceback, never exit 1; and nothing already stored changes: the
root's existing sessions are byte-identical afterwards and no debris is left in sessions/ or
staging/.

Two parts. Named limits, each with the bundle just beyond it (a test that failed before the
limit existed). Then a hypothesis suite that builds bundles from a good one by stacking
mutations — truncated or flipped gzip bytes, wrong sizes and hashes, path traversal, links,
devices, duplicate, missing and extra members, huge declared sizes, huge tar headers, deeply
nested JSON and TOML, non-UTF-8 names, a bad session.toml — and drives the core function in
process (a few hundred examples by default, thousands under `-m slow`), plus a handful
through the real CLI.
"""

from __future__ import annotations

import copy
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from handshake_cli.errors import ExitCode, HandshakeError
from handshake_cli.maintenance import bundle
from handshake_cli.maintenance.bundle import checks
from handshake_cli.paths import Paths
from handshake_cli.storage.filesystem import FilesystemStore
from handshake_cli.storage.store import SESSION_TOML_MAX_BYTES
from tests.support.cli import CliResult
from tests.support.paths import GOLDEN
from tests.support.peak_memory import PEAK_KIB
from tests.support.sessions import files_of

Cli = Callable[..., CliResult]
SESSION = "clean"
PREFIX = f"sessions/{SESSION}"
DOCUMENTED = {int(ExitCode.OK), int(ExitCode.USAGE), int(ExitCode.INTEGRITY)}


# -- building bundles -------------------------------------------------------------------------


class Zeros(io.RawIOBase):
    """`size` zero bytes, read without ever holding them all."""

    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), self.left)
        buffer[:n] = bytes(n)
        self.left -= n
        return n


@dataclass
class Member:
    info: tarfile.TarInfo
    data: bytes | None  # None: not a regular file

    def copy(self) -> Member:
        return Member(copy.copy(self.info), self.data)


def good_members() -> list[Member]:
    """The members of a bundle `handshake export` writes for the golden `clean` session."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
        files: list[dict[str, Any]] = []
        for directory in ("sessions", PREFIX, f"{PREFIX}/journal"):
            tar.addfile(dir_info(directory))
        source = GOLDEN / SESSION
        for path in sorted(p for p in source.rglob("*") if p.is_file()):
            name = f"{PREFIX}/{path.relative_to(source)}"
            data = path.read_bytes()
            tar.addfile(file_info(name, len(data)), io.BytesIO(data))
            files.append({"path": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()})
        body = json.dumps(manifest_doc(files)).encode()
        tar.addfile(file_info("manifest.json", len(body)), io.BytesIO(body))
    with tarfile.open(fileobj=io.BytesIO(buffer.getvalue()), mode="r:gz") as tar:
        return [
            Member(info, tar.extractfile(info).read() if info.isfile() else None)  # type: ignore[union-attr]
            for info in tar.getmembers()
        ]


def manifest_doc(files: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "bundle_format": 1,
        "tool": "handshake",
        "tool_version": "test",
        "format_version": 1,
        "session_id": SESSION,
        "created_at": "2026-01-01T00:00:00Z",
        "files": files,
    }


def dir_info(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, 0o700
    return info


def file_info(name: str, size: int, kind: bytes = tarfile.REGTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.mode = kind, size, 0o600
    return info


def rehash(members: list[Member]) -> list[Member]:
    """The manifest rewritten to list every regular session file as it now is."""
    files = [
        {"path": m.info.name, "size": len(m.data), "sha256": hashlib.sha256(m.data).hexdigest()}
        for m in members
        if m.data is not None and m.info.name != "manifest.json"
    ]
    return set_manifest(members, json.dumps(manifest_doc(files)).encode())


def set_manifest(members: list[Member], body: bytes) -> list[Member]:
    out = [m for m in members if m.info.name != "manifest.json"]
    return [*out, Member(file_info("manifest.json", len(body)), body)]


def manifest_of(members: list[Member]) -> dict[str, Any]:
    body = next(m.data for m in members if m.info.name == "manifest.json")
    assert body is not None
    loaded: dict[str, Any] = json.loads(body)
    return loaded


def write_bundle(path: Path, members: list[Member], *, level: int = 1) -> Path:
    with (
        open(path, "wb") as raw,
        gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=level, mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w|", format=tarfile.PAX_FORMAT) as tar,
    ):
        for member in members:
            if member.data is None:
                tar.addfile(member.info)
            elif isinstance(member.data, Zeros):
                tar.addfile(member.info, member.data)
            else:
                tar.addfile(member.info, io.BytesIO(member.data))
    return path


def big_member(name: str, size: int) -> Member:
    """A member of `size` zero bytes, written honestly (streamed, compressing to almost nothing)."""
    return Member(file_info(name, size), Zeros(size))  # type: ignore[arg-type]


# -- one import, and what must hold after it ---------------------------------------------------


@dataclass
class Outcome:
    code: int
    message: str


@pytest.fixture(scope="module", autouse=True)
def figures() -> Iterator[None]:
    """Prints how the crafted examples were answered (run with -s to see it)."""
    yield
    run, usage, integrity = EXAMPLES
    print(
        f"\ncrafted bundles: {run} imported in process: {usage} exit 2, {integrity} exit 5, "
        f"{run - usage - integrity} exit 0"
    )


@pytest.fixture(scope="module")
def stored_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root holding another session, whose bytes every import must leave alone."""
    root = tmp_path_factory.mktemp("stored") / "root"
    (root / "sessions").mkdir(parents=True, mode=0o700)
    shutil.copytree(GOLDEN / "in-doubt", root / "sessions" / "in-doubt")
    return root


def import_in_process(root: Path, path: Path) -> Outcome:
    """`handshake import` as the core does it; then the root is checked and put back."""
    before = files_of(root / "sessions")
    try:
        report = bundle.import_bundle(FilesystemStore(Paths(root)), path)
    except HandshakeError as exc:
        outcome = Outcome(int(exc.exit_code), exc.message)
    else:
        outcome = Outcome(0, report.verdict)
    sessions = sorted(os.listdir(root / "sessions"))
    if outcome.code == 0:
        assert sessions == sorted(["in-doubt", SESSION])
        shutil.rmtree(root / "sessions" / SESSION)  # back to the root as it was
    else:
        assert sessions == ["in-doubt"], f"a refused import left {sessions}"
    assert files_of(root / "sessions") == before, "an import changed a stored session"
    staging = root / "staging"
    assert not staging.exists() or os.listdir(staging) == [], "an import left debris in staging/"
    assert outcome.code in DOCUMENTED, outcome
    return outcome


def import_cli(cli: Cli, root: Path, path: Path) -> CliResult:
    before = files_of(root / "sessions")
    result = cli("import", str(path), "--root", str(root), "--json")
    assert result.code in DOCUMENTED, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    doc = json.loads(result.stdout)
    if result.code:
        assert doc["status"] == "error" and doc["error"]["exit_code"] == result.code
        assert files_of(root / "sessions") == before
    else:
        shutil.rmtree(root / "sessions" / SESSION)
    staging = root / "staging"
    assert not staging.exists() or os.listdir(staging) == []
    return result


# -- the named limits ---------------------------------------------------------------------------


def test_the_good_bundle_imports(stored_root: Path, tmp_path: Path) -> None:
    outcome = import_in_process(stored_root, write_bundle(tmp_path / "b.tar.gz", good_members()))
    assert outcome.code == 0


def test_a_directory_named_like_a_segment_is_damage_not_a_crash(cli: Cli, tmp_path: Path) -> None:
    """Found by the crafted bundles through the CLI: a directory member where a segment would
    be made every reader of the journal fail with "internal error: IsADirectoryError" (exit 1).
    The bundle imports as damaged, as any damaged journal does, and `inspect --verify` says
    which path is not a file, exit 5."""
    members = [*good_members(), Member(dir_info(f"{PREFIX}/journal/00000002.jsonl"), None)]
    root = str(tmp_path / "root")
    result = cli("import", str(write_bundle(tmp_path / "dir.tar.gz", members)), "--root", root, "--json")
    assert result.code == 0 and result.json["verdict"] == "damaged", result.stdout
    verified = cli("inspect", SESSION, "--verify", "--json", "--root", root)
    assert verified.code == ExitCode.INTEGRITY, verified.stdout + verified.stderr
    assert "00000002.jsonl is not a regular file" in verified.stdout


def test_an_honest_segment_over_the_limit_is_refused_by_its_header(
    cli: Cli, stored_root: Path, tmp_path: Path
) -> None:
    """A segment can be at most DEFAULT_SEGMENT_BYTES plus one record; one byte more, honestly
    declared and present, is refused naming the member before a byte of it is read."""
    name = f"{PREFIX}/journal/00000099.jsonl"
    size = bundle.SEGMENT_MAX_BYTES + 1
    members = good_members()
    doc = manifest_of(members)
    doc["files"].append({"path": name, "size": size, "sha256": hashlib.sha256(bytes(size)).hexdigest()})
    members = [*set_manifest(members, json.dumps(doc).encode()), big_member(name, size)]
    result = import_cli(cli, stored_root, write_bundle(tmp_path / "big.tar.gz", members))
    assert result.code == 2, result.stdout
    message = result.json["error"]["message"]
    assert name in message and str(bundle.SEGMENT_MAX_BYTES) in message


@pytest.mark.parametrize(
    ("relative", "limit"),
    [
        ("head.json", bundle.SMALL_FILE_MAX_BYTES),
        ("requests/r1.json", bundle.SMALL_FILE_MAX_BYTES),
        ("session.toml", SESSION_TOML_MAX_BYTES),
        ("artifacts/objects/" + "0" * 64, bundle.ARTIFACT_MAX_BYTES),
        ("manifest.json", bundle.MANIFEST_MAX_BYTES),
    ],
)
def test_a_member_over_its_kind_s_limit_is_refused(
    relative: str, limit: int, stored_root: Path, tmp_path: Path
) -> None:
    """Each honestly present, one byte over: refused from its header, naming it and the limit."""
    members = good_members()
    if relative == "manifest.json":
        name = relative
        body = json.dumps(manifest_of(members)).encode()
        members = set_manifest(members, body + b" " * (limit + 1 - len(body)))
    else:
        name = f"{PREFIX}/{relative}"
        members = [m for m in members if m.info.name != name]
        doc = manifest_of(members)
        doc["files"] = [f for f in doc["files"] if f["path"] != name]
        digest = hashlib.sha256(bytes(limit + 1)).hexdigest()
        doc["files"].append({"path": name, "size": limit + 1, "sha256": digest})
        members = [*set_manifest(members, json.dumps(doc).encode()), big_member(name, limit + 1)]
    outcome = import_in_process(stored_root, write_bundle(tmp_path / "over.tar.gz", members))
    assert outcome.code == 2, outcome
    assert name in outcome.message and str(limit) in outcome.message


def write_bundle_raw(path: Path, members: list[Member]) -> Path:
    """Like write_bundle, but a member's header may declare more bytes than follow it."""
    body = io.BytesIO()
    for member in members:
        body.write(member.info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))
        if member.data:
            body.write(member.data + bytes(-len(member.data) % tarfile.BLOCKSIZE))
    body.write(bytes(2 * tarfile.BLOCKSIZE))
    path.write_bytes(gzip.compress(body.getvalue(), compresslevel=1, mtime=0))
    return path


def test_more_members_than_the_limit_is_refused(stored_root: Path, tmp_path: Path) -> None:
    members = good_members()
    extra = [Member(dir_info(f"{PREFIX}/requests/d{i}"), None) for i in range(bundle.MAX_MEMBERS)]
    outcome = import_in_process(stored_root, write_bundle(tmp_path / "many.tar.gz", [*members[:3], *extra]))
    assert outcome.code == 2 and str(bundle.MAX_MEMBERS) in outcome.message


def test_a_tar_header_over_the_limit_is_refused(stored_root: Path, tmp_path: Path) -> None:
    """tarfile reads a pax header whole, whatever size it declares: a 2 MiB one is refused."""
    members = good_members()
    members[3].info.pax_headers = {"comment": "x" * (2 << 20)}
    outcome = import_in_process(stored_root, write_bundle(tmp_path / "pax.tar.gz", members))
    assert outcome.code == 2 and "header" in outcome.message


def test_the_total_size_limit(stored_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Four GiB of real members would take minutes to write; the check is the same at any size.
    members = good_members()
    total = sum(len(m.data) for m in members if m.data is not None and m.info.name != "manifest.json")
    monkeypatch.setattr(checks, "MAX_TOTAL_BYTES", total - 1)  # read where the headers are checked
    outcome = import_in_process(stored_root, write_bundle(tmp_path / "total.tar.gz", members))
    assert outcome.code == 2 and f"past {total - 1} bytes" in outcome.message


def nested_json(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


def test_a_deeply_nested_manifest_is_exit_2(cli: Cli, stored_root: Path, tmp_path: Path) -> None:
    members = set_manifest(good_members(), b'{"x":' + nested_json(100_000) + b"}")
    result = import_cli(cli, stored_root, write_bundle(tmp_path / "deep.tar.gz", members))
    assert result.code == 2 and "manifest.json" in result.json["error"]["message"]


def test_a_deeply_nested_session_toml_is_exit_5(cli: Cli, stored_root: Path, tmp_path: Path) -> None:
    members = good_members()
    toml = next(m for m in members if m.info.name.endswith("session.toml"))
    assert toml.data is not None
    toml.data += b"x = " + b"[" * 100_000 + b"]" * 100_000 + b"\n"
    toml.info.size = len(toml.data)
    result = import_cli(cli, stored_root, write_bundle(tmp_path / "deep.tar.gz", rehash(members)))
    assert result.code == 5, result.stdout
    assert "session.toml" in result.json["error"]["message"]


@pytest.mark.slow
def test_a_bundle_declaring_512_mib_is_refused_in_little_memory(tmp_path: Path) -> None:
    """The issue's figure: a 0.5 MB bundle honestly holding a 512 MiB segment imported at ~1 GiB
    of memory. Now it is refused from its header; the child's peak RSS is measured."""
    name = f"{PREFIX}/journal/00000099.jsonl"
    size = 512 << 20
    members = good_members()
    doc = manifest_of(members)
    digest = hashlib.sha256()
    zeros = bytes(1 << 20)
    for _ in range(size >> 20):
        digest.update(zeros)
    doc["files"].append({"path": name, "size": size, "sha256": digest.hexdigest()})
    members = [*set_manifest(members, json.dumps(doc).encode()), big_member(name, size)]
    path = write_bundle(tmp_path / "512.tar.gz", members)
    code = (
        "import sys\n"
        "from handshake_cli.cli.app import main\n"
        "sys.argv = ['handshake', 'import', sys.argv[1], '--root', sys.argv[2], '--json']\n"
        "try:\n    main()\nexcept SystemExit as e:\n    code = e.code\n"
        f"print('RSS', {PEAK_KIB}, code, file=sys.stderr)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(path), str(tmp_path / "root")],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    rss_line = proc.stderr.strip().splitlines()[-1].split()
    maxrss_kib, exit_code = int(rss_line[1]), int(rss_line[2])
    print(f"bundle {path.stat().st_size} bytes; refused with exit {exit_code}; peak RSS {maxrss_kib} KiB")
    assert exit_code == 2, proc.stdout
    assert maxrss_kib * 1024 < 128 << 20
    assert not (tmp_path / "root" / "sessions").exists() or os.listdir(tmp_path / "root" / "sessions") == []


# -- the hypothesis suite ---------------------------------------------------------------------

GOOD = good_members()
FILE_NAMES = [m.info.name for m in GOOD if m.data is not None and m.info.name != "manifest.json"]
HOSTILE_NAMES = st.sampled_from(
    [
        "../evil",
        "/tmp/handshake-evil",
        f"{PREFIX}/../../evil",
        f"{PREFIX}/.hidden",
        f"{PREFIX}/lock",
        f"{PREFIX}/owner.json",
        f"{PREFIX}/journal",
        f"{PREFIX}/quarantine",
        f"{PREFIX}/journal/\udcff\udcfe.jsonl",  # a name that is not UTF-8 in the archive
        f"{PREFIX}/" + "a" * 300,
        "sessions/other/session.toml",
        "sessions/-rf/x",
        "sessions",
        PREFIX,
        "evil.txt",
        "manifest.json",
        f"{PREFIX}/session.toml",
        f"{PREFIX}/journal/00000001.jsonl",
        f"{PREFIX}/journal/00000002.jsonl",
        f"{PREFIX}/requests/r.json",
    ]
)
KINDS = st.sampled_from(
    [
        tarfile.REGTYPE,
        tarfile.DIRTYPE,
        tarfile.SYMTYPE,
        tarfile.LNKTYPE,
        tarfile.CHRTYPE,
        tarfile.BLKTYPE,
        tarfile.FIFOTYPE,
        tarfile.CONTTYPE,
        tarfile.GNUTYPE_SPARSE,
        b"Z",
    ]
)
JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)


# Hostile contents, drawn by name so that a failing example's repr stays readable.
TOML_TEXTS: dict[str, bytes] = {
    "empty": b"",
    "not utf-8": b"\xff\xfe not utf-8",
    "another session": b"format_version = 1\nsession_id = 'other'\n",
    "newer format": b"format_version = 99\nsession_id = 'clean'\n",
    "format a string": b"format_version = 'one'\n",
    "deep arrays": b"x = " + b"[" * 50_000 + b"]" * 50_000,
    "a dotted key of many parts": b"x" + b".x" * 50_000 + b" = 1",
    "a 5000-digit integer": b"format_version = 1\nsession_id = 'clean'\nx = " + b"9" * 5000 + b"\n",
    "bad syntax": b"[[[[",
}
MANIFESTS: dict[str, bytes] = {
    "empty": b"",
    "not json": b"not json",
    "a list": b"[]",
    "not utf-8": b"\xff\xfe",
    "NaN": b"NaN",
    "deep objects": nested_json(100_000),
    "deep arrays": b"[" * 100_000 + b"]" * 100_000,
    "a 5000-digit integer": b'{"tool": "handshake", "bundle_format": 1, "format_version": 1, '
    b'"session_id": "clean", "files": ' + b"9" * 5000 + b"}",
}


def mutations() -> st.SearchStrategy[Callable[[list[Member]], list[Member]]]:
    """One change to a bundle's members; several are stacked per example."""

    def add_member(name: str, kind: bytes, data: bytes) -> Callable[[list[Member]], list[Member]]:
        def apply(members: list[Member]) -> list[Member]:
            info = file_info(name, len(data), kind)
            info.linkname = "/etc/passwd" if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE) else ""
            return [*members, Member(info, data if kind == tarfile.REGTYPE else None)]

        return apply

    def drop(index: int) -> Callable[[list[Member]], list[Member]]:
        return lambda members: [m for i, m in enumerate(members) if i != index % len(members)]

    def duplicate(index: int) -> Callable[[list[Member]], list[Member]]:
        return lambda members: [*members, members[index % len(members)].copy()]

    def change_data(name: str, data: bytes) -> Callable[[list[Member]], list[Member]]:
        def apply(members: list[Member]) -> list[Member]:
            out = []
            for m in members:
                if m.info.name == name and m.data is not None:
                    m = m.copy()
                    m.data = data
                    m.info.size = len(data)
                out.append(m)
            return out

        return apply

    def manifest_edit(key: str, value: object) -> Callable[[list[Member]], list[Member]]:
        def apply(members: list[Member]) -> list[Member]:
            try:
                doc = manifest_of(members)
            except (StopIteration, ValueError, AssertionError, RecursionError):
                return members
            if not isinstance(doc, dict):
                return members
            if key.startswith("files."):
                field = key.split(".", 1)[1]
                for entry in doc.get("files", []) if isinstance(doc.get("files"), list) else []:
                    if isinstance(entry, dict):
                        entry[field] = value
                        break
            else:
                doc[key] = value
            return set_manifest(members, json.dumps(doc).encode())

        return apply

    def raw_manifest(body: bytes) -> Callable[[list[Member]], list[Member]]:
        return lambda members: set_manifest(members, body)

    def declare_size(index: int, size: int) -> Callable[[list[Member]], list[Member]]:
        def apply(members: list[Member]) -> list[Member]:
            out = [m.copy() for m in members]
            out[index % len(out)].info.size = size
            return out

        return apply

    def pax(index: int, value: str) -> Callable[[list[Member]], list[Member]]:
        def apply(members: list[Member]) -> list[Member]:
            out = [m.copy() for m in members]
            out[index % len(out)].info.pax_headers = {"comment": value}
            return out

        return apply

    return st.one_of(
        st.builds(add_member, HOSTILE_NAMES, KINDS, st.binary(max_size=16)),
        st.builds(drop, st.integers(0, 50)),
        st.builds(duplicate, st.integers(0, 50)),
        st.builds(change_data, st.sampled_from(FILE_NAMES), st.binary(max_size=64)),
        st.builds(
            change_data, st.sampled_from(FILE_NAMES), st.sampled_from(sorted(TOML_TEXTS)).map(TOML_TEXTS.get)
        ),
        st.builds(
            manifest_edit,
            st.sampled_from(
                [
                    *("files.size", "files.sha256", "files.path"),
                    *("session_id", "format_version", "bundle_format", "tool", "files"),
                ]
            ),
            JSONISH | st.integers(-(2**70), 2**70),
        ),
        st.builds(raw_manifest, st.sampled_from(sorted(MANIFESTS)).map(MANIFESTS.get)),
        st.builds(declare_size, st.integers(0, 50), st.sampled_from([0, 1, 10**6, 2**40, 2**33 + 1])),
        st.builds(
            pax, st.integers(0, 50), st.sampled_from([1, 1000, 70_000, 2 << 20]).map(lambda n: "y" * n)
        ),
        st.builds(pax, st.integers(0, 50), st.just("\udcff")),
        st.just(rehash),
    )


@st.composite
def crafted(draw: st.DrawFn) -> tuple[list[Member], str, int]:
    members = [m.copy() for m in GOOD]
    for mutation in draw(st.lists(mutations(), min_size=1, max_size=3)):
        members = mutation(members)
    damage = draw(st.sampled_from(["none", "none", "truncate", "flip"]))
    return members, damage, draw(st.integers(0, 1 << 30))


def build(path: Path, members: list[Member], damage: str, where: int) -> Path:
    write_bundle_raw(path, members)
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        del data[where % len(data) :]
    elif damage == "flip":
        data[where % len(data)] ^= 1 << (where % 8)
    path.write_bytes(bytes(data))
    return path


EXAMPLES: list[int] = [0, 0, 0]  # examples run, refused with 2, refused with 5 (for the report)


def check_crafted(stored_root: Path, directory: Path, example: tuple[list[Member], str, int]) -> None:
    members, damage, where = example
    outcome = import_in_process(stored_root, build(directory / "crafted.tar.gz", members, damage, where))
    EXAMPLES[0] += 1
    if outcome.code:
        EXAMPLES[1 if outcome.code == 2 else 2] += 1


@settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.data_too_large,
    ],
)
@given(example=crafted())
def test_crafted_bundles_get_documented_codes_and_change_nothing(
    example: tuple[list[Member], str, int], stored_root: Path, tmp_path: Path
) -> None:
    check_crafted(stored_root, tmp_path, example)


@pytest.mark.slow
@settings(
    max_examples=5000,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.data_too_large,
    ],
)
@given(example=crafted())
def test_crafted_bundles_at_scale(
    example: tuple[list[Member], str, int], stored_root: Path, tmp_path: Path
) -> None:
    check_crafted(stored_root, tmp_path, example)


@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.data_too_large,
    ],
)
@given(example=crafted())
def test_crafted_bundles_through_the_cli(
    example: tuple[list[Member], str, int], cli: Cli, stored_root: Path, tmp_path: Path
) -> None:
    members, damage, where = example
    import_cli(cli, stored_root, build(tmp_path / "crafted-cli.tar.gz", members, damage, where))
