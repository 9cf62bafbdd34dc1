"""`SimNode`: a real `ControlPlane` driven step by step by a `SimCluster`, in one thread.

Everything below the node is the production code: the core state machine, the runtime's leader
work (`ControlPlane._step`: Leader entries, fencing tokens, ticks), `RaftEngine` on pysyncobj.
Only the edges are simulated: the transport (`raft.simnet.SimTransport`), the journal
(`raft.simnet.SimJournal`, or the real `LmdbJournal` in a temporary directory), the clocks, and
the runtime thread, which becomes a step function:

- ``start()`` builds the engine on the calling thread with ``autoTick=False``;
- the runtime's blocking `_attempt` (propose, then wait for the commit) proposes and raises
  `_Blocked`; the cluster treats the runtime thread as blocked until the proposal's callback
  fires or its timeout passes in simulated time, then runs `_step` again from the top (it
  re-derives everything from replicated state, so a re-run is what the real thread would do
  after its wait returned);
- `time` inside `coreplane.runtime.controlplane` is the node's simulated clock (swapped by
  `SimCluster` while it runs).

Canary switches (deliberate bugs the harness must catch) are plain attributes, see `Canaries`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from coreplane.raft import engine as E
from coreplane.raft.simnet import SimDisk, SimJournal, make_sim_transport_class
from coreplane.runtime.controlplane import ControlPlane

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
        return ("fsync_skipped", "lease_unchecked", "stale_read", "unfenced_lock",
                "vote_not_durable")


class _Blocked(BaseException):
    """The runtime thread is waiting for a proposal; BaseException so no handler eats it."""


@contextlib.contextmanager
def _swapped(module: Any, name: str, value: Any) -> Iterator[None]:
    saved = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, saved)


class SimNode(ControlPlane):
    """A ControlPlane whose threads, sockets, clock and (optionally) disk are simulated."""

    def __init__(self, node_id: str, address: str, peers: dict[str, str], data_dir: str,
                 secret: bytes, *, hub: Any, disk: SimDisk | None,
                 on_propose: Callable[[SimNode], None],
                 on_apply: Callable[[SimNode, bytes, int], None],
                 canaries: Canaries = Canaries(), **options: Any) -> None:
        self._sim_hub = hub
        self._sim_on_propose = on_propose
        self._sim_on_apply = on_apply
        self.sim_blocked: list[Any] | None = None  # [done, deadline_us] while waiting
        self.sim_deadline_us = 0
        if disk is None:  # the real LmdbJournal in the data dir
            super().__init__(node_id, address, peers, data_dir, secret, **options)
        else:
            def open_journal(path: str, **_kw: Any) -> SimJournal:
                return SimJournal(disk, marker_path=E.snapshot_marker_path(path),
                                  fsync=not canaries.fsync_skipped,
                                  vote_durable=not canaries.vote_not_durable)

            with _swapped(E, "open_journal", open_journal):
                super().__init__(node_id, address, peers, data_dir, secret, **options)
        self._client_id = f"{node_id}/sim"  # deterministic (the real one is random)
        self.fleet.solver = "inline"  # one thread: the solve runs inside the runtime step

    def _make_transport_class(self) -> type:
        return make_sim_transport_class(self._sim_hub, self.node_id,
                                        on_before_send=self._flush_journal)

    def start(self) -> None:
        """Build the engine here, ticked by hand; no thread starts."""
        if self._engine is not None:
            return
        build_conf = E.build_conf

        def manual_conf(**kwargs: Any) -> Any:
            kwargs["auto_tick"] = False
            return build_conf(**kwargs)

        with _swapped(E, "build_conf", manual_conf):
            self._engine = self._make_engine()
        self._started.set()

    def stop(self, timeout_s: float = 10.0) -> None:
        """A clean stop: flush and close the journal (a crash is `SimCluster.crash`)."""
        self._stopping.set()
        engine, self._engine = self._engine, None
        if engine is not None:
            engine._doDestroy()
        else:
            self._journal.close()

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

    # ------------------------------------------------------------------ the runtime thread
    def _attempt(self, data: bytes, timeout_s: float) -> tuple[Any, int | None]:
        engine = self._require_engine()
        box: list[Any] = [False, None]

        def done(result: Any, code: int) -> None:
            box[0], box[1] = True, (result, code)

        engine.propose(data, done)
        self.sim_blocked = box
        self.sim_deadline_us = int(timeout_s * 1_000_000)  # relative; the cluster anchors it
        self._sim_on_propose(self)
        raise _Blocked

    def sim_runtime_step(self) -> bool:
        """One pass of the runtime loop; False if it blocked on a proposal."""
        if self._fatal is not None or self._engine is None:
            return True
        try:
            self._step()
        except _Blocked:
            return False
        return True

    def _apply(self, data: bytes, index: int) -> Any:
        result = super()._apply(data, index)
        self._sim_on_apply(self, data, index)
        return result
