"""Built-in machines (KV with leases) and the user-machine protocol."""
