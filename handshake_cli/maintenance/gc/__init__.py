"""Retention and sweeping: which sessions may go, how they go, and the debris crashes leave.

gc removes finished sessions (COMPLETED, FAILED, CANCELLED) past an age, and with
`include_unfinished` stopped ones too (PAUSED, BLOCKED, interrupted), never one a live
process holds. It decides from head.json checked against the journal's last record (the
whole journal is folded only when the two disagree), so a root of many sessions costs a few
small reads per session. It takes each session's lock without waiting, checks the state
again under it, and moves the session out of `sessions/` with one rename into
`<root>/trash/` before deleting anything: a gc killed at any instant leaves each session
either whole in `sessions/` or in the trash, which the next gc empties first. Once a batch
of renames is durable, its trees go to a `trash.Deleter`, whose helper processes delete them
while gc decides on the next sessions; gc returns only when all of it is deleted. On any
other store (PostgreSQL) the same decisions lead to `SessionStore.remove_unchanged`: under
the session's lease, taken without waiting, the store checks the last record again and
removes the session whole in one step (one transaction).

Debris is swept from sessions gc can lock: `.tmp-*` files of interrupted atomic writes,
checkpoint requests nobody will answer or read, quarantine files past their own age, and
with `keep_checkpoints` the pack segments and loose artifacts no record names (checkpoint
bodies live in journal records and are never dropped). `staging/` leftovers of crashed
creations go too. Everything younger than `GRACE_SECONDS` stays: it may be in use.

The package, by responsibility: `policy` (the [gc] table, the flags, durations), `collect`
(the pass over a root), `debris` (what is swept from a session that stays), `reachability`
(which artifacts the journal still names) and `report` (what the pass did). The lock gc
takes on a directory is `storage.lock.try_lock`, elsewhere the store's lease
(`SessionStore.acquire`); the state it decides from is `session.status.head_or_fold`.
"""

from handshake_cli.maintenance.gc.collect import collect
from handshake_cli.maintenance.gc.policy import (
    CONFIG_FILE,
    CONFIG_MAX_BYTES,
    GRACE_SECONDS,
    Policy,
    load_policy,
    parse_duration,
)
from handshake_cli.maintenance.gc.report import Report

__all__ = [
    "CONFIG_FILE",
    "CONFIG_MAX_BYTES",
    "GRACE_SECONDS",
    "Policy",
    "Report",
    "collect",
    "load_policy",
    "parse_duration",
]
