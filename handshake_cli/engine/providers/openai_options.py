"""The openai provider's keys in a job: the model's name, the server's URL, the variable
that holds the API key, sampling settings, how the model may call tools (`tool_choice`,
`parallel_tool_calls`), extra headers and the read timeout.

No credential is ever stored: a URL with a user or password and an Authorization header are
refused, since the job is copied into session.toml; the key is named by `api_key_env` and
read from the environment at run time. Kept apart from the provider itself, which imports
httpx: reading a job must not.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from handshake_cli.engine.jobs.job import ModelSpec, ToolSpec
from handshake_cli.engine.jobs.parts import stored_options
from handshake_cli.engine.jobs.tables import ENV_NAME, INT64, Table, join_key, kind_of

OPTIONS = (
    "base_url",
    "api_key_env",
    "temperature",
    "seed",
    "max_tokens",
    "max_completion_tokens",
    "tool_choice",
    "parallel_tool_calls",
    "headers",
    "timeout_seconds",
)
JOB_KEYS = ("provider", "model", *OPTIONS, "deterministic")

# Limits (docs/JOBS.md).
MODEL_TIMEOUT_SECONDS = 3600.0
TEMPERATURE = (0.0, 2.0)
MAX_TOKENS = (1, 10_000_000)
# `tool_choice` is one of these, or the name of one of the job's tools (the model must call it).
TOOL_CHOICE_MODES = ("auto", "none", "required")

_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# Credentials belong in the environment (api_key_env), never in a file that is copied into session.toml.
_CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization"})


def from_job_file(model: Table, tools: tuple[ToolSpec, ...]) -> ModelSpec:
    deterministic = model.boolean("deterministic", False)
    model_id = model.string("model", hint="; the openai provider needs the model's name")
    return ModelSpec("openai", model_id, deterministic, options=_options(model, tools))


def from_stored(model: Table, tools: tuple[ToolSpec, ...]) -> ModelSpec:
    deterministic, options = stored_options(model, OPTIONS, "the openai provider's options")
    return ModelSpec("openai", model.string("id"), deterministic, options=_options(options, tools))


def _options(table: Table, tools: tuple[ToolSpec, ...]) -> dict[str, Any]:
    options: dict[str, Any] = {"base_url": _base_url(table)}
    api_key_env = table.optional_string("api_key_env")
    if api_key_env is not None:
        if not ENV_NAME.fullmatch(api_key_env):
            table.fail("api_key_env", f"{api_key_env!r} is not an environment variable name")
        options["api_key_env"] = api_key_env
    temperature = table.optional_number("temperature", positive=False, maximum=TEMPERATURE[1])
    if temperature is not None:
        options["temperature"] = temperature
    seed = table.optional_integer("seed", INT64)
    if seed is not None:
        options["seed"] = seed
    for key in ("max_tokens", "max_completion_tokens"):
        limit = table.optional_integer(key, MAX_TOKENS)
        if limit is not None:
            options[key] = limit
    tool_choice = _tool_choice(table, tools)
    if tool_choice is not None:
        options["tool_choice"] = tool_choice
    if table.data.get("parallel_tool_calls") is not None:
        options["parallel_tool_calls"] = table.boolean("parallel_tool_calls", True)
    headers = _headers(table)
    if headers is not None:
        options["headers"] = headers
    timeout = table.optional_number("timeout_seconds", positive=True, maximum=MODEL_TIMEOUT_SECONDS)
    if timeout is not None:
        options["timeout_seconds"] = timeout
    return options


def _base_url(table: Table) -> str:
    url = table.string(
        "base_url", hint="; the openai provider needs the server's URL, e.g. http://127.0.0.1:11434/v1"
    )
    try:
        parts = urlsplit(url)
        has_credentials = parts.username is not None or parts.password is not None
    except ValueError as exc:
        table.fail("base_url", f"{url!r} is not a URL: {exc}")
    if parts.scheme not in ("http", "https") or not parts.netloc:
        table.fail("base_url", f"{url!r} is not an http:// or https:// URL")
    if has_credentials:
        table.fail("base_url", "carries credentials; they would be stored in the session. Use api_key_env")
    return url


def _tool_choice(table: Table, tools: tuple[ToolSpec, ...]) -> str | None:
    choice = table.optional_string("tool_choice")
    if choice is None or choice in TOOL_CHOICE_MODES:
        return choice
    names = [tool.name for tool in tools]
    if choice not in names:
        table.fail(
            "tool_choice",
            f"is {choice!r}, which is neither one of {', '.join(TOOL_CHOICE_MODES)} nor the name of "
            f"one of the job's tools ({', '.join(names) or 'it has none'})",
        )
    return choice


def _headers(table: Table) -> dict[str, str] | None:
    headers = table.data.get("headers")
    if headers is None:
        return None
    if not isinstance(headers, dict):
        table.fail("headers", f"must be a table of strings, not {kind_of(headers)}")
    key = table.key("headers")
    for name, value in headers.items():
        if not _HEADER_NAME.fullmatch(name):
            table.source.fail(join_key(key, name), "is not a valid HTTP header name")
        if not isinstance(value, str):
            table.source.fail(join_key(key, name), f"must be a string, not {kind_of(value)}")
        if "\r" in value or "\n" in value or "\0" in value:
            table.source.fail(join_key(key, name), "contains a line break or NUL, which no header can carry")
        if name.lower() in _CREDENTIAL_HEADERS:
            table.source.fail(
                join_key(key, name),
                "would store a credential in the session; put the key in an environment variable "
                "and name it in api_key_env",
            )
    return dict(headers)
