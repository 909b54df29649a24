"""`python -m handshake_cli` runs the command line."""

from handshake_cli.cli.app import main

main()
