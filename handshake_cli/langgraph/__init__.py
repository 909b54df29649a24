"""LangGraph on handshake: a front end beside `cli/` (an optional extra,
`pip install 'handshake-cli[langgraph]'`). `HandshakeSaver` keeps each LangGraph thread as a
handshake session; `exactly_once` gates side-effecting tools inside graph nodes.

Nothing here is imported on the command line's start-up path: importing this package
imports LangGraph.
"""

from __future__ import annotations

from handshake_cli.langgraph.saver import HandshakeSaver
from handshake_cli.langgraph.tools import GatedCall, Probed, ToolCallFailed, current_call, exactly_once

__all__ = ["GatedCall", "HandshakeSaver", "Probed", "ToolCallFailed", "current_call", "exactly_once"]
