"""Placement solver: a pure leaf that knows only coreplane.errors."""
