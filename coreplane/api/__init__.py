"""coreplane.api: the HTTP API (planned; see docs/architecture.md)."""
