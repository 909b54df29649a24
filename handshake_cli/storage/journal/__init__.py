"""The append-only journal of a session, in four modules; import from the one you need.

- `codec`: one record as one line of bytes and back (framing, checksum, chain start,
  `Record`), segment names and sizes, timestamps. Reads and writes no file.
- `records`: what a record may hold, checked when a line is decoded (a checksum-intact
  line that handshake never writes is damage) and before one is appended; the limits.
- `scan`: reading a journal back, verified: `scan` and its `Damage`, the last record, the
  record at an offset, the segment listing.
- `writer`: `JournalWriter`, appends with a durability level, under the session lock.

Nothing is re-exported here: each name has one import path, so a fold that only reads
records visibly depends on the codec alone, and `scan` (the module) is never confused
with `scan` (the function).
"""
