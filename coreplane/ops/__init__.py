"""coreplane.ops: the operator CLI (planned; see docs/architecture.md)."""
