"""The strict reader that job files, script files and stored jobs are read with.

A `Table` hands out typed values (a string, an integer within its range, a program's argv,
environment variable names, a table that JSON can carry...) and refuses, by key path, any
value of the wrong kind and any key nobody asked about: `model.headers."X-Trace"`,
`tools[1].command[0]`. Every refusal goes through its `Source`, which raises the caller's own
error class (`JobError` for a file, `JobConfigError` for session.toml) with a message that
starts with the file. The reader knows nothing of what a job holds; `parts` and the
providers' options modules say which keys exist.

Why by hand and not a schema library: docs/DECISIONS.md, "Job files are read by hand".
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, time
from pathlib import Path
from typing import Any, NoReturn

from handshake_cli import documents
from handshake_cli.errors import HandshakeError

JOB_FILE_MAX_BYTES = 8 << 20  # a job file, and a script file: each
INT64 = (-(1 << 63), (1 << 63) - 1)  # TOML's integers; any integer inside args or parameters
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+", re.ASCII)


def read_document(path: Path, source: Source, cannot_open: Callable[[str], NoReturn]) -> dict[str, Any]:
    """The TOML document at `path`. Failing to open it is reported by `cannot_open` (the job
    file's own error, or `model.script` for a script); bad bytes, syntax, nesting or size by
    `source`."""
    try:
        # Opened without blocking, then checked: a FIFO would block until someone writes to it.
        fd = documents.open_regular(path)
    except (FileNotFoundError, NotADirectoryError):
        cannot_open("does not exist")
    except documents.DocumentError as exc:
        cannot_open(exc.problem)
    except OSError as exc:
        cannot_open(f"cannot be read: {exc.strerror or exc}")
    try:
        raw = documents.read_limited(fd, JOB_FILE_MAX_BYTES)
        return documents.parse_toml(raw)
    except documents.DocumentError as exc:
        source.fail(None, exc.problem, **exc.position)
    except OSError as exc:
        cannot_open(f"cannot be read: {exc.strerror or exc}")
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Source:
    """Where the values being read came from, so that an error can say so."""

    file: str
    error: type[HandshakeError]
    base: Path | None  # the directory ./ and ../ resolve against; None: already resolved

    def fail(self, key: str | None, problem: str, **extra: Any) -> NoReturn:
        subject = f"{key} {problem}" if key else problem
        raise self.error(f"{self.file}: {subject}", details={"file": self.file, "key": key, **extra})

    def resolve(self, argv: tuple[str, ...]) -> tuple[str, ...]:
        if self.base is None:
            return argv
        return tuple(
            os.path.normpath(os.path.join(self.base, arg)) if arg.startswith(("./", "../")) else arg
            for arg in argv
        )


def join_key(path: str, name: str) -> str:
    """`path.name`, the name quoted as TOML would need it."""
    part = name if _BARE_KEY.fullmatch(name) else json.dumps(name, ensure_ascii=False)
    return f"{path}.{part}" if path else part


def kind_of(value: object) -> str:
    """What a value is, in TOML's words, for "must be X, not Y"."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, datetime | date | time):
        return "a date or time"
    return type(value).__name__


def listed(names: tuple[str, ...]) -> str:
    return ", ".join(names)


class Table:
    """One TOML table being read: typed values out, a refusal for any key nobody asked about."""

    def __init__(self, data: dict[str, Any], source: Source, path: str = "") -> None:
        self.data = data
        self.source = source
        self.path = path

    def key(self, name: str) -> str:
        return join_key(self.path, name)

    def fail(self, name: str | None, problem: str) -> NoReturn:
        self.source.fail(self.key(name) if name is not None else (self.path or None), problem)

    def fail_item(self, name: str, index: int, problem: str) -> NoReturn:
        self.source.fail(f"{self.key(name)}[{index}]", problem)

    def only(self, known: tuple[str, ...], owner: str) -> None:
        for name in self.data:
            if name not in known:
                close = difflib.get_close_matches(name, known, n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                self.fail(name, f"is not a key of {owner}{hint}; its keys are {listed(known)}")

    def optional_string(self, name: str, *, allow_empty: bool = False) -> str | None:
        value = self.data.get(name)
        if value is None:
            return None
        if not isinstance(value, str):
            self.fail(name, f"must be a string, not {kind_of(value)}")
        if not allow_empty and not value.strip():
            self.fail(name, "is empty")
        return value

    def string(self, name: str, *, hint: str = "", allow_empty: bool = False) -> str:
        value = self.optional_string(name, allow_empty=allow_empty)
        if value is None:
            self.fail(name, f"is missing{hint}")
        return value

    def optional_choice(self, name: str, choices: tuple[str, ...]) -> str | None:
        value = self.optional_string(name, allow_empty=True)
        if value is not None and value not in choices:
            self.fail(name, f"is {value!r}, which is not one of {listed(choices)}")
        return value

    def choice(self, name: str, choices: tuple[str, ...], *, default: str | None = None) -> str:
        value = self.optional_choice(name, choices)
        if value is not None:
            return value
        if default is None:
            self.fail(name, f"is missing; expected one of {listed(choices)}")
        return default

    def optional_integer(self, name: str, bounds: tuple[int, int]) -> int | None:
        """An integer within `bounds` (both included)."""
        value = self.data.get(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(name, f"must be an integer, not {kind_of(value)}")
        minimum, maximum = bounds
        if value < minimum:
            self.fail(name, f"must be at least {minimum}, not {value}")
        if value > maximum:
            self.fail(name, f"must be at most {maximum}, not {value}")
        return value

    def integer(self, name: str, default: int, bounds: tuple[int, int]) -> int:
        value = self.optional_integer(name, bounds)
        return default if value is None else value

    def optional_number(self, name: str, *, positive: bool, maximum: float) -> float | None:
        """A finite float (an integer is welcome): > 0 when `positive`, else >= 0; at most `maximum`."""
        value = self.data.get(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(name, f"must be a number, not {kind_of(value)}")
        try:
            number = float(value)
        except OverflowError:
            self.fail(name, "is too large")
        if not math.isfinite(number):
            self.fail(name, f"must be a finite number, not {number}")
        if positive and number <= 0:
            self.fail(name, f"must be greater than 0, not {value}")
        if not positive and number < 0:
            self.fail(name, f"must be at least 0, not {value}")
        if number > maximum:
            self.fail(name, f"must be at most {maximum:g}, not {value}")
        return number

    def boolean(self, name: str, default: bool) -> bool:
        value = self.data.get(name)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.fail(name, f"must be true or false, not {kind_of(value)}")
        return value

    def table(self, name: str) -> Table:
        """A sub-table; a missing one reads as empty, so that its keys take their defaults."""
        value = self.data.get(name)
        if value is None:
            value = {}
        if not isinstance(value, dict):
            self.fail(name, f"must be a table, not {kind_of(value)}")
        return Table(value, self.source, self.key(name))

    def tables(self, name: str) -> list[Table] | None:
        """An array of tables ([[name]] entries); None when the key is missing."""
        value = self.data.get(name)
        if value is None:
            return None
        if not isinstance(value, list):
            self.fail(name, f"must be an array of tables, not {kind_of(value)}")
        tables = []
        for index, entry in enumerate(value):
            if not isinstance(entry, dict):
                self.fail_item(name, index, f"must be a table, not {kind_of(entry)}")
            tables.append(Table(entry, self.source, f"{self.key(name)}[{index}]"))
        return tables

    def optional_argv(self, name: str) -> tuple[str, ...] | None:
        """A program and its arguments: a non-empty array of strings, ./ and ../ resolved."""
        value = self.data.get(name)
        if value is None:
            return None
        if not isinstance(value, list) or not value:
            shown = "an empty array" if isinstance(value, list) else kind_of(value)
            self.fail(
                name, f"must be a non-empty array of strings (the program, then its arguments), not {shown}"
            )
        for index, arg in enumerate(value):
            if not isinstance(arg, str):
                self.fail_item(name, index, f"must be a string, not {kind_of(arg)}")
            if "\0" in arg:
                self.fail_item(name, index, "contains a NUL character, which no command line can carry")
        if not value[0]:
            self.fail_item(name, 0, "is empty; it must name the program to run")
        return self.source.resolve(tuple(value))

    def names(self, name: str) -> tuple[str, ...]:
        """Environment variable names, each at most once; missing reads as none."""
        value = self.data.get(name)
        if value is None:
            return ()
        if not isinstance(value, list):
            self.fail(name, f"must be an array of environment variable names, not {kind_of(value)}")
        for index, item in enumerate(value):
            if not isinstance(item, str):
                self.fail_item(name, index, f"must be a string, not {kind_of(item)}")
            if not ENV_NAME.fullmatch(item):
                self.fail_item(
                    name,
                    index,
                    f"{item!r} is not an environment variable name "
                    "(ASCII letters, digits and '_', not starting with a digit)",
                )
            if item in value[:index]:
                self.fail_item(name, index, f"repeats {item!r}")
        return tuple(value)

    def json_table(self, name: str) -> dict[str, Any] | None:
        """A table that must survive a trip through JSON (tool arguments, JSON schemas)."""
        value = self.data.get(name)
        if value is None:
            return None
        if not isinstance(value, dict):
            self.fail(name, f"must be a table, not {kind_of(value)}")
        self._check_json(value, self.key(name))
        return value

    def _check_json(self, value: object, key: str) -> None:
        if isinstance(value, dict):
            for name, item in value.items():
                self._check_json(item, join_key(key, name))
        elif isinstance(value, list):
            for index, item in enumerate(value):
                self._check_json(item, f"{key}[{index}]")
        elif isinstance(value, datetime | date | time):
            self.source.fail(key, "is a TOML date or time, which JSON cannot carry; write it as a string")
        elif isinstance(value, float) and not math.isfinite(value):
            self.source.fail(key, f"is {value}, which JSON cannot carry")
        elif isinstance(value, int) and not isinstance(value, bool) and not INT64[0] <= value <= INT64[1]:
            self.source.fail(key, "is outside the 64-bit integer range TOML and most JSON readers hold")
