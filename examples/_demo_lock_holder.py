"""A lock holder in its own process, for the demo's stale-holder scene.

    python3 _demo_lock_holder.py NAME RESOURCE_URL LOCK URL...      (token in COREPLANE_TOKEN)

It takes the lock, writes to the resource with the lock's fencing token, checks that it still
holds the lock (``lock.check()``) and says so on stdout (``checked TOKEN``), then waits for a
line on stdin before its second write: the window a GC pause or a SIGSTOP lands in between a
check and the write it allows. The demo stops the process there (SIGSTOP) until the lock's TTL
has passed and another client holds the lock, then lets it go on: its write reaches the
resource with the old token and is refused there, which no check in the holder could prevent.
"""

from __future__ import annotations

import os
import sys

import httpx

from coreplane.sdk import Client, LongRunningConfig

CONFIG = LongRunningConfig(
    backoff_base_ms=20,
    backoff_cap_ms=300,
    lock_poll_ms=20,
    health_check_interval_ms=0,
    request_timeout_ms=3_000,
    max_attempts=6,
    budget_min_retries_per_s=5.0,
)


def main() -> int:
    name, resource, lock_name, *urls = sys.argv[1:]
    with Client(urls, os.environ["COREPLANE_TOKEN"], CONFIG) as client, httpx.Client() as http:
        lock = client.lock(lock_name, ttl_ms=1_000, acquire_timeout_s=20).acquire()
        first = http.post(resource, json={"holder": name, "token": lock.token})
        print(f"wrote {lock.token} {first.status_code}", flush=True)
        token = lock.check()  # still held: the write below is allowed ... as of now
        print(f"checked {token}", flush=True)
        sys.stdin.readline()  # (paused here by the demo)
        second = http.post(resource, json={"holder": name, "token": token})
        print(f"wrote {token} {second.status_code}", flush=True)
        print(f"lost {lock.lost}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
