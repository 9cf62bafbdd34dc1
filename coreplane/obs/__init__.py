"""coreplane.obs (see DESIGN.md)."""
