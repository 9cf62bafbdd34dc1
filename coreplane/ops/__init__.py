"""coreplane.ops (see DESIGN.md)."""
