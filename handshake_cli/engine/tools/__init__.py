"""Tools: what runs between a `tool.intent` and its `tool.result` (DESIGN section 4).

- `gate`: call ids, idempotency keys, `ToolContext` and `ToolOutcome`, and `run_tool` /
  `run_probe`, which turn whatever a tool does into the outcome the model sees;
- `process`: running a program: argv without a shell, a small environment, stop signals
  ignored, output in temporary files, a timeout (also used by the command provider);
- `files`: the builtin `read_file` and `write_file`, confined to the workspace.

Nothing is re-exported: importing `process` (as the command provider does) does not load
the gate.
"""
