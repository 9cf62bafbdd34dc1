"""coreplane.sdk (see DESIGN.md)."""
