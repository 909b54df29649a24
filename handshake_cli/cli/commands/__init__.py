"""One module per command: parse, call the core, render."""
