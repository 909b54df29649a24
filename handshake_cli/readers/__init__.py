"""Readers: what `inspect` reports, computed from a session's files without its lock.

- `describe`: one session (`inspect SESSION`), with the plan recovery would follow;
- `verify`: every checksum, link, artifact and head.json (`inspect --verify`);
- `events`: the journal as a history (`inspect --events`, `inspect --at`).

The listing of a root (`inspect`) is `session.status.list_sessions`, which `recover --all`,
gc and bundles share; a tool call's status is `session.calls`, which the planner shares.
"""
