"""The PostgreSQL store (`--root postgresql://...`): the session-store contract over tables of
one database, so that every machine of a fleet can run, inspect, recover and gc any session.

Imported only when a root is a PostgreSQL URL (`storage.open`), and the only code that imports
psycopg. `store` (reads, creating and removing sessions, the lease taken), `lease` (the lease
and the appender: every write through the lease's connection, fenced, committed), `journal`
(the journal read back from its rows and verified), `schema` (the tables and their version),
`connect` (URLs, connections and what their failures mean). The tables are in docs/FORMAT.md.
"""

from handshake_cli.storage.postgres.store import PostgresStore

__all__ = ["PostgresStore"]
