"""Where sessions live, resolved once and passed around.

`--root DIR` wins, then the `HANDSHAKE_HOME` environment variable, then the platform's
user data directory. Nothing in the core reads these from module globals: a `Paths` is
built at the edge (the CLI, a test) and handed in.

A root is a directory, or the URL of a PostgreSQL database (`postgresql://` or
`postgres://`; `storage.open` picks the store from it). A URL is kept as typed in `url`, and
shown (in messages, in the `--root` that guidance repeats, in JSON) without its password:
`shown_root` drops the password from the URL's user part and any `password=` query
parameter. A printed command then reaches the same database only where the password comes
from elsewhere (PGPASSWORD, ~/.pgpass, a service file), which is where it belongs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

ENV_HOME = "HANDSHAKE_HOME"
APP_NAME = "handshake"
# The schemes of a PostgreSQL root (libpq's connection URIs).
URL_SCHEMES = ("postgresql://", "postgres://")


def is_url(root: str) -> bool:
    return root.lower().startswith(URL_SCHEMES)


def without_password(url: str) -> str:
    """`url` with its password left out: `user:secret@host` becomes `user@host`, and a
    `password=` query parameter is dropped. Everything else stays as typed."""
    scheme, _, rest = url.partition("://")
    authority, slash, tail = rest.partition("/")
    if "@" in authority:
        user, _, host = authority.rpartition("@")
        authority = f"{user.split(':', 1)[0]}@{host}"
    path, mark, query = tail.partition("?")
    if mark:
        kept = [p for p in query.split("&") if p and not p.lower().startswith("password=")]
        tail = path + ("?" + "&".join(kept) if kept else "")
    return f"{scheme}://{authority}{slash}{tail}"


@dataclass(frozen=True)
class Paths:
    root: Path  # for a URL root, a path no file is ever written under
    # How the root was chosen; guidance repeats `--root` only when it came from the flag.
    root_from_flag: bool = False
    url: str | None = None  # a PostgreSQL root, as typed (password included: never printed)

    @classmethod
    def resolve(cls, root_flag: str | None, environ: Mapping[str, str] | None = None) -> Paths:
        env = os.environ if environ is None else environ
        if root_flag:
            return cls._of(root_flag, from_flag=True)
        if env.get(ENV_HOME):
            return cls._of(env[ENV_HOME], from_flag=False)
        import platformdirs  # only paid for when no root was given

        return cls(Path(platformdirs.user_data_dir(APP_NAME, appauthor=False)))

    @classmethod
    def _of(cls, root: str, *, from_flag: bool) -> Paths:
        if is_url(root):
            return cls(Path(without_password(root)), root_from_flag=from_flag, url=root)
        return cls(Path(root).expanduser().absolute(), root_from_flag=from_flag)

    @property
    def shown_root(self) -> str:
        """The root as messages, guidance and JSON show it: a path, or the URL without its password."""
        return without_password(self.url) if self.url is not None else str(self.root)

    @property
    def sessions(self) -> Path:
        return self.root / "sessions"

    @property
    def staging(self) -> Path:
        """Sessions are built here and renamed into `sessions/` whole."""
        return self.root / "staging"

    @property
    def trash(self) -> Path:
        """gc renames a session here (one durable step) before anything in it is deleted."""
        return self.root / "trash"

    def root_args(self) -> list[str]:
        """The `--root` words a printed command must repeat to reach the same sessions."""
        return ["--root", self.shown_root] if self.root_from_flag else []
