"""gc's policy: the `[gc]` table of `<root>/handshake.toml`, the flags that override it, and
the durations both are written in (`30s`, `15m`, `12h`, `7d`, `2w`)."""

from __future__ import annotations

import errno
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from handshake_cli import documents
from handshake_cli.errors import InvalidConfig, UsageError
from handshake_cli.paths import Paths

CONFIG_FILE = "handshake.toml"
CONFIG_MAX_BYTES = 1 << 20  # a [gc] table of four keys; anything near this is not a config
# Debris younger than this may belong to a write or a creation still in progress.
GRACE_SECONDS = 3600.0

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"([0-9]+)([smhdw])", re.ASCII)
_CONFIG_KEYS = ("older_than", "keep_checkpoints", "quarantine_older_than")


def parse_duration(text: str, what: str = "--older-than") -> float:
    """`30s`, `15m`, `12h`, `7d`, `2w` -> seconds."""
    match = _DURATION.fullmatch(text.strip())
    if not match:
        raise UsageError(
            f"{what} {text!r} is not a duration: use a whole number and one of s, m, h, d, w (e.g. 7d)"
        )
    return float(int(match[1]) * _UNITS[match[2]])


@dataclass(frozen=True)
class Policy:
    older_than: float | None = None  # seconds; None: no session is removed
    keep_checkpoints: int | None = None  # None: artifacts are not pruned
    quarantine_older_than: float | None = None  # None: quarantine is never swept
    include_unfinished: bool = False
    dry_run: bool = False
    grace: float = GRACE_SECONDS
    config_file: str | None = None  # the handshake.toml that contributed, if any

    def as_json(self) -> dict[str, Any]:
        return {
            "older_than_seconds": self.older_than,
            "keep_checkpoints": self.keep_checkpoints,
            "quarantine_older_than_seconds": self.quarantine_older_than,
            "include_unfinished": self.include_unfinished,
            "grace_seconds": self.grace,
            "config_file": self.config_file,
        }


def load_policy(
    paths: Paths,
    *,
    older_than: str | None = None,
    keep_checkpoints: int | None = None,
    include_unfinished: bool = False,
    dry_run: bool = False,
) -> Policy:
    """The `[gc]` table of `<root>/handshake.toml`, overridden by whatever the flags give."""
    # A root that is a URL has no directory to hold the file: only the flags say.
    table, config_file = _read_config(paths.root / CONFIG_FILE) if paths.url is None else ({}, None)

    def config_duration(key: str) -> float | None:
        value = table.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise _bad(config_file, key, f'must be a duration string such as "7d", not {value!r}')
        try:
            return parse_duration(value, f"[gc] {key}")
        except UsageError as exc:
            raise _bad(config_file, key, exc.message) from None

    config_keep = table.get("keep_checkpoints")
    if config_keep is not None and (type(config_keep) is not int or config_keep < 0):
        raise _bad(config_file, "keep_checkpoints", f"must be a whole number >= 0, not {config_keep!r}")
    if keep_checkpoints is not None and keep_checkpoints < 0:
        raise UsageError(f"--keep-checkpoints {keep_checkpoints}: must be 0 or more")
    # Every key of the file is checked, even one a flag overrides: a broken file is reported now.
    config_age, config_quarantine = config_duration("older_than"), config_duration("quarantine_older_than")
    return Policy(
        older_than=parse_duration(older_than) if older_than is not None else config_age,
        keep_checkpoints=keep_checkpoints if keep_checkpoints is not None else config_keep,
        quarantine_older_than=config_quarantine,
        include_unfinished=include_unfinished,
        dry_run=dry_run,
        config_file=config_file,
    )


def _read_config(path: Path) -> tuple[dict[str, Any], str | None]:
    def refuse(problem: str) -> InvalidConfig:
        return InvalidConfig(f"{path}: {problem}", details={"file": str(path), "key": None})

    try:
        fd = documents.open_regular(path, follow_symlinks=False)
    except FileNotFoundError:
        return {}, None
    except documents.DocumentError as exc:
        raise refuse(exc.problem) from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise refuse("is a symbolic link; handshake does not follow it") from None
        if isinstance(exc, PermissionError):
            raise refuse(f"cannot be read: {exc.strerror}") from None
        raise
    try:
        doc = documents.parse_toml(documents.read_limited(fd, CONFIG_MAX_BYTES))
    except documents.DocumentError as exc:
        raise refuse(exc.problem) from None
    finally:
        os.close(fd)
    table = doc.get("gc", {})
    if not isinstance(table, dict):
        raise _bad(str(path), None, "must be a table ([gc])")
    for key in table:
        if key not in _CONFIG_KEYS:
            raise _bad(str(path), key, f"is not a gc setting (known: {', '.join(_CONFIG_KEYS)})")
    return table, str(path)


def _bad(file: str | None, key: str | None, problem: str) -> InvalidConfig:
    where = f"[gc] {key}" if key else "[gc]"
    return InvalidConfig(
        f"{file}: {where} {problem}", details={"file": file, "key": f"gc.{key}" if key else "gc"}
    )
