"""Readers: what `inspect` reports, computed from a session's files without its lock."""
