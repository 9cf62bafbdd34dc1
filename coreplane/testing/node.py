"""`SimNode`: a real `ControlPlane` driven step by step by a `SimCluster`, in one thread.

Everything below the node is the production code: the core state machine, the runtime's leader
work (`ControlPlane.step`: Leader entries, fencing tokens, ticks, the fleet), `RaftEngine` on
pysyncobj. Only the edges are simulated, each through a public seam of the runtime
(`coreplane.runtime.seams.Seams`): the transport (`raft.simnet.SimTransport`), the journal
(`raft.simnet.SimJournal`, or the real `LmdbJournal` in a temporary directory), the clock, and
the runtime thread: the node runs threadless and the cluster calls `tick_engine` (Raft) and
`step` (the leader work, which never blocks: a pass that proposes ends there, and the next pass
after the entry answered starts from the top, exactly as on the real runtime thread).

Canary switches (deliberate bugs the harness must catch) are plain attributes, see `Canaries`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from coreplane.raft import engine as E
from coreplane.raft.simnet import SimDisk, SimJournal, make_sim_transport_class
from coreplane.runtime.controlplane import ControlPlane
from coreplane.runtime.seams import Seams

__all__ = ["Canaries", "SimNode"]


@dataclass(frozen=True, slots=True)
class Canaries:
    """Known bugs switched on deliberately; the checkers must report each one.

    unfenced_lock: the model resource accepts any token (two lock holders act).
    stale_read: reads are served from the local replica without a barrier or lease.
    vote_not_durable: term and vote reach the disk only once a second.
    fsync_skipped: journal flushes never reach the disk.
    lease_unchecked: after a pause the runtime acts before the engine re-checks its lease.
    """

    unfenced_lock: bool = False
    stale_read: bool = False
    vote_not_durable: bool = False
    fsync_skipped: bool = False
    lease_unchecked: bool = False

    @staticmethod
    def names() -> tuple[str, ...]:
        return (
            "fsync_skipped",
            "lease_unchecked",
            "stale_read",
            "unfenced_lock",
            "vote_not_durable",
        )


class SimNode(ControlPlane):
    """A ControlPlane whose threads, sockets, clock and (optionally) disk are simulated.

    Built only through the runtime's public seams (`coreplane.runtime.seams.Seams`): the
    simulated transport and journal come from factories, the clock is the cluster's, the node
    runs threadless, and the cluster drives it with `tick_engine` and `step`."""

    def __init__(
        self,
        node_id: str,
        address: str,
        peers: dict[str, str],
        data_dir: str,
        secret: bytes,
        *,
        hub: Any,
        disk: SimDisk | None,
        clock: Any,
        on_propose: Callable[[SimNode, float], None],
        on_apply: Callable[[SimNode, bytes, int], None],
        canaries: Canaries = Canaries(),
        **options: Any,
    ) -> None:
        journal_factory = None
        if disk is not None:  # else the real LmdbJournal in the data dir

            def journal_factory(path: str, **_kw: Any) -> SimJournal:
                return SimJournal(
                    disk,
                    marker_path=E.snapshot_marker_path(path),
                    fsync=not canaries.fsync_skipped,
                    vote_durable=not canaries.vote_not_durable,
                )

        def transport_factory(node: str, on_before_send: Callable[[], None]) -> type:
            return make_sim_transport_class(hub, node, on_before_send=on_before_send)

        seams = Seams(
            clock=clock,
            journal_factory=journal_factory,
            transport_factory=transport_factory,
            threaded=False,
            client_id=f"{node_id}/sim",  # deterministic (the real one is random)
            on_apply=lambda data, index: on_apply(self, data, index),
            on_runtime_propose=lambda timeout_s: on_propose(self, timeout_s),
        )
        super().__init__(node_id, address, peers, data_dir, secret, seams=seams, **options)
        # A simulated crash drops this object without stop(); the restart opens the same dir in
        # this process. The OS drops a killed process's lock, so the sim does not hold one.
        self._datadir.release()

    @property
    def engine(self) -> E.RaftEngine:
        engine = self._engine
        if engine is None:
            raise RuntimeError(f"{self.node_id} is not running")
        return engine

    @property
    def journal(self) -> Any:
        return self._journal

    @property
    def state(self) -> Any:
        """The node's StateMachine (read it between steps only)."""
        return self._sm

    @property
    def fatal(self) -> BaseException | None:
        return self._fatal
