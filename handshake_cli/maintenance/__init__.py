"""Maintenance: keeping a root small (gc) and moving sessions between roots (bundles)."""
