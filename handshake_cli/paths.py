"""Where sessions live, resolved once and passed around.

`--root DIR` wins, then the `HANDSHAKE_HOME` environment variable, then the platform's
user data directory. Nothing in the core reads these from module globals: a `Paths` is
built at the edge (the CLI, a test) and handed in.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

ENV_HOME = "HANDSHAKE_HOME"
APP_NAME = "handshake"


@dataclass(frozen=True)
class Paths:
    root: Path
    # How the root was chosen; guidance repeats `--root` only when it came from the flag.
    root_from_flag: bool = False

    @classmethod
    def resolve(cls, root_flag: str | None, environ: Mapping[str, str] | None = None) -> Paths:
        env = os.environ if environ is None else environ
        if root_flag:
            return cls(Path(root_flag).expanduser().absolute(), root_from_flag=True)
        if env.get(ENV_HOME):
            return cls(Path(env[ENV_HOME]).expanduser().absolute())
        import platformdirs  # only paid for when no root was given

        return cls(Path(platformdirs.user_data_dir(APP_NAME, appauthor=False)))

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
        return ["--root", str(self.root)] if self.root_from_flag else []
