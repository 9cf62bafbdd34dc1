"""coreplane.obs: health hierarchy and metrics (planned; see docs/architecture.md)."""
