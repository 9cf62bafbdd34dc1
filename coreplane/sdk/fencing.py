"""`FencedResource`: the receiving end of fencing tokens, for a host's own resources.

A fencing token is the log index of the entry that granted a right (leadership, a lock, an
action); tokens only grow across leaders and restarts. A leader that was paused or partitioned
may still send a request after a newer leader has acted; the resource itself must then refuse
it. It does so by remembering, per resource, the highest token it has accepted and rejecting
anything lower (Kleppmann's fencing, as in Chubby's sequencers). Equal tokens are accepted: one
leadership or lock holder sends many requests with the same token.

Thread-safe; keeps one integer per resource name, up to `resources_max` names (a bound, as for
everything else in coreplane); imports only `coreplane.errors`.
"""

from __future__ import annotations

import threading

from coreplane.errors import CommandRejected, InvalidArgument

__all__ = ["FencedResource"]


class FencedResource:
    """Highest accepted fencing token per resource; lower tokens are refused.

    ``check(resource, token)`` raises ``CommandRejected("stale_token")`` for a token below the
    highest seen and otherwise records it; ``accepts`` asks without recording. Use it inside
    the resource, next to the write it guards, under the same lock or transaction if possible.
    """

    def __init__(self, *, resources_max: int = 100_000) -> None:
        if not isinstance(resources_max, int) or resources_max <= 0:
            raise InvalidArgument("resources_max", "must be a positive integer")
        self._highest: dict[str, int] = {}
        self._lock = threading.Lock()
        self._resources_max = resources_max

    def check(self, resource: str, token: int) -> int:
        """Accept `token` for `resource` and remember it, or raise CommandRejected."""
        _check_args(resource, token)
        with self._lock:
            highest = self._highest.get(resource)
            if highest is not None and token < highest:
                raise CommandRejected(
                    "stale_token", f"{resource}: token {token} < highest seen {highest}"
                )
            if highest is None and len(self._highest) >= self._resources_max:
                raise CommandRejected(
                    "too_many_resources", f"more than {self._resources_max} fenced resources"
                )
            self._highest[resource] = token
            return token

    def accepts(self, resource: str, token: int) -> bool:
        """Would `check` accept this token now? (Nothing is recorded.)"""
        _check_args(resource, token)
        with self._lock:
            highest = self._highest.get(resource)
        return highest is None or token >= highest

    def highest(self, resource: str) -> int | None:
        """The highest token accepted for `resource`, or None."""
        with self._lock:
            return self._highest.get(resource)


def _check_args(resource: object, token: object) -> None:
    if not isinstance(resource, str) or not resource:
        raise InvalidArgument("resource", "must be a non-empty str")
    if isinstance(token, bool) or not isinstance(token, int) or token < 0:
        raise InvalidArgument("token", "must be a non-negative integer (a log index)")
