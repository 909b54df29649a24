"""The store a root names: a directory is the filesystem store, a `postgresql://` (or
`postgres://`) URL the PostgreSQL store.

Every command opens its store here and only here, so a new store needs nothing but itself
and one branch below. The PostgreSQL store (and with it psycopg) is imported only when a URL
is given: a command on a directory starts as fast as before.
"""

from __future__ import annotations

import importlib
from typing import cast

from handshake_cli.errors import UsageError
from handshake_cli.paths import Paths
from handshake_cli.storage.contract import SessionStore


def open_store(paths: Paths) -> SessionStore:
    """The store of `paths.root`: `FilesystemStore` for a directory, `PostgresStore` for a URL."""
    if paths.url is None:
        from handshake_cli.storage.filesystem import FilesystemStore

        return FilesystemStore(paths)
    try:
        # By name: the module is optional, and its driver is loaded only here.
        postgres = importlib.import_module("handshake_cli.storage.postgres")
    except ImportError as exc:
        raise UsageError(
            f"the root {paths.shown_root} is a PostgreSQL database, which this handshake cannot "
            f"open ({exc}); install handshake with its postgres extra: pip install 'handshake-cli[postgres]'"
        ) from None
    return cast(SessionStore, postgres.PostgresStore(paths.url, paths=paths))
