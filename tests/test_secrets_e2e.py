"""The secrets corpus never reaches disk or output: fed through a whole session, in the
prompt, the model's streamed text, tool arguments, tool output and a passed-through
environment variable, no hidden value appears in any file of the session, the workspace,
or anything `run` and `inspect` print."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tomli_w

from tests.support.cli import CliResult
from tests.support.paths import DATA, FIXTURES

RUN_JOBS = DATA / "run_jobs"


def corpus() -> dict[str, Any]:
    return json.loads((FIXTURES / "secrets" / "corpus.json").read_text())  # type: ignore[no-any-return]


def test_secrets_corpus_never_reaches_disk_or_output(
    cli: Callable[..., CliResult], root: Path, tmp_path: Path
) -> None:
    secrets = corpus()["secrets"]
    env_secrets = [s for s in secrets if s["kind"].startswith("env:")]
    env_names = [s["kind"].split(":", 1)[1] for s in env_secrets]
    env_secret, env_name = env_secrets[0], env_names[0]
    in_text = [s["value"] for s in secrets if not s["kind"].startswith("env:")]
    hidden = [s["hidden"] for s in secrets]

    jobs = tmp_path / "job"
    jobs.mkdir()
    turns = [
        {
            # Streamed word by word: every secret is split across chunks by the spaces around it.
            "text": "Here are the keys: " + " and ".join(in_text) + " — keep them safe.",
            "tool_calls": [
                {"tool": "write_file", "args": {"path": "notes.txt", "content": "token=" + in_text[0]}},
                {"tool": "echo", "args": {"name": env_name, "extra": in_text[1]}},
            ],
        },
        {"text": f"I also remember {in_text[-1]} and " + " ".join(s["value"] for s in env_secrets) + "."},
    ]
    (jobs / "script.toml").write_text(tomli_w.dumps({"turns": turns}))
    job = {
        "name": "secrets",
        "secret_env": env_names,
        "prompt": {
            "system": f"Your key is {in_text[2]}.",
            "user": f"Use {in_text[3]} and {env_secret['value']}.",
        },
        "model": {"provider": "scripted", "script": "script.toml"},
        "tools": [
            {
                "name": "write_file",
                "builtin": "write_file",
                "side_effect": "write",
                "idempotency": "idempotent",
            },
            {
                "name": "echo",
                "command": [sys.executable, str(RUN_JOBS / "echo_env.py")],
                "side_effect": "read",
                "idempotency": "idempotent",
                "env": [env_name],
            },
        ],
    }
    (jobs / "job.toml").write_text(tomli_w.dumps(job))
    workspace = tmp_path / "ws"
    workspace.mkdir()
    extra_env = {name: s["value"] for name, s in zip(env_names, env_secrets, strict=True)}

    outputs = []
    run = cli(
        "run",
        str(jobs / "job.toml"),
        "--root",
        str(root),
        "--workspace",
        str(workspace),
        "--json",
        extra_env=extra_env,
    )
    assert run.code == 0, run.stdout + run.stderr
    session_id = run.json["session_id"]
    outputs.append(run.stdout + run.stderr)
    human = cli(
        "run", str(jobs / "job.toml"), "--root", str(root), "--workspace", str(workspace), extra_env=extra_env
    )
    assert human.code == 0
    outputs.append(human.stdout + human.stderr)
    for args in (
        ["inspect"],
        ["inspect", session_id],
        ["inspect", session_id, "--events"],
        ["inspect", session_id, "--verify"],
    ):
        for fmt in ([], ["--json"]):
            shown = cli(*args, *fmt, "--root", str(root))
            assert shown.code == 0
            outputs.append(shown.stdout + shown.stderr)

    # The masks say what they hid.
    messages = cli("inspect", session_id, "--root", str(root), "--json").json["messages"]
    text = json.dumps(messages)
    for kind in {s["kind"] for s in secrets}:
        assert f"[masked:{kind}]" in text, kind
    # The tool got the real value through its environment, and its output was masked.
    tool_outputs = [m["content"] for m in messages if m["role"] == "tool"]
    assert any(f"[masked:{env_secret['kind']}]" in json.dumps(o) for o in tool_outputs)

    on_disk = [p.read_bytes() for base in (root, workspace) for p in base.rglob("*") if p.is_file()]
    assert on_disk
    for value in hidden:
        needle = value.encode()
        assert not any(needle in blob for blob in on_disk), f"{value[:12]}... reached the disk"
        assert not any(value in out for out in outputs), f"{value[:12]}... reached the output"
