"""`python -m handshake_cli` runs the command line."""

from handshake_cli.cli.entry import main

main()
