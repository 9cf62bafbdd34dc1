"""coreplane.sdk: the client SDK (planned; see docs/architecture.md)."""
