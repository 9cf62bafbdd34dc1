"""The quota routes: routers report demand and fetch their share; admins set and delete limits.

Routers (`client` or `admin` tokens) call the leader: a follower answers 503 ``not_leader``
with the leader's id, and the SDK's connection provider goes there. Demand reports are the
leader's soft state (coreplane/runtime/quotas.py), never log entries; limits are replicated
writes carrying the caller's ``(client_id, seq)``. Every field is checked here, before anything
reaches the ControlPlane, and a bad one answers 400 naming it.
"""

from __future__ import annotations

from typing import Any

from coreplane.api.routes import ADMIN, USERS, F, Handlers, Route, _session, _timeout_s
from coreplane.core import commands as C
from coreplane.errors import InvalidArgument, Unavailable

__all__ = ["quota_routes"]

_QUOTA_KEY = F("str", None, 256, non_empty=True)
_ROUTER = F("str", None, 128, non_empty=True)
_RATE_MILLI_MAX = 10**15
_ROUTERS_MAX_MAX = 1_000
_WRITE = {"client_id": F("str", "", 128), "seq": F("int", 0), "timeout_ms": F("int", 0)}


def _rate(body: dict[str, Any], name: str, lo: int) -> int:
    value: int = body[name]
    if not lo <= value <= _RATE_MILLI_MAX:
        raise InvalidArgument(name, f"must be in [{lo}, {_RATE_MILLI_MAX}] milli-requests/s")
    return value


class QuotaHandlers:
    def __init__(self, h: Handlers) -> None:
        self.h = h
        self.cp = h.cp

    @property
    def quotas(self) -> Any:
        quotas = getattr(self.cp, "quotas", None)
        if quotas is None:  # a stand-in control plane without the quota runtime
            raise Unavailable("this node does not serve quotas")
        return quotas

    def report(self, b: dict[str, Any]) -> Any:
        return self.quotas.report(
            b["key"], b["router"], _rate(b, "demand_milli", 0), b["held_epoch"]
        )

    def share(self, b: dict[str, Any]) -> Any:
        """The share without a new demand (the leader keeps the last one reported)."""
        return self.quotas.share(b["key"], b["router"], b["held_epoch"])

    def set_limit(self, b: dict[str, Any]) -> Any:
        if not 1 <= b["routers_max"] <= _ROUTERS_MAX_MAX:
            raise InvalidArgument("routers_max", f"must be in [1, {_ROUTERS_MAX_MAX}]")
        command = C.QuotaSetLimit(
            key=b["key"],
            limit_milli=_rate(b, "limit_milli", 1),
            routers_max=b["routers_max"],
            **_session(b),
        )
        return self.h._write(command, b, lambda v: {"created": bool(v)})

    def delete_limit(self, b: dict[str, Any]) -> Any:
        command = C.QuotaDeleteLimit(key=b["key"], **_session(b))
        return self.h._write(command, b, lambda v: {"deleted": bool(v)})

    def describe(self, b: dict[str, Any]) -> Any:
        got = self.quotas.describe(b["key"], stale_ok=b["stale_ok"], timeout_s=_timeout_s(b))
        return {"found": got is not None, "quota": got}


def quota_routes(h: Handlers) -> list[Route]:
    q = QuotaHandlers(h)
    router = {"key": _QUOTA_KEY, "router": _ROUTER, "held_epoch": F("int", 0)}
    return [
        Route(
            "POST", "/v1/quotas/report", USERS, {**router, "demand_milli": F("int", None)}, q.report
        ),
        Route("POST", "/v1/quotas/share", USERS, router, q.share),
        Route(
            "POST",
            "/v1/quotas/describe",
            USERS,
            {"key": _QUOTA_KEY, "stale_ok": F("bool", False), "timeout_ms": F("int", 0)},
            q.describe,
        ),
        Route(
            "POST",
            "/v1/quotas/limits/set",
            ADMIN,
            {
                "key": _QUOTA_KEY,
                "limit_milli": F("int", None),
                "routers_max": F("int", 16),
                **_WRITE,
            },
            q.set_limit,
        ),
        Route(
            "POST", "/v1/quotas/limits/delete", ADMIN, {"key": _QUOTA_KEY, **_WRITE}, q.delete_limit
        ),
    ]
