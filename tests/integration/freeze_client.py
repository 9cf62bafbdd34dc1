"""A client process for the serverless-freeze test: requests in a loop, counting failures.

    python3 -m tests.integration.freeze_client (sdk|naive) URL TOKEN

Prints "ready" after its first request, then one line per request ("ok" or "fail <error>"),
until it has made 30; the test freezes it (SIGSTOP) in between.
"""

from __future__ import annotations

import sys
import time

import httpx

from coreplane.core import codec
from coreplane.errors import CoreplaneError
from coreplane.sdk import Client, ServerlessConfig


def main() -> int:
    mode, url, token = sys.argv[1:]
    if mode == "sdk":
        client = Client([url], token, ServerlessConfig(max_attempts=1))  # no retry to hide
        call = lambda: client.get("k", stale_ok=True)  # noqa: E731
    else:  # a plain pooled client: keep-alive on, as most HTTP clients default to
        http = httpx.Client(timeout=5)
        body = codec.encode_value({"key": "k", "stale_ok": True})

        def call() -> object:
            r = http.post(
                url + "/v1/kv/get",
                content=body,
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/msgpack"},
            )
            r.raise_for_status()
            return r

    for n in range(30):
        try:
            call()
            print("ok", flush=True)
        except (CoreplaneError, httpx.HTTPError) as exc:
            print(f"fail {type(exc).__name__}", flush=True)
        if n == 0:
            print("ready", flush=True)
        time.sleep(0.05)
    return 0


if __name__ == "__main__":
    sys.exit(main())
