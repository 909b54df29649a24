"""The command line: the only part of handshake that imports typer or rich."""
