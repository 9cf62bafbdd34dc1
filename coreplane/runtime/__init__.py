"""ControlPlane: wires the pure core to the raft adapter; threads start here."""
