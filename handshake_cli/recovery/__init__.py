"""Recovery: the planner (a pure function of a session's files and the operator's
resolutions), the guidance it prints, and the executor that carries a plan out through
the same runner as `handshake run`."""
