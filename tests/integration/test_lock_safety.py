"""Lock safety, Jepsen style: real holder processes, paused or partitioned past their lock's TTL.

Two faults, each with the same checker:

- **sigstop**: the holder is paused (SIGSTOP) between its `lock.check()` and its write, for
  longer than the TTL; it wakes up and sends the write it checked before the pause.
- **partition**: every TCP path of the holder goes through a proxy of its own
  (`PartitionProxy`), to each API server and to the resource. Cutting them isolates the holder
  from the cluster (its keep-alives stop arriving, the cluster expires its session and grants
  the lock to the other holder) while its write to the resource, already sent, sits in the
  network; on heal TCP delivers it, late, as a real partition does.

The resource keeps a log of accepted writes. With the token check (`FencedResource`) the log's
tokens never go down, so two holders' writes never interleave. The negative control runs the
same schedules with the check switched off and must show the violation: otherwise the test
would prove nothing.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from coreplane.testing.resource import FencedHttpResource, violations
from tests.integration.api_support import TOKEN
from tests.integration.nat_proxy import TcpProxy

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


class PartitionProxy(TcpProxy):
    """A TCP proxy that can be cut: while cut it moves no byte in either direction.

    The bytes stay in the kernel's socket buffers, as packets stay in a partitioned network
    (TCP retransmits them), and are delivered when the cut heals, even if the sender has given
    up on the connection meanwhile: a late write arrives late, it is not lost.
    """

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.cut = threading.Event()
        super().__init__(upstream)

    def _pump(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.upstream)
        except OSError:
            client.close()
            return
        peer = {client: upstream, upstream: client}
        try:
            while not self._stop.is_set():
                if self.cut.is_set():
                    time.sleep(0.01)
                    continue
                readable, _, _ = select.select(list(peer), [], [], 0.02)
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    peer[sock].sendall(data)
        except OSError:
            return
        finally:
            client.close()
            upstream.close()


def _proxy_url(url: str, proxies: list[PartitionProxy]) -> str:
    host, port = url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
    proxy = PartitionProxy((host, int(port)))
    proxies.append(proxy)
    return url.replace(f"{host}:{port}", f"127.0.0.1:{proxy.port}", 1)


class Holder:
    """A lock_holder process; with `partitionable`, all its connections go through proxies."""

    def __init__(
        self,
        name: str,
        resource: FencedHttpResource,
        urls: list[str],
        *,
        partitionable: bool = False,
    ) -> None:
        self.name = name
        self.lines: list[str] = []
        self.proxies: list[PartitionProxy] = []
        resource_url = resource.url
        if partitionable:
            urls = [_proxy_url(u, self.proxies) for u in urls]
            resource_url = _proxy_url(resource_url, self.proxies)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.integration.lock_holder",
                name,
                resource_url,
                TOKEN,
                "2",
                *urls,
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.strip())

    def checked_tokens(self) -> list[int]:
        return [int(line.split()[1]) for line in list(self.lines) if line.startswith("checked")]

    def cut(self) -> None:
        for proxy in self.proxies:
            proxy.cut.set()

    def heal(self) -> None:
        for proxy in self.proxies:
            proxy.cut.clear()


def _wait(predicate: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def run_schedule(api_cluster: Any, fenced: bool, fault: str) -> FencedHttpResource:
    """Two holders; the first to check the lock is paused (`sigstop`) or cut off (`partition`)
    until the other holder has been granted the lock and written, then resumed or healed."""
    _cluster, servers = api_cluster
    urls = [s.url for s in servers.values()]
    resource = FencedHttpResource("r", fenced=fenced)
    partitionable = fault == "partition"
    holders = [Holder(f"h{i}", resource, urls, partitionable=partitionable) for i in range(2)]
    try:
        faulty = _wait(
            lambda: next((h for h in holders if h.checked_tokens()), None), 60, "a first holder"
        )
        if fault == "sigstop":
            os.kill(faulty.proc.pid, signal.SIGSTOP)  # between its check and its write
        else:
            faulty.cut()  # its write, due 0.15 s after the check, is held in the network
        stale = max(faulty.checked_tokens())
        other = next(h for h in holders if h is not faulty)
        # The fault outlives the TTL: the cluster expires the session, the other holder is
        # granted the lock with a higher token and writes.
        _wait(
            lambda: any(token > stale for token, _h in resource.accepted),
            60,
            "the next holder's write",
        )
        if fault == "sigstop":
            os.kill(faulty.proc.pid, signal.SIGCONT)  # wakes up and sends the write it checked
        else:
            faulty.heal()  # the held write reaches the resource, late
        for h in holders:
            h.proc.wait(timeout=120)
        assert all(h.proc.returncode == 0 for h in holders), [h.lines for h in holders]
        assert any(line.startswith("wrote") for line in other.lines)
    finally:
        for h in holders:
            if h.proc.poll() is None:
                os.kill(h.proc.pid, signal.SIGCONT)
                h.proc.kill()
            for proxy in h.proxies:
                proxy.close()
        resource.close()
    return resource


FAULTS = ["sigstop", "partition"]


@pytest.mark.parametrize("fault", FAULTS)
def test_fenced_writes_never_go_back_even_after_a_fault_past_the_ttl(
    api_cluster: Any, fault: str
) -> None:
    resource = run_schedule(api_cluster, fenced=True, fault=fault)
    print(fault, "fenced: accepted", resource.accepted, "refused", resource.refused)
    assert violations(resource.accepted) == []
    assert resource.refused, "the faulty holder's stale write must reach the resource"
    assert len({h for _t, h in resource.accepted}) == 2  # both holders wrote


@pytest.mark.parametrize("fault", FAULTS)
def test_negative_control_without_the_token_check_shows_the_violation(
    api_cluster: Any, fault: str
) -> None:
    resource = run_schedule(api_cluster, fenced=False, fault=fault)
    print(
        fault, "unfenced: accepted", resource.accepted, "violations", violations(resource.accepted)
    )
    assert violations(resource.accepted), "without fencing the stale write must get through"
