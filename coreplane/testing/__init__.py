"""coreplane.testing (see DESIGN.md)."""
