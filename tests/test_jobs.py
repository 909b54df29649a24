"""Job files (DESIGN section 8, docs/JOBS.md): loading, path resolution, validation, round trip.

Every mistake in a job or script file is a JobError (exit 2) whose message starts with the
file and names the key; paths resolve against the job file's directory whatever the current
directory; loading writes nothing; and the resolved job survives session.toml unchanged
(`Job.from_config(job.to_config()) == job`, through tomli-w and tomllib).
"""

from __future__ import annotations

import copy
import datetime
import os
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from handshake_cli import documents
from handshake_cli.engine import jobs
from handshake_cli.engine.jobs import (
    CheckpointPolicy,
    Job,
    JobConfigError,
    Limits,
    ModelSpec,
    ScriptedCall,
    ScriptedTurn,
    ToolSpec,
    load_job,
)
from handshake_cli.engine.providers import openai_options
from handshake_cli.errors import ExitCode
from tests.support.job_files import BASE_JOB, BASE_SCRIPT, OPENAI_MODEL, job_error, write_job
from tests.support.paths import DATA

JOBS = DATA / "jobs"

COMMAND_MODEL: dict[str, Any] = {"provider": "command", "command": ["python3", "./fake_model.py"]}


def through_toml(config: dict[str, Any]) -> dict[str, Any]:
    """What session.toml gives back: tomli-w out, tomllib in (under [job], as the store writes it)."""
    loaded: dict[str, Any] = tomllib.loads(tomli_w.dumps({"job": config}))["job"]
    return loaded


def tree(*roots: Path) -> list[tuple[str, int]]:
    return sorted(
        (os.path.join(top, name), os.lstat(os.path.join(top, name)).st_mtime_ns)
        for root in roots
        for top, dirs, files in os.walk(root)
        for name in (*dirs, *files)
    )


# --- loading -----------------------------------------------------------------------------


def test_quickstart_loads_resolved() -> None:
    notify = str(JOBS / "notify.py")
    assert load_job(JOBS / "quickstart.toml") == Job(
        name="quickstart",
        source=str(JOBS / "quickstart.toml"),
        system="You are a careful assistant.",
        user="Write hello.txt, then notify the team.",
        model=ModelSpec(
            provider="scripted",
            id="scripted",
            deterministic=True,
            chunk_delay_ms=0,
            script=(
                ScriptedTurn(
                    "I'll write the file first.",
                    (ScriptedCall("write_file", {"path": "hello.txt", "content": "hi"}),),
                ),
                ScriptedTurn(
                    "Now I'll tell the team.", (ScriptedCall("notify", {"message": "hello.txt is written"}),)
                ),
                ScriptedTurn("Done."),
            ),
        ),
        tools=(
            ToolSpec("write_file", "write", "idempotent", builtin="write_file"),
            ToolSpec(
                "notify",
                "execute",
                "non_idempotent",
                command=("python3", notify),
                probe=("python3", notify, "--probe"),
                description="Tell the team that something happened.",
                parameters={
                    "type": "object",
                    "properties": {"message": {"type": "string"}},
                    "required": ["message"],
                },
                timeout_seconds=10.0,
                env=("NOTIFY_TOKEN",),
            ),
        ),
        checkpoint=CheckpointPolicy(every_messages=5, every_tokens=4096),
        limits=Limits(max_turns=20),
        secret_env=("NOTIFY_TOKEN",),
    )


@pytest.mark.parametrize("how", ["relative", "absolute", "path object"])
def test_paths_resolve_against_the_job_file_not_the_cwd(
    how: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "notify.py").write_text("# a decoy: must never be picked\n")
    (elsewhere / "quickstart.script.toml").write_text('[[turns]]\ntext = "decoy"\n')
    monkeypatch.chdir(elsewhere)
    target = JOBS / "quickstart.toml"
    paths: dict[str, str | Path] = {
        "relative": os.path.relpath(target),
        "absolute": str(target),
        "path object": Path(os.path.relpath(target)),
    }
    job = load_job(paths[how])
    assert job.source == str(target)
    notify = job.tool("notify")
    assert notify is not None
    assert notify.command == ("python3", str(JOBS / "notify.py"))
    assert notify.probe == ("python3", str(JOBS / "notify.py"), "--probe")
    assert job.model.script[-1].text == "Done."


def test_dot_dot_paths_and_plain_arguments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    job = load_job(JOBS / "nested" / "up.toml")
    notify = job.tool("notify")
    assert notify is not None
    # ../notify.py climbs out of nested/; "--to=./team" does not begin with ./ and is passed as it is;
    # a bare "./" is the job file's directory, normalised.
    assert notify.command == ("python3", str(JOBS / "notify.py"), "--to=./team", str(JOBS / "nested"))
    assert job.model.script == load_job(JOBS / "quickstart.toml").model.script


def test_argv_elements_kept_unless_they_begin_with_dot_slash(tmp_path: Path) -> None:
    job = copy.deepcopy(BASE_JOB)
    job["tools"][1]["command"] = [
        "./bin/../tool",
        "../up/./x",
        ".hidden",
        "..",
        ".",
        "/abs/./path",
        "~/home",
        "x/./y",
        "",
        ".//double",
    ]
    tool = load_job(write_job(tmp_path / "dir", job)).tool("notify")
    assert tool is not None
    assert tool.command == (
        str(tmp_path / "dir" / "tool"),
        str(tmp_path / "up" / "x"),
        ".hidden",
        "..",
        ".",
        "/abs/./path",
        "~/home",
        "x/./y",
        "",
        str(tmp_path / "dir" / "double"),
    )


def test_defaults(tmp_path: Path) -> None:
    minimal = {
        "prompt": {"user": "hi"},
        "model": {"script": "q.script.toml"},
        "tools": [
            {
                "name": "write_file",
                "builtin": "write_file",
                "side_effect": "write",
                "idempotency": "idempotent",
            },
            {"name": "notify", "command": ["notify"], "side_effect": "execute", "idempotency": "idempotent"},
        ],
    }
    job = load_job(write_job(tmp_path / "jobs", minimal))
    assert job.name == "q"  # the file's stem
    assert job.system is None
    assert job.model.provider == "scripted" and job.model.id == "scripted" and job.model.deterministic
    assert job.model.chunk_delay_ms == 0 and job.model.options == {}
    assert job.checkpoint == CheckpointPolicy(5, 4096, True, True)
    assert job.limits == Limits(20)
    assert job.secret_env == ()
    notify = job.tool("notify")
    assert notify == ToolSpec("notify", "execute", "idempotent", command=("notify",))
    assert notify.timeout_seconds == 60.0 and notify.max_output_bytes == 65536 and notify.env == ()
    assert job.tool("nothing") is None


def test_every_setting(tmp_path: Path) -> None:
    job = copy.deepcopy(BASE_JOB)
    job["checkpoint"] = {
        "every_messages": 1,
        "every_tokens": 7,
        "after_tool_call": False,
        "on_state_change": False,
    }
    job["limits"] = {"max_turns": 3}
    job["secret_env"] = ["API_TOKEN", "_x1"]
    job["model"]["chunk_delay_ms"] = 15
    job["model"]["deterministic"] = True
    job["tools"][1].update({"timeout_seconds": 2.5, "max_output_bytes": 1, "env": ["HOME", "TOKEN"]})
    job["tools"][0]["timeout_seconds"] = 3  # an integer where a float is expected is welcome
    loaded = load_job(write_job(tmp_path, job))
    assert loaded.checkpoint == CheckpointPolicy(1, 7, False, False)
    assert loaded.limits == Limits(3)
    assert loaded.secret_env == ("API_TOKEN", "_x1")
    assert loaded.model.chunk_delay_ms == 15
    assert loaded.tools[0].timeout_seconds == 3.0 and isinstance(loaded.tools[0].timeout_seconds, float)
    assert loaded.tools[1].timeout_seconds == 2.5
    assert loaded.tools[1].max_output_bytes == 1
    assert loaded.tools[1].env == ("HOME", "TOKEN")


def test_openai_model(tmp_path: Path) -> None:
    job = copy.deepcopy(BASE_JOB)
    job["model"] = {
        **OPENAI_MODEL,
        "api_key_env": "OPENAI_API_KEY",
        "temperature": 0,
        "seed": -3,
        "max_tokens": 512,
        "headers": {"X-Trace": "on"},
        "timeout_seconds": 30,
    }
    model = load_job(write_job(tmp_path, job)).model
    assert model == ModelSpec(
        provider="openai",
        id="llama3.2",
        deterministic=False,
        options={
            "base_url": "http://127.0.0.1:11434/v1",
            "api_key_env": "OPENAI_API_KEY",
            "temperature": 0.0,
            "seed": -3,
            "max_tokens": 512,
            "headers": {"X-Trace": "on"},
            "timeout_seconds": 30.0,
        },
    )
    assert isinstance(model.options["temperature"], float)
    job["model"] = {**OPENAI_MODEL, "deterministic": True}
    model = load_job(write_job(tmp_path, job)).model
    assert model.deterministic and model.options == {"base_url": OPENAI_MODEL["base_url"]}


def test_command_model(tmp_path: Path) -> None:
    job = copy.deepcopy(BASE_JOB)
    job["model"] = dict(COMMAND_MODEL)
    model = load_job(write_job(tmp_path, job)).model
    assert model == ModelSpec(
        "command", "python3", False, options={"command": ["python3", str(tmp_path / "fake_model.py")]}
    )
    job["model"] = {"provider": "command", "command": ["./bin/model"], "model": "mine", "deterministic": True}
    model = load_job(write_job(tmp_path, job)).model
    assert model == ModelSpec("command", "mine", True, options={"command": [str(tmp_path / "bin" / "model")]})
    job["model"] = {"provider": "command", "command": ["./bin/model"]}
    assert load_job(write_job(tmp_path, job)).model.id == "model"


def test_script_path_is_relative_to_the_job_file_with_or_without_dot(tmp_path: Path) -> None:
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "s.toml").write_text(tomli_w.dumps(BASE_SCRIPT))
    for script in ("../scripts/s.toml", str(tmp_path / "scripts" / "s.toml")):
        job = copy.deepcopy(BASE_JOB)
        job["model"]["script"] = script
        assert load_job(write_job(tmp_path / "jobs", job)).model.script[1] == ScriptedTurn("Done.")


def test_script_turn_defaults(tmp_path: Path) -> None:
    script = {"turns": [{"tool_calls": [{"tool": "notify"}]}, {}]}
    job = load_job(write_job(tmp_path, script=script))
    assert job.model.script == (ScriptedTurn("", (ScriptedCall("notify", {}),)), ScriptedTurn(""))


def test_a_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    path = write_job(tmp_path)
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert load_job(path).name == "q"


def test_loading_creates_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    good = write_job(tmp_path / "good")
    bad = write_job(tmp_path / "bad", script={"turns": []})
    monkeypatch.chdir(tmp_path)
    before = tree(tmp_path, JOBS)
    load_job(good)
    load_job(JOBS / "quickstart.toml")
    job_error(bad)
    job_error(tmp_path / "missing.toml")
    assert tree(tmp_path, JOBS) == before


# --- to_config and from_config ----------------------------------------------------------------


def no_none(value: object) -> bool:
    if isinstance(value, dict):
        return all(no_none(v) for v in value.values())
    if isinstance(value, list):
        return all(no_none(v) for v in value)
    return value is not None


@pytest.mark.parametrize("model", [None, OPENAI_MODEL, COMMAND_MODEL])
def test_config_round_trip(model: dict[str, Any] | None, tmp_path: Path) -> None:
    job_dict = copy.deepcopy(BASE_JOB)
    if model is not None:
        job_dict["model"] = {**model, "deterministic": True}
    job = load_job(write_job(tmp_path, job_dict))
    config = job.to_config()
    assert no_none(config)
    assert Job.from_config(through_toml(config)) == job
    assert Job.from_config(config) == job


def test_config_holds_everything_resolved(tmp_path: Path) -> None:
    path = write_job(tmp_path / "jobs")
    job = load_job(path)
    stored = tomli_w.dumps({"job": job.to_config()})
    for file in (tmp_path / "jobs").iterdir():
        file.unlink()  # a session never needs the job file, its script or its directory again
    (tmp_path / "jobs").rmdir()
    config = tomllib.loads(stored)["job"]
    assert Job.from_config(config) == job
    assert config["name"] == "q" and config["source"] == str(path)
    assert config["model"]["turns"][0]["tool_calls"][1] == {"tool": "notify", "args": {"message": "written"}}
    assert config["tools"][1]["command"] == ["python3", str(tmp_path / "jobs" / "notify.py")]
    assert "./" not in stored


def test_config_is_a_copy(tmp_path: Path) -> None:
    job = load_job(JOBS / "quickstart.toml")
    config = job.to_config()
    config["model"]["turns"][0]["tool_calls"][0]["args"]["path"] = "changed"
    config["tools"][1]["parameters"]["type"] = "changed"
    assert job == load_job(JOBS / "quickstart.toml")


def test_session_toml_layout(tmp_path: Path) -> None:
    """inspect reads job.name from session.toml; the store writes the config under [job]."""
    stored = tomllib.loads(tomli_w.dumps({"job": load_job(JOBS / "quickstart.toml").to_config()}))
    assert stored["job"]["name"] == "quickstart"
    assert stored["job"]["prompt"] == {
        "system": "You are a careful assistant.",
        "user": "Write hello.txt, then notify the team.",
    }
    assert stored["job"]["model"]["provider"] == "scripted" and stored["job"]["model"]["id"] == "scripted"


def stored_config() -> dict[str, Any]:
    return load_job(JOBS / "quickstart.toml").to_config()


def edited(edit: Callable[[dict[str, Any]], object]) -> dict[str, Any]:
    config = stored_config()
    edit(config)
    return config


@pytest.mark.parametrize(
    ("config", "key"),
    [
        (edited(lambda c: c.pop("source")), "source"),
        (edited(lambda c: c.update(source="jobs/q.toml")), "source"),
        (edited(lambda c: c.update(extra=1)), "extra"),
        (edited(lambda c: c["model"].pop("id")), "model.id"),
        (edited(lambda c: c["model"].pop("turns")), "model.turns"),
        (edited(lambda c: c["model"].update(script="s.toml")), "model.script"),
        (edited(lambda c: c["model"].update(deterministic=False)), "model.deterministic"),
        (edited(lambda c: c["model"]["options"].update(base_url="http://x")), "model.options.base_url"),
        (edited(lambda c: c["model"]["turns"][0]["tool_calls"][0].update(tool="nope")), None),
        (edited(lambda c: c["tools"][0].update(env=[])), "tools[0].env"),
        (edited(lambda c: c["tools"][1].update(side_effect="maybe")), "tools[1].side_effect"),
        (edited(lambda c: c["limits"].update(max_turns=0)), "limits.max_turns"),
        (
            edited(lambda c: c["model"].update(provider="openai", options={"base_url": "http://x"})),
            "model.turns",
        ),
        (
            edited(lambda c: c["model"].update(provider="command", options={}, turns=[])),
            "model.turns",
        ),
        (
            edited(lambda c: (c["model"].pop("turns"), c["model"].update(provider="command", options={}))),
            "model.options.command",
        ),
        (
            edited(
                lambda c: (
                    c["model"].pop("turns"),
                    c["model"].update(provider="command", options={"command": ["m"]}, chunk_delay_ms=5),
                )
            ),
            "model.chunk_delay_ms",
        ),
    ],
)
def test_from_config_refuses_a_damaged_config(config: dict[str, Any], key: str | None) -> None:
    with pytest.raises(JobConfigError) as info:
        Job.from_config(config, origin="/root/sessions/s1/session.toml [job]")
    error = info.value
    assert error.exit_code == ExitCode.INTEGRITY
    assert error.message.startswith("/root/sessions/s1/session.toml [job]: ")
    if key is not None:
        assert error.details["key"] == key
        assert key in error.message
    else:
        assert error.details["key"] == "model.turns[0].tool_calls[0].tool"


def test_from_config_refuses_a_non_table() -> None:
    with pytest.raises(JobConfigError, match="stored job: must be a table"):
        Job.from_config(["not", "a", "table"])  # type: ignore[arg-type]


# Strategies for valid jobs, built directly: the property is that to_config and from_config
# agree on every job the dataclasses can hold and the loader could produce.
texts = st.text(st.characters(codec="utf-8"), max_size=12)
words = texts.filter(lambda s: bool(s.strip()))
argv_words = st.text(st.characters(codec="utf-8", exclude_characters="\0"), max_size=12)
argvs = st.lists(argv_words, min_size=1, max_size=3).filter(lambda a: bool(a[0])).map(tuple)
env_names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True)
json_values = st.recursive(
    st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=6,
)
json_tables = st.dictionaries(texts, json_values, max_size=3)
header_values = st.text(st.characters(codec="utf-8", exclude_characters="\r\n\0"), max_size=12)
# Within the documented limits (docs/JOBS.md): beyond them a job is refused, as tested below.
tool_timeouts = st.floats(min_value=0.001, max_value=jobs.TOOL_TIMEOUT_SECONDS)
model_timeouts = st.floats(min_value=0.001, max_value=openai_options.MODEL_TIMEOUT_SECONDS)


@st.composite
def tool_specs(draw: st.DrawFn, name: str) -> ToolSpec:
    builtin = draw(st.sampled_from([*jobs.BUILTINS, None]))
    side_effects = ["write", "execute"] if builtin == "write_file" else list(jobs.SIDE_EFFECTS)
    is_command = builtin is None
    return ToolSpec(
        name=name,
        side_effect=draw(st.sampled_from(side_effects)),
        idempotency=draw(st.sampled_from(jobs.IDEMPOTENCIES)),
        builtin=builtin,
        command=draw(argvs) if is_command else None,
        probe=draw(st.none() | argvs) if is_command else None,
        description=draw(st.none() | words),
        parameters=draw(st.none() | json_tables),
        timeout_seconds=draw(tool_timeouts),
        max_output_bytes=draw(st.integers(*jobs.MAX_OUTPUT_BYTES)),
        env=tuple(draw(st.lists(env_names, unique=True, max_size=3))) if is_command else (),
    )


@st.composite
def model_specs(draw: st.DrawFn, tool_names: list[str]) -> ModelSpec:
    provider = draw(st.sampled_from(jobs.PROVIDERS if tool_names else ("openai", "command")))
    if provider == "scripted":
        calls = st.builds(ScriptedCall, st.sampled_from(tool_names), json_tables)
        middle = draw(
            st.lists(
                st.builds(ScriptedTurn, texts, st.lists(calls, min_size=1, max_size=2).map(tuple)), max_size=3
            )
        )
        script = (*middle, ScriptedTurn(draw(texts)))
        delay = draw(st.integers(*jobs.CHUNK_DELAY_MS))
        return ModelSpec("scripted", draw(words), True, delay, script=script)
    if provider == "openai":
        optional = draw(
            st.fixed_dictionaries(
                {},
                optional={
                    "api_key_env": env_names,
                    "temperature": st.floats(min_value=0, max_value=2),
                    "seed": st.integers(-(2**63), 2**63 - 1),
                    "max_tokens": st.integers(1, 10**6),
                    "max_completion_tokens": st.integers(1, 10**6),
                    "tool_choice": st.sampled_from(["auto", "none", "required", *tool_names]),
                    "parallel_tool_calls": st.booleans(),
                    "headers": st.dictionaries(
                        st.from_regex(r"X-[A-Za-z0-9-]{1,8}", fullmatch=True), header_values
                    ),
                    "timeout_seconds": model_timeouts,
                },
            )
        )
        options = {"base_url": draw(st.sampled_from(["http://127.0.0.1:11434/v1", "https://h.example/v1"]))}
        return ModelSpec("openai", draw(words), draw(st.booleans()), options={**options, **optional})
    return ModelSpec("command", draw(words), draw(st.booleans()), options={"command": list(draw(argvs))})


@st.composite
def job_specs(draw: st.DrawFn) -> Job:
    names = draw(
        st.lists(st.from_regex(r"[A-Za-z_][A-Za-z0-9_-]{0,12}", fullmatch=True), unique=True, max_size=3)
    )
    tools = tuple(draw(tool_specs(name)) for name in names)
    return Job(
        name=draw(words),
        source="/jobs/" + draw(st.from_regex(r"[a-z]{1,8}", fullmatch=True)) + ".toml",
        user=draw(words),
        system=draw(st.none() | texts),
        model=draw(model_specs(names)),
        tools=tools,
        checkpoint=draw(
            st.builds(
                CheckpointPolicy, st.integers(1, 10**6), st.integers(1, 10**9), st.booleans(), st.booleans()
            )
        ),
        limits=Limits(draw(st.integers(1, 10**4))),
        secret_env=tuple(draw(st.lists(env_names, unique=True, max_size=3))),
    )


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(job_specs())
def test_config_round_trip_property(job: Job) -> None:
    config = job.to_config()
    assert no_none(config)
    assert Job.from_config(through_toml(config)) == job


# --- every mistake is refused, naming the file and the key -----------------------------------

DELETE = object()


def change(*path: str | int, value: object = DELETE) -> Callable[[dict[str, Any]], None]:
    """An edit of the job (or script) dict: set `value` at `path`, or delete what is there."""

    def apply(document: dict[str, Any]) -> None:
        target: Any = document
        for step in path[:-1]:
            target = target[step]
        if value is DELETE:
            del target[path[-1]]
        else:
            target[path[-1]] = value

    return apply


def model(**keys: object) -> Callable[[dict[str, Any]], None]:
    return change("model", value=keys)


# (job edit, script edit, file that is blamed, key, words the message must hold)
Case = tuple[
    Callable[[dict[str, Any]], None] | None, Callable[[dict[str, Any]], None] | None, str, str | None, str
]
JOB_CASES: dict[str, Case] = {
    # unknown keys, at every level
    "top typo": (change("nmae", value="x"), None, "job", "nmae", "did you mean name?"),
    "top unknown": (change("version", value=1), None, "job", "version", "its keys are name, prompt"),
    "prompt typo": (change("prompt", "usr", value="x"), None, "job", "prompt.usr", "did you mean user?"),
    "model typo": (change("model", "scrpit", value="x"), None, "job", "model.scrpit", "did you mean script?"),
    "model key of another provider": (
        change("model", "base_url", value="http://x"),
        None,
        "job",
        "model.base_url",
        "is not a key of [model] with provider = 'scripted'",
    ),
    "openai chunk delay": (
        model(**OPENAI_MODEL, chunk_delay_ms=5),
        None,
        "job",
        "model.chunk_delay_ms",
        "provider = 'openai'",
    ),
    "checkpoint typo": (
        change("checkpoint", value={"every_message": 3}),
        None,
        "job",
        "checkpoint.every_message",
        "did you mean every_messages?",
    ),
    "limits typo": (
        change("limits", value={"max_turn": 3}),
        None,
        "job",
        "limits.max_turn",
        "did you mean max_turns?",
    ),
    "tool typo": (
        change("tools", 1, "sied_effect", value="read"),
        None,
        "job",
        "tools[1].sied_effect",
        "did you mean side_effect?",
    ),
    "odd key quoted": (
        change("tools", 0, "a b", value=1),
        None,
        "job",
        'tools[0]."a b"',
        "is not a key of a tool",
    ),
    "script top typo": (None, change("turn", value=[]), "script", "turn", "did you mean turns?"),
    "turn typo": (None, change("turns", 1, "txt", value="x"), "script", "turns[1].txt", "did you mean text?"),
    "call typo": (
        None,
        change("turns", 0, "tool_calls", 1, "arg", value={}),
        "script",
        "turns[0].tool_calls[1].arg",
        "did you mean args?",
    ),
    # top level and prompt
    "name not a string": (change("name", value=3), None, "job", "name", "must be a string, not an integer"),
    "name a date": (
        change("name", value=datetime.date(2026, 1, 2)),
        None,
        "job",
        "name",
        "must be a string, not a date or time",
    ),
    "name empty": (change("name", value=" "), None, "job", "name", "is empty"),
    "prompt not a table": (
        change("prompt", value="hi"),
        None,
        "job",
        "prompt",
        "must be a table, not a string",
    ),
    "prompt missing": (change("prompt"), None, "job", "prompt.user", "is missing"),
    "user missing": (change("prompt", "user"), None, "job", "prompt.user", "is missing"),
    "user empty": (change("prompt", "user", value=""), None, "job", "prompt.user", "is empty"),
    "user blank": (change("prompt", "user", value=" \n\t"), None, "job", "prompt.user", "is empty"),
    "user not a string": (change("prompt", "user", value=["a"]), None, "job", "prompt.user", "not an array"),
    "system not a string": (
        change("prompt", "system", value=1),
        None,
        "job",
        "prompt.system",
        "must be a string",
    ),
    # checkpoint and limits: types and ranges
    "max_turns bool": (
        change("limits", value={"max_turns": True}),
        None,
        "job",
        "limits.max_turns",
        "not a boolean",
    ),
    "max_turns float": (
        change("limits", value={"max_turns": 2.0}),
        None,
        "job",
        "limits.max_turns",
        "not a float",
    ),
    "max_turns string": (
        change("limits", value={"max_turns": "3"}),
        None,
        "job",
        "limits.max_turns",
        "integer",
    ),
    "max_turns zero": (
        change("limits", value={"max_turns": 0}),
        None,
        "job",
        "limits.max_turns",
        "at least 1, not 0",
    ),
    "limits not a table": (change("limits", value=3), None, "job", "limits", "must be a table"),
    "every_messages zero": (
        change("checkpoint", value={"every_messages": 0}),
        None,
        "job",
        "checkpoint.every_messages",
        "at least 1",
    ),
    "every_tokens negative": (
        change("checkpoint", value={"every_tokens": -1}),
        None,
        "job",
        "checkpoint.every_tokens",
        "at least 1, not -1",
    ),
    "every_tokens bool": (
        change("checkpoint", value={"every_tokens": False}),
        None,
        "job",
        "checkpoint.every_tokens",
        "not a boolean",
    ),
    "after_tool_call string": (
        change("checkpoint", value={"after_tool_call": "yes"}),
        None,
        "job",
        "checkpoint.after_tool_call",
        "must be true or false, not a string",
    ),
    "on_state_change int": (
        change("checkpoint", value={"on_state_change": 1}),
        None,
        "job",
        "checkpoint.on_state_change",
        "true or false",
    ),
    # model
    "provider unknown": (
        change("model", "provider", value="anthropic"),
        None,
        "job",
        "model.provider",
        "'anthropic', which is not one of scripted, openai, command",
    ),
    "provider not a string": (change("model", "provider", value=1), None, "job", "model.provider", "string"),
    "model not a table": (change("model", value="scripted"), None, "job", "model", "must be a table"),
    "scripted without script": (change("model", "script"), None, "job", "model.script", "is missing"),
    "no model at all": (change("model"), None, "job", "model.script", "is missing"),
    "script empty name": (change("model", "script", value=""), None, "job", "model.script", "is empty"),
    "scripted not deterministic": (
        change("model", "deterministic", value=False),
        None,
        "job",
        "model.deterministic",
        "cannot be false",
    ),
    "chunk delay negative": (
        change("model", "chunk_delay_ms", value=-1),
        None,
        "job",
        "model.chunk_delay_ms",
        "at least 0, not -1",
    ),
    "chunk delay bool": (
        change("model", "chunk_delay_ms", value=True),
        None,
        "job",
        "model.chunk_delay_ms",
        "boolean",
    ),
    "openai without base_url": (
        model(provider="openai", model="m"),
        None,
        "job",
        "model.base_url",
        "is missing; the openai provider needs the server's URL",
    ),
    "openai without model": (
        model(provider="openai", base_url="http://x/v1"),
        None,
        "job",
        "model.model",
        "is missing",
    ),
    "openai base_url not http": (
        model(**{**OPENAI_MODEL, "base_url": "ftp://x/v1"}),
        None,
        "job",
        "model.base_url",
        "not an http:// or https:// URL",
    ),
    "openai base_url bad": (
        model(**{**OPENAI_MODEL, "base_url": "http://[::1/v1"}),
        None,
        "job",
        "model.base_url",
        "is not a URL",
    ),
    "openai base_url credentials": (
        model(**{**OPENAI_MODEL, "base_url": "https://me:sk-123@h.example/v1"}),
        None,
        "job",
        "model.base_url",
        "carries credentials",
    ),
    "openai api_key_env": (
        model(**OPENAI_MODEL, api_key_env="sk-abc"),
        None,
        "job",
        "model.api_key_env",
        "not an environment variable name",
    ),
    "openai temperature negative": (
        model(**OPENAI_MODEL, temperature=-0.5),
        None,
        "job",
        "model.temperature",
        "at least 0",
    ),
    "openai temperature string": (
        model(**OPENAI_MODEL, temperature="0"),
        None,
        "job",
        "model.temperature",
        "must be a number, not a string",
    ),
    "openai seed bool": (model(**OPENAI_MODEL, seed=True), None, "job", "model.seed", "not a boolean"),
    "openai max_tokens zero": (
        model(**OPENAI_MODEL, max_tokens=0),
        None,
        "job",
        "model.max_tokens",
        "at least 1",
    ),
    "openai timeout zero": (
        model(**OPENAI_MODEL, timeout_seconds=0),
        None,
        "job",
        "model.timeout_seconds",
        "greater than 0",
    ),
    "openai headers not a table": (
        model(**OPENAI_MODEL, headers=["X-A: b"]),
        None,
        "job",
        "model.headers",
        "must be a table of strings",
    ),
    "openai header not a string": (
        model(**OPENAI_MODEL, headers={"X-A": 1}),
        None,
        "job",
        "model.headers.X-A",
        "must be a string",
    ),
    "openai header name": (
        model(**OPENAI_MODEL, headers={"X A": "b"}),
        None,
        "job",
        'model.headers."X A"',
        "not a valid HTTP header name",
    ),
    "openai header line break": (
        model(**OPENAI_MODEL, headers={"X-A": "b\r\nX-Evil: 1"}),
        None,
        "job",
        "model.headers.X-A",
        "line break",
    ),
    "openai authorization header": (
        model(**OPENAI_MODEL, headers={"authorization": "Bearer sk-123"}),
        None,
        "job",
        "model.headers.authorization",
        "api_key_env",
    ),
    "command without command": (
        model(provider="command"),
        None,
        "job",
        "model.command",
        "is missing; the command provider needs the program to run",
    ),
    "command not a list": (
        model(provider="command", command="python3 model.py"),
        None,
        "job",
        "model.command",
        "non-empty array of strings",
    ),
    "command empty list": (
        model(provider="command", command=[]),
        None,
        "job",
        "model.command",
        "an empty array",
    ),
    "command model empty": (
        model(provider="command", command=["m"], model=""),
        None,
        "job",
        "model.model",
        "is empty",
    ),
    # the script's contents
    "script without turns": (None, change("turns"), "script", "turns", "is missing"),
    "script empty turns": (None, change("turns", value=[]), "script", "turns", "is empty"),
    "script turns not tables": (None, change("turns", value=["hi"]), "script", "turns[0]", "must be a table"),
    "turn text not a string": (
        None,
        change("turns", 1, "text", value=1),
        "script",
        "turns[1].text",
        "string",
    ),
    "call tool unknown": (
        None,
        change("turns", 0, "tool_calls", 1, "tool", value="notfy"),
        "script",
        "turns[0].tool_calls[1].tool",
        "names 'notfy', which {job} does not declare; its tools are write_file, notify",
    ),
    "call tool missing": (
        None,
        change("turns", 0, "tool_calls", 0, "tool"),
        "script",
        "turns[0].tool_calls[0].tool",
        "is missing",
    ),
    "call tool with no tools": (
        change("tools"),
        None,
        "script",
        "turns[0].tool_calls[0].tool",
        "it declares no tools",
    ),
    "call args not a table": (
        None,
        change("turns", 0, "tool_calls", 0, "args", value="hello.txt"),
        "script",
        "turns[0].tool_calls[0].args",
        "must be a table",
    ),
    "call args with a date": (
        None,
        change("turns", 0, "tool_calls", 0, "args", value={"when": [datetime.date(2026, 1, 2)]}),
        "script",
        "turns[0].tool_calls[0].args.when[0]",
        "JSON cannot carry",
    ),
    "call args with nan": (
        None,
        change("turns", 0, "tool_calls", 0, "args", value={"x": {"y": float("nan")}}),
        "script",
        "turns[0].tool_calls[0].args.x.y",
        "JSON cannot carry",
    ),
    "tool_calls not a list": (
        None,
        change("turns", 0, "tool_calls", value={"tool": "notify"}),
        "script",
        "turns[0].tool_calls",
        "must be an array of tables",
    ),
    "last turn calls a tool": (
        None,
        change("turns", 1, "tool_calls", value=[{"tool": "notify"}]),
        "script",
        "turns[1].tool_calls",
        "could never complete",
    ),
    "middle turn without calls": (
        None,
        change("turns", value=[{"text": "a"}, {"text": "b"}]),
        "script",
        "turns[0].tool_calls",
        "would never run",
    ),
    # tools
    "tools not an array": (
        change("tools", value="write_file"),
        None,
        "job",
        "tools",
        "must be an array of tables",
    ),
    "tools entry not a table": (change("tools", value=[1]), None, "job", "tools[0]", "must be a table"),
    "tool name missing": (change("tools", 1, "name"), None, "job", "tools[1].name", "is missing"),
    "tool name with a space": (
        change("tools", 1, "name", value="no tify"),
        None,
        "job",
        "tools[1].name",
        "not a valid tool name",
    ),
    "tool name starts with a digit": (
        change("tools", 1, "name", value="1notify"),
        None,
        "job",
        "tools[1].name",
        "not a valid tool name",
    ),
    "tool name too long": (change("tools", 1, "name", value="n" * 65), None, "job", "tools[1].name", "1-64"),
    "tool name with a newline": (
        change("tools", 1, "name", value="notify\n"),
        None,
        "job",
        "tools[1].name",
        "not a valid tool name",
    ),
    "tool name duplicated": (
        change("tools", 1, "name", value="write_file"),
        None,
        "job",
        "tools[1].name",
        "'write_file' is already the name of tools[0]",
    ),
    "neither builtin nor command": (
        change("tools", 1, "command"),
        None,
        "job",
        "tools[1]",
        "has neither builtin nor command",
    ),
    "both builtin and command": (
        change("tools", 0, "command", value=["x"]),
        None,
        "job",
        "tools[0].command",
        "cannot be given with builtin",
    ),
    "builtin unknown": (
        change("tools", 0, "builtin", value="delete_file"),
        None,
        "job",
        "tools[0].builtin",
        "not one of write_file, read_file",
    ),
    "side_effect missing": (
        change("tools", 1, "side_effect"),
        None,
        "job",
        "tools[1].side_effect",
        "is missing; expected one of read, write, execute",
    ),
    "side_effect unknown": (
        change("tools", 1, "side_effect", value="network"),
        None,
        "job",
        "tools[1].side_effect",
        "'network', which is not one of read, write, execute",
    ),
    "idempotency missing": (
        change("tools", 1, "idempotency"),
        None,
        "job",
        "tools[1].idempotency",
        "is missing; expected one of idempotent, idempotent_with_key, non_idempotent",
    ),
    "idempotency unknown": (
        change("tools", 1, "idempotency", value="once"),
        None,
        "job",
        "tools[1].idempotency",
        "not one of idempotent, idempotent_with_key, non_idempotent",
    ),
    "write_file declared read": (
        change("tools", 0, "side_effect", value="read"),
        None,
        "job",
        "tools[0].side_effect",
        "builtin write_file writes files",
    ),
    "probe on a builtin": (
        change("tools", 0, "probe", value=["true"]),
        None,
        "job",
        "tools[0].probe",
        "only for command tools",
    ),
    "env on a builtin": (
        change("tools", 0, "env", value=["HOME"]),
        None,
        "job",
        "tools[0].env",
        "only for command",
    ),
    "command a string": (
        change("tools", 1, "command", value="python3 notify.py"),
        None,
        "job",
        "tools[1].command",
        "non-empty array of strings",
    ),
    "command empty": (
        change("tools", 1, "command", value=[]),
        None,
        "job",
        "tools[1].command",
        "an empty array",
    ),
    "command element not a string": (
        change("tools", 1, "command", value=["python3", 3]),
        None,
        "job",
        "tools[1].command[1]",
        "must be a string, not an integer",
    ),
    "command program empty": (
        change("tools", 1, "command", value=[""]),
        None,
        "job",
        "tools[1].command[0]",
        "empty",
    ),
    "command with NUL": (
        change("tools", 1, "command", value=["python3", "a\0b"]),
        None,
        "job",
        "tools[1].command[1]",
        "NUL",
    ),
    "probe empty": (change("tools", 1, "probe", value=[]), None, "job", "tools[1].probe", "non-empty array"),
    "probe element not a string": (
        change("tools", 1, "probe", value=[True]),
        None,
        "job",
        "tools[1].probe[0]",
        "not a boolean",
    ),
    "tool timeout zero": (
        change("tools", 1, "timeout_seconds", value=0),
        None,
        "job",
        "tools[1].timeout_seconds",
        "must be greater than 0, not 0",
    ),
    "tool timeout negative": (
        change("tools", 1, "timeout_seconds", value=-1.5),
        None,
        "job",
        "tools[1].timeout_seconds",
        "greater than 0",
    ),
    "tool timeout bool": (
        change("tools", 1, "timeout_seconds", value=True),
        None,
        "job",
        "tools[1].timeout_seconds",
        "not a boolean",
    ),
    "tool timeout string": (
        change("tools", 1, "timeout_seconds", value="10"),
        None,
        "job",
        "tools[1].timeout_seconds",
        "must be a number",
    ),
    "tool timeout inf": (
        change("tools", 1, "timeout_seconds", value=float("inf")),
        None,
        "job",
        "tools[1].timeout_seconds",
        "finite",
    ),
    "tool timeout nan": (
        change("tools", 1, "timeout_seconds", value=float("nan")),
        None,
        "job",
        "tools[1].timeout_seconds",
        "finite",
    ),
    "tool timeout huge int": (
        change("tools", 1, "timeout_seconds", value=10**400),
        None,
        "job",
        "tools[1].timeout_seconds",
        "too large",
    ),
    "max_output_bytes zero": (
        change("tools", 1, "max_output_bytes", value=0),
        None,
        "job",
        "tools[1].max_output_bytes",
        "at least 1",
    ),
    "max_output_bytes float": (
        change("tools", 1, "max_output_bytes", value=1024.0),
        None,
        "job",
        "tools[1].max_output_bytes",
        "not a float",
    ),
    "env not a list": (
        change("tools", 1, "env", value="HOME"),
        None,
        "job",
        "tools[1].env",
        "must be an array",
    ),
    "env name invalid": (
        change("tools", 1, "env", value=["HOME", "MY-TOKEN"]),
        None,
        "job",
        "tools[1].env[1]",
        "'MY-TOKEN' is not an environment variable name",
    ),
    "env name starts with a digit": (
        change("tools", 1, "env", value=["1X"]),
        None,
        "job",
        "tools[1].env[0]",
        "not an environment variable name",
    ),
    "env name repeated": (
        change("tools", 1, "env", value=["HOME", "HOME"]),
        None,
        "job",
        "tools[1].env[1]",
        "repeats 'HOME'",
    ),
    "description not a string": (
        change("tools", 1, "description", value=["x"]),
        None,
        "job",
        "tools[1].description",
        "must be a string",
    ),
    "parameters not a table": (
        change("tools", 1, "parameters", value="object"),
        None,
        "job",
        "tools[1].parameters",
        "must be a table",
    ),
    "parameters with a time": (
        change("tools", 1, "parameters", value={"default": datetime.time(1, 2)}),
        None,
        "job",
        "tools[1].parameters.default",
        "date or time",
    ),
    # secret_env
    "secret_env not a list": (
        change("secret_env", value="TOKEN"),
        None,
        "job",
        "secret_env",
        "must be an array",
    ),
    "secret_env invalid name": (
        change("secret_env", value=["OK", "not ok"]),
        None,
        "job",
        "secret_env[1]",
        "not an environment variable name",
    ),
    "secret_env not strings": (
        change("secret_env", value=[1]),
        None,
        "job",
        "secret_env[0]",
        "must be a string",
    ),
    "secret_env repeated": (change("secret_env", value=["A", "A"]), None, "job", "secret_env[1]", "repeats"),
}


@pytest.mark.parametrize("case", list(JOB_CASES), ids=list(JOB_CASES))
def test_mistakes_name_file_and_key(case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    edit_job, edit_script, blamed, key, words = JOB_CASES[case]
    job, script = copy.deepcopy(BASE_JOB), copy.deepcopy(BASE_SCRIPT)
    if edit_job is not None:
        edit_job(job)
    if edit_script is not None:
        edit_script(script)
    path = write_job(tmp_path / "jobs", job, script)
    monkeypatch.chdir(tmp_path)  # messages carry absolute paths whatever the current directory
    error = job_error("jobs/q.toml")
    file = str(path if blamed == "job" else path.with_name("q.script.toml"))
    assert error.details == {"file": file, "key": key}
    assert error.message.startswith(f"{file}: {key} ")
    assert words.format(job=path) in error.message


def test_unknown_key_message_lists_the_keys(tmp_path: Path) -> None:
    job = copy.deepcopy(BASE_JOB)
    job["tools"][1]["sied_effect"] = job["tools"][1].pop("side_effect")
    path = write_job(tmp_path, job)
    assert job_error(path).message == (
        f"{path}: tools[1].sied_effect is not a key of a tool (did you mean side_effect?); its keys are "
        "name, builtin, command, probe, side_effect, idempotency, description, parameters, timeout_seconds, "
        "max_output_bytes, env"
    )


def test_provider_message_lists_the_providers(tmp_path: Path) -> None:
    job = copy.deepcopy(BASE_JOB)
    job["model"]["provider"] = "anthropic"
    path = write_job(tmp_path, job)
    assert job_error(path).message == (
        f"{path}: model.provider is 'anthropic', which is not one of scripted, openai, command"
    )


# --- files that cannot be read --------------------------------------------------------------


def test_job_file_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    error = job_error("nope.toml")
    path = tmp_path / "nope.toml"
    assert error.message == f"{path}: the job file {path} does not exist"
    assert error.details == {"file": str(path), "key": None}


def test_job_file_under_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    assert "does not exist" in job_error(tmp_path / "file" / "q.toml").message


def test_job_file_is_a_directory(tmp_path: Path) -> None:
    (tmp_path / "q.toml").mkdir()
    error = job_error(tmp_path / "q.toml")
    assert (
        error.message
        == f"{tmp_path / 'q.toml'}: the job file {tmp_path / 'q.toml'} is a directory, not a file"
    )


def test_job_file_is_a_fifo(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "q.toml")
    assert "is not a regular file" in job_error(tmp_path / "q.toml").message  # and it did not block


@pytest.fixture
def unreadable(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Reading any file fails with EACCES (chmod is no test when the suite runs as root)."""

    def refuse(*args: object, **kwargs: object) -> object:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(documents, "open_regular", refuse)
    yield


def test_job_file_unreadable(tmp_path: Path, unreadable: None) -> None:
    path = write_job(tmp_path)
    error = job_error(path)
    assert error.message == f"{path}: the job file {path} cannot be read: Permission denied"
    assert error.details == {"file": str(path), "key": None}


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_job_file_unreadable_by_mode(tmp_path: Path) -> None:
    path = write_job(tmp_path)
    path.chmod(0)
    assert "cannot be read" in job_error(path).message


def test_job_file_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "q.toml"
    path.write_bytes(b'name = "q"\n[prompt]\nuser = "caf\xe9"\n')
    error = job_error(path)
    assert error.message == f"{path}: is not UTF-8 text: byte 31 (line 3) cannot be decoded"
    assert error.details == {"file": str(path), "key": None}


def test_job_file_invalid_toml(tmp_path: Path) -> None:
    path = tmp_path / "q.toml"
    path.write_text('name = "q"\n[prompt]\nuser = \n')
    error = job_error(path)
    assert error.message == f"{path}: invalid TOML at line 3, column 8: Invalid value"
    assert error.details == {"file": str(path), "key": None, "line": 3, "column": 8}


def test_job_file_invalid_toml_at_the_end(tmp_path: Path) -> None:
    path = tmp_path / "q.toml"
    path.write_text('name = "q"\nsecret_env = ["A",')
    error = job_error(path)
    assert error.message == f"{path}: invalid TOML at line 2, column 19: Invalid value"
    assert (error.details["line"], error.details["column"]) == (2, 19)


def test_script_missing_names_the_key_and_the_resolved_path(tmp_path: Path) -> None:
    job = copy.deepcopy(BASE_JOB)
    job["model"]["script"] = "../scripts/./gone.toml"
    path = write_job(tmp_path / "jobs", job)
    error = job_error(path)
    resolved = tmp_path / "scripts" / "gone.toml"
    assert error.message == f"{path}: model.script names {resolved}, which does not exist"
    assert error.details == {"file": str(path), "key": "model.script"}


def test_script_is_a_directory(tmp_path: Path) -> None:
    job = copy.deepcopy(BASE_JOB)
    job["model"]["script"] = "scripts"
    path = write_job(tmp_path, job)
    (tmp_path / "scripts").mkdir()
    error = job_error(path)
    assert error.details == {"file": str(path), "key": "model.script"}
    assert (
        error.message
        == f"{path}: model.script names {tmp_path / 'scripts'}, which is a directory, not a file"
    )


def test_script_unreadable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_job(tmp_path)
    real_open = documents.open_regular

    def refuse_script(file: Any, *args: Any, **kwargs: Any) -> Any:
        if str(file).endswith("script.toml"):
            raise PermissionError(13, "Permission denied")
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(documents, "open_regular", refuse_script)
    error = job_error(path)
    assert error.details == {"file": str(path), "key": "model.script"}
    assert "cannot be read: Permission denied" in error.message


def test_script_invalid_toml_blames_the_script(tmp_path: Path) -> None:
    path = write_job(tmp_path)
    script = tmp_path / "q.script.toml"
    script.write_text('[[turns]]\ntext = "unterminated\n')
    error = job_error(path)
    assert error.message.startswith(f"{script}: invalid TOML at line 2, column ")
    assert error.details["file"] == str(script) and error.details["key"] is None
    assert error.details["line"] == 2


def test_script_not_utf8_blames_the_script(tmp_path: Path) -> None:
    path = write_job(tmp_path)
    script = tmp_path / "q.script.toml"
    script.write_bytes(b'[[turns]]\ntext = "\xff"\n')
    error = job_error(path)
    assert error.message == f"{script}: is not UTF-8 text: byte 18 (line 2) cannot be decoded"


def test_toml_position_from_newer_pythons() -> None:
    """Python 3.14 gives the position as attributes; older ones only in the message."""
    error = tomllib.TOMLDecodeError("Invalid value (at line 9, column 9)")
    error.msg, error.lineno, error.colno = "Invalid value", 2, 3  # type: ignore[attr-defined]
    assert documents.toml_position(error, "") == ("Invalid value", 2, 3)
