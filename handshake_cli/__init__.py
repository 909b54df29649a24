"""handshake: crash recovery for AI model sessions."""

__version__ = "0.1.0"
