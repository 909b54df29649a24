"""Storage: the bytes of a session on disk and the rules that keep them.

Durable file operations, the journal (framing, scanning, appends), record decoding,
content-addressed artifacts, the writer lock, the checkpoint-request channel, the session
directory layout and ids, head.json as a cache, and the trash gc deletes from. Nothing here
knows what a record means beyond its envelope: the folds live in `handshake_cli.session`.

`contract` says what any store of sessions must do; `filesystem` is the store over these
files, `memory` the reference store the conformance suite also runs against.
"""
