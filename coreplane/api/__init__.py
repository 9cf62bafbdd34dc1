"""coreplane.api (see DESIGN.md)."""
