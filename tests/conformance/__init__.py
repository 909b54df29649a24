"""Contract suites: one set of tests, written against a contract, run against every
implementation of it (the session stores; the model providers)."""
