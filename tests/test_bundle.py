"""`handshake export` and `handshake import`: real sessions, real tar archives, hostile bundles.

A bundle is how a crashed session leaves a CI machine for a developer's laptop, so the tests
check both ends: what lands is byte for byte what was exported and recovers on the new root,
and a bundle that tries anything (a path out of the root, a link, a device, a file that is
not what its manifest says) is refused before a single byte is written.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import stat
import subprocess
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from handshake_cli.maintenance import bundle
from handshake_cli.maintenance.bundle import import_ as importing
from handshake_cli.paths import Paths
from handshake_cli.storage.filesystem import FilesystemStore
from tests.support.cli import CliResult, handshake, wait_for
from tests.support.jobs import WRITE, write_job
from tests.support.paths import FIXTURES, GOLDEN
from tests.support.sessions import files_of

Cli = Callable[..., CliResult]
QUICKSTART = FIXTURES / "jobs" / "quickstart.toml"
NAMES = ["clean", "torn-tail", "corrupt-middle", "in-doubt", "no-checkpoint"]


def export(cli: Cli, root: Path, session_id: str, output: Path, *extra: str) -> CliResult:
    return cli("export", session_id, "-o", str(output), "--root", str(root), "--json", *extra)


def import_(cli: Cli, root: Path, path: Path) -> CliResult:
    return cli("import", str(path), "--root", str(root), "--json")


# -- round trips ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_a_golden_session_round_trips_byte_for_byte(
    name: str, golden_root: Callable[[str], Path], cli: Cli, tmp_path: Path
) -> None:
    source = golden_root(name)
    out = tmp_path / f"{name}.tar.gz"
    exported = export(cli, source, name, out)
    assert exported.code == 0, exported.stdout + exported.stderr
    original = files_of(source / "sessions" / name)
    doc = exported.json
    assert doc["status"] == "ok" and doc["session_id"] == name
    assert doc["file_count"] == len(original) and doc["bytes"] == out.stat().st_size
    assert doc["session_bytes"] == sum(len(b) for b in original.values())

    with tarfile.open(out, "r:gz") as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
    assert manifest["bundle_format"] == 1 and manifest["tool"] == "handshake"
    assert manifest["format_version"] == 1 and manifest["session_id"] == name
    assert {f["path"]: (f["size"], f["sha256"]) for f in manifest["files"]} == {
        f"sessions/{name}/{path}": (len(data), hashlib.sha256(data).hexdigest())
        for path, data in original.items()
    }

    dest = tmp_path / "dest"
    imported = import_(cli, dest, out)
    assert imported.code == 0, imported.stdout + imported.stderr
    landed = dest / "sessions" / name
    assert files_of(landed) == original
    expected = json.loads((GOLDEN / f"{name}.verify.json").read_text())
    assert imported.json["verdict"] == expected["verdict"]
    assert imported.json["session_id"] == name and imported.json["file_count"] == len(original)
    # The copy verifies exactly as the original does (HANDSHAKE_HOME: no temp path in guidance).
    verified = cli("inspect", name, "--verify", "--json", extra_env={"HANDSHAKE_HOME": str(dest)})
    assert verified.json == expected
    # Modes as the store makes them, whatever the archive said; no lock travels.
    for path in [landed, *landed.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), path
    assert not (landed / "lock").exists() and not (landed / "owner.json").exists()
    assert list((dest / "staging").iterdir()) == []


def test_an_interrupted_session_recovers_on_the_new_root(
    cli: Cli, tmp_path: Path, env: dict[str, str]
) -> None:
    ci_root, laptop_root, workspace = tmp_path / "ci", tmp_path / "laptop", tmp_path / "ws"
    workspace.mkdir()
    crashed = subprocess.run(
        handshake(
            "run",
            str(QUICKSTART),
            "--session-id",
            "ci-1",
            "--workspace",
            str(workspace),
            "--root",
            str(ci_root),
        ),
        capture_output=True,
        text=True,
        env={**env, "HANDSHAKE_CRASH_AT": "before_result:3"},
        timeout=60,
        check=False,
        start_new_session=True,
    )
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    before = files_of(ci_root / "sessions" / "ci-1")

    assert {"lock", "owner.json"} <= set(before)  # what the SIGKILLed writer left behind
    out = tmp_path / "ci-1.tar.gz"
    assert export(cli, ci_root, "ci-1", out).code == 0
    with tarfile.open(out, "r:gz") as tar:
        bundled = {name.removeprefix("sessions/ci-1/") for name in tar.getnames()}
    assert not bundled & {"lock", "owner.json"}
    imported = import_(cli, laptop_root, out)
    assert imported.code == 0, imported.stdout
    doc = imported.json
    assert doc["state"] == "INTERRUPTED" and doc["verdict"] in {"intact", "repairable"}
    assert doc["workspace"] == str(workspace) and doc["workspace_exists"] is True
    assert f"handshake recover ci-1 --root {laptop_root}" in doc["guidance"]
    assert any("edit `workspace`" in line for line in doc["guidance"])

    recovered = cli("recover", "ci-1", "--root", str(laptop_root), "--json")
    assert recovered.code == 0, recovered.stdout + recovered.stderr
    assert recovered.json["state_after"] == "COMPLETED"
    inspected = cli("inspect", "ci-1", "--root", str(laptop_root), "--json").json
    assert inspected["state"] == "COMPLETED"
    assert inspected["messages"][-1]["content"] == "Done: hello.txt is written and the team has been told."
    # The notification went out before the crash; the probe found it: it was not sent again.
    log = (workspace / "quickstart-output" / "notifications.log").read_text().splitlines()
    assert len(log) == 1
    # The exporting root is only read.
    assert files_of(ci_root / "sessions" / "ci-1") == before


def test_export_reads_a_running_session_and_the_bundle_is_a_prefix(
    cli: Cli, tmp_path: Path, env: dict[str, str]
) -> None:
    root, workspace = tmp_path / "root", tmp_path / "ws"
    workspace.mkdir()
    words = " ".join(f"word{i}" for i in range(150))
    write = {"tool": "write_file", "args": {"path": "out.txt", "content": "x"}}
    job = write_job(
        tmp_path / "job", [{"text": words, "tool_calls": [write]}, {"text": words}], [WRITE], delay_ms=5
    )
    run = subprocess.Popen(
        handshake(
            "run", str(job), "--session-id", "live-1", "--root", str(root), "--workspace", str(workspace)
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    segment = root / "sessions" / "live-1" / "journal" / "00000001.jsonl"
    try:
        wait_for(lambda: segment.exists() and segment.read_bytes().count(b"\n") >= 4)
        bundles: list[tuple[Path, dict[str, Any]]] = []
        for n in range(3):
            out = tmp_path / f"live-{n}.tar.gz"
            exported = export(cli, root, "live-1", out)
            assert exported.code == 0, exported.stdout + exported.stderr
            bundles.append((out, exported.json))
            time.sleep(0.15)
        assert bundles[0][1]["live_writer"] is True
        assert run.wait(timeout=60) == 0
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()

    final = files_of(root / "sessions" / "live-1")
    for n, (out, _doc) in enumerate(bundles):
        with tarfile.open(out, "r:gz") as tar:
            names = tar.getnames()
        assert not any(name.endswith(("/lock", "/owner.json")) for name in names)
        dest = tmp_path / f"dest-{n}"
        imported = import_(cli, dest, out)
        assert imported.code == 0, imported.stdout
        landed = dest / "sessions" / "live-1"
        # Each journal segment in the bundle is a prefix of what the run went on to write.
        for path, data in files_of(landed / "journal").items():
            assert final[f"journal/{path}"].startswith(data)
        verified = cli("inspect", "live-1", "--verify", "--root", str(dest), "--json")
        assert verified.code == 0, verified.stdout
        damage = verified.json["journal"]["damage"]
        assert verified.json["verdict"] in {"intact", "repairable"}
        assert damage is None or damage["kind"] == "torn_tail"
        assert imported.json["verdict"] == verified.json["verdict"]


# -- export refusals --------------------------------------------------------------------------


def test_export_does_not_overwrite_without_force(
    golden_root: Callable[[str], Path], cli: Cli, tmp_path: Path
) -> None:
    root = golden_root("clean")
    out = tmp_path / "taken.tar.gz"
    out.write_bytes(b"precious")
    refused = export(cli, root, "clean", out)
    assert refused.code == 2 and refused.json["error"]["code"] == "output_exists"
    assert out.read_bytes() == b"precious"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp-")] == []
    human = cli("export", "clean", "-o", str(out), "--root", str(root))
    assert human.code == 2 and "--force" in human.stderr
    forced = export(cli, root, "clean", out, "--force")
    assert forced.code == 0, forced.stdout
    assert tarfile.is_tarfile(out)


def test_export_of_an_unknown_session_is_exit_6(root: Path, cli: Cli, tmp_path: Path) -> None:
    out = tmp_path / "none.tar.gz"
    result = export(cli, root, "nope", out)
    assert result.code == 6 and result.json["error"]["code"] == "not_found"
    assert not out.exists()
    bad = export(cli, root, "../x", out)
    assert bad.code == 2 and bad.json["error"]["code"] == "invalid_session_id"


def test_both_commands_have_help_root_and_json(cli: Cli) -> None:
    for command in ("export", "import"):
        result = cli(command, "--help")
        assert result.code == 0
        assert "--root" in result.stdout and "--json" in result.stdout


def test_human_output(golden_root: Callable[[str], Path], cli: Cli, tmp_path: Path) -> None:
    root = golden_root("in-doubt")
    out = tmp_path / "b.tar.gz"
    exported = cli("export", "in-doubt", "-o", str(out), "--root", str(root))
    assert exported.code == 0 and "exported session in-doubt" in exported.stdout
    dest = tmp_path / "dest"
    imported = cli("import", str(out), "--root", str(dest))
    assert imported.code == 0
    assert "imported session in-doubt" in imported.stdout and "INTERRUPTED" in imported.stdout
    assert "/srv/golden-workspace (it does not exist on this machine)" in imported.stderr
    assert f"handshake recover in-doubt --root {dest}" in imported.stderr


# -- hostile and broken bundles ---------------------------------------------------------------


@pytest.fixture
def good_bundle(golden_root: Callable[[str], Path], tmp_path: Path) -> Path:
    out = tmp_path / "good.tar.gz"
    bundle.export_session(FilesystemStore(Paths(golden_root("clean"))), "clean", out)
    return out


Member = tuple[tarfile.TarInfo, bytes | None]


def member(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"x", link: str = "") -> Member:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, 0o644
    if kind == tarfile.REGTYPE:
        info.size = len(data)
        return info, data
    return info, None


def rebuild(
    good: Path,
    out: Path,
    *,
    add: list[Member] | None = None,
    change: Callable[[str, bytes], bytes] | None = None,
    manifest: Callable[[dict[str, Any]], None] | None = None,
) -> Path:
    """A copy of a good bundle with members added, contents changed or the manifest edited."""
    with tarfile.open(good, "r:gz") as src, tarfile.open(out, "w:gz") as dst:
        for info, data in add or []:
            dst.addfile(info, io.BytesIO(data) if data is not None else None)
        for info in src.getmembers():
            data = src.extractfile(info).read() if info.isfile() else None  # type: ignore[union-attr]
            if data is not None and info.name == "manifest.json" and manifest:
                doc = json.loads(data)
                manifest(doc)
                data = json.dumps(doc).encode()
            elif data is not None and change:
                data = change(info.name, data)
            if data is not None:
                info.size = len(data)
            dst.addfile(info, io.BytesIO(data) if data is not None else None)
    return out


def flip_journal_byte(name: str, data: bytes) -> bytes:
    if not name.endswith(".jsonl"):
        return data
    return data[:100] + bytes([data[100] ^ 1]) + data[101:]


def grow_journal(name: str, data: bytes) -> bytes:
    return data + b"\n" if name.endswith(".jsonl") else data


def drop_a_manifest_entry(doc: dict[str, Any]) -> None:
    doc["files"] = [f for f in doc["files"] if not f["path"].endswith("head.json")]


def list_a_missing_file(doc: dict[str, Any]) -> None:
    doc["files"].append({"path": "sessions/clean/journal/00000099.jsonl", "size": 1, "sha256": "0" * 64})


def newer(key: str) -> Callable[[dict[str, Any]], None]:
    def edit(doc: dict[str, Any]) -> None:
        doc[key] = 2

    return edit


HOSTILE: dict[str, tuple[dict[str, Any], int, str]] = {
    "dotdot": ({"add": [member("../evil")]}, 2, "'..'"),
    "dotdot inside": ({"add": [member("sessions/clean/../../evil")]}, 2, "'..'"),
    "absolute": ({"add": [member("/tmp/handshake-evil")]}, 2, "absolute"),
    "symlink": ({"add": [member("sessions/clean/evil", tarfile.SYMTYPE, link="/etc/passwd")]}, 2, "link"),
    "hardlink": ({"add": [member("sessions/clean/evil", tarfile.LNKTYPE, link="/etc/passwd")]}, 2, "link"),
    "char device": ({"add": [member("sessions/clean/evil", tarfile.CHRTYPE)]}, 2, "device"),
    "block device": ({"add": [member("sessions/clean/evil", tarfile.BLKTYPE)]}, 2, "device"),
    "fifo": ({"add": [member("sessions/clean/evil", tarfile.FIFOTYPE)]}, 2, "fifo"),
    "outside sessions": ({"add": [member("evil.txt")]}, 2, "outside"),
    "another tree": ({"add": [member("other/clean/x")]}, 2, "outside"),
    "second session": ({"add": [member("sessions/other/session.toml")]}, 2, "second session"),
    "invalid id": ({"add": [member("sessions/-rf/x")]}, 2, "invalid session id"),
    "dot file": ({"add": [member("sessions/clean/.hidden")]}, 2, "never writes"),
    "a lock": ({"add": [member("sessions/clean/owner.json")]}, 2, "lock"),
    "file for a directory": ({"add": [member("sessions/clean/quarantine")]}, 2, "directories"),
    "not in manifest": ({"add": [member("sessions/clean/journal/extra.jsonl")]}, 2, "does not list"),
    "manifest entry dropped": ({"manifest": drop_a_manifest_entry}, 2, "does not list"),
    "manifest names a missing file": ({"manifest": list_a_missing_file}, 2, "does not hold"),
    "sha mismatch": ({"change": flip_journal_byte}, 5, "sha256"),
    "size mismatch": ({"change": grow_journal}, 5, "bytes"),
    "newer format_version": ({"manifest": newer("format_version")}, 2, "format_version 2"),
    "newer bundle_format": ({"manifest": newer("bundle_format")}, 2, "bundle_format 2"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_a_hostile_or_broken_bundle_is_refused_and_nothing_is_written(
    case: str, good_bundle: Path, cli: Cli, tmp_path: Path
) -> None:
    how, code, said = HOSTILE[case]
    hostile = rebuild(good_bundle, tmp_path / "hostile.tar.gz", **how)
    dest = tmp_path / "dest"
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    result = import_(cli, dest, hostile)
    assert result.code == code, result.stdout
    doc = result.json
    assert doc["status"] == "error" and doc["error"]["exit_code"] == code
    assert said in doc["error"]["message"]
    assert not dest.exists()
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before
    assert not Path("/tmp/handshake-evil").exists()


def test_a_newer_format_names_both_versions(good_bundle: Path, cli: Cli, tmp_path: Path) -> None:
    hostile = rebuild(good_bundle, tmp_path / "newer.tar.gz", manifest=newer("format_version"))
    result = import_(cli, tmp_path / "dest", hostile)
    assert result.json["error"]["code"] == "unsupported_format"
    assert "format_version 2" in result.json["error"]["message"]
    assert "format_version 1" in result.json["error"]["message"]


def test_a_session_toml_of_a_newer_format_is_refused(good_bundle: Path, cli: Cli, tmp_path: Path) -> None:
    def newer_toml(name: str, data: bytes) -> bytes:
        return data.replace(b"format_version = 1", b"format_version = 3") if name.endswith(".toml") else data

    def rehash(doc: dict[str, Any]) -> None:
        for entry in doc["files"]:
            if entry["path"].endswith(".toml"):
                with tarfile.open(good_bundle, "r:gz") as tar:
                    data = newer_toml(entry["path"], tar.extractfile(entry["path"]).read())  # type: ignore[union-attr]
                entry["sha256"] = hashlib.sha256(data).hexdigest()

    hostile = rebuild(good_bundle, tmp_path / "toml.tar.gz", change=newer_toml, manifest=rehash)
    result = import_(cli, tmp_path / "dest", hostile)
    assert result.code == 2 and result.json["error"]["code"] == "unsupported_format", result.stdout
    assert "format_version 3" in result.json["error"]["message"]
    assert not (tmp_path / "dest").exists()


def test_import_never_overwrites_a_session(good_bundle: Path, root: Path, cli: Cli) -> None:
    assert (root / "sessions" / "clean").is_dir()  # the root the bundle came from
    before = files_of(root)
    result = import_(cli, root, good_bundle)
    assert result.code == 2 and result.json["error"]["code"] == "session_exists"
    assert files_of(root) == before
    assert not (root / "staging").exists()


@pytest.mark.parametrize("damage", ["not a tar", "truncated", "missing"])
def test_a_file_that_is_no_bundle(damage: str, good_bundle: Path, cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "broken.tar.gz"
    if damage == "not a tar":
        path.write_bytes(b"hello, this is not a bundle\n")
    elif damage == "truncated":
        path.write_bytes(good_bundle.read_bytes()[: good_bundle.stat().st_size // 2])
    result = import_(cli, tmp_path / "dest", path)
    assert result.code == (5 if damage == "truncated" else 2), result.stdout
    assert not (tmp_path / "dest").exists()


def test_a_failure_while_landing_leaves_no_half_session(
    good_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(top: Path) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(importing, "_seal", crash)
    paths = Paths(tmp_path / "dest")
    with pytest.raises(OSError, match="disk on fire"):
        bundle.import_bundle(FilesystemStore(paths), good_bundle)
    assert list(paths.sessions.iterdir()) == [] and list(paths.staging.iterdir()) == []
