"""A lock holder process for the Jepsen-style lock test (tests/integration/test_lock_safety.py).

    python3 -m tests.integration.lock_holder NAME RESOURCE_URL TOKEN ROUNDS URL...

Each round: take the lock, then three times: check the lock (`lock.check()`), say so on stdout,
wait a little (the window a GC pause or SIGSTOP lands in between check and write), and write to
the resource with the token. A write the resource refuses (or that times out, as one held in
a partition does) ends the round.
"""

from __future__ import annotations

import sys
import time

import httpx

from coreplane.errors import LockLost
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
    name, resource, token, rounds, *urls = sys.argv[1:]
    with Client(urls, token, CONFIG) as client, httpx.Client(timeout=5) as http:
        for _ in range(int(rounds)):
            try:
                with client.lock("jepsen", ttl_ms=1_500, acquire_timeout_s=30) as lock:
                    for i in range(3):
                        fencing = lock.check()
                        print(f"checked {fencing}", flush=True)
                        time.sleep(0.15)
                        try:
                            r = http.post(resource, json={"holder": name, "token": fencing, "i": i})
                        except httpx.HTTPError as exc:
                            print(f"write-failed {fencing} {type(exc).__name__}", flush=True)
                            break
                        print(f"wrote {fencing} {r.status_code}", flush=True)
                        if r.status_code != 200:
                            break
            except LockLost as exc:
                print(f"lost {exc}", flush=True)
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
