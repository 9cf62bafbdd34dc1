"""The API's routes: field specs, body validation, and the handlers over a ControlPlane.

HTTP-free: a handler takes the validated body (a dict) and returns plain data, or raises a
`coreplane.errors` error that `server.py` maps to a status. Handlers run in the server's thread
pool (every ControlPlane call may block on a commit or a ReadIndex round) and use only the
ControlPlane's public methods.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from coreplane.core import commands as C
from coreplane.errors import InvalidArgument

__all__ = ["ROLES", "F", "Handler", "Handlers", "Route", "check_fields", "default_routes"]

ROLES = ("admin", "client", "agent")
_U63 = 2**63 - 1
_CLIENT_ID_BYTES_MAX = 128
_KEY_BYTES_MAX = 4096
_NAME_BYTES_MAX = 512
_RANGE_LIMIT_MAX = 10_000
_TIMEOUT_MS_MAX = 60_000
_WATCH_LIMIT_MAX = 10_000


# ------------------------------------------------------------------------------ validation


@dataclass(frozen=True, slots=True)
class F:
    """One body field: its type ("str", "int", "bool", "bytes"), default (None: required)."""

    kind: str
    default: Any = None
    max_bytes: int = 0  # str/bytes: 0 = no cap beyond the body's
    non_empty: bool = False


_SESSION = {"client_id": F("str", "", _CLIENT_ID_BYTES_MAX), "seq": F("int", 0)}
_TIMEOUT = {"timeout_ms": F("int", 0)}


def check_fields(body: Any, spec: Mapping[str, F]) -> dict[str, Any]:
    """The validated body, or InvalidArgument naming the first bad field."""
    if not isinstance(body, dict):
        raise InvalidArgument("body", "must be a map")
    if not body.keys() <= spec.keys():
        unknown = sorted(k for k in body if k not in spec)
        raise InvalidArgument(str(unknown[0])[:64], "unknown field")
    out: dict[str, Any] = {}
    for name, f in spec.items():
        if name not in body:
            if f.default is None:
                raise InvalidArgument(name, "missing")
            out[name] = f.default
            continue
        value = body[name]
        if f.kind == "int":
            if type(value) is not int or not 0 <= value <= _U63:
                raise InvalidArgument(name, "must be an integer in [0, 2**63)")
        elif f.kind == "bool":
            if type(value) is not bool:
                raise InvalidArgument(name, "must be true or false")
        elif f.kind == "str":
            if type(value) is not str:
                raise InvalidArgument(name, "must be a string")
            try:
                size = len(value.encode("utf-8"))
            except UnicodeEncodeError:
                raise InvalidArgument(name, "must be valid UTF-8") from None
            if f.max_bytes and size > f.max_bytes:
                raise InvalidArgument(name, f"over {f.max_bytes} bytes")
            if f.non_empty and not value:
                raise InvalidArgument(name, "must not be empty")
        elif f.kind == "bytes" and type(value) is not bytes:
            raise InvalidArgument(name, "must be bytes (base64 in JSON)")
        out[name] = value
    if out.get("seq") and not out.get("client_id"):
        raise InvalidArgument("client_id", "a seq needs a client_id")
    if out.get("client_id") and not out.get("seq"):
        raise InvalidArgument("seq", "a client_id needs a seq >= 1")
    if out.get("timeout_ms", 0) > _TIMEOUT_MS_MAX:
        raise InvalidArgument("timeout_ms", f"at most {_TIMEOUT_MS_MAX}")
    return out


def _session(body: dict[str, Any]) -> dict[str, Any]:
    cid = body["client_id"]
    return {"client_id": f"api:{cid}" if cid else "", "seq": body["seq"]}


def _timeout_s(body: dict[str, Any]) -> float | None:
    ms = body.get("timeout_ms", 0)
    return ms / 1000 if ms else None


Handler = Callable[[dict[str, Any]], Any]  # runs in the thread pool; returns plain data


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str
    roles: frozenset[str]
    spec: Mapping[str, F]
    handler: Handler
    bytes_fields: frozenset[str] = frozenset()
    long_poll: bool = False  # re-run the handler until it has "events" or wait_ms passes
    node_field: str = ""  # the body field naming a node: an agent may only name its own
    # The handler only checks and proposes (`Handlers._write`): with a pipelined ControlPlane
    # it never blocks, so the server runs it on its event loop, with no pool thread hop.
    inline: bool = False


EVERYONE = frozenset({"admin", "client", "agent"})
USERS = frozenset({"admin", "client"})
ADMIN = frozenset({"admin"})
_KEY = F("str", None, _KEY_BYTES_MAX, non_empty=True)
_NAME = F("str", None, _NAME_BYTES_MAX, non_empty=True)
_READ = {"stale_ok": F("bool", False), **_TIMEOUT}
_VALUE = {"value": F("bytes", None)}
_BYTES = frozenset({"value"})
_LEASE = {"lease_id": F("int", 0)}
_WRITE = {**_SESSION, **_TIMEOUT}


class Handlers:
    """Every built-in route's handler, over one ControlPlane (`cp`)."""

    def __init__(self, cp: Any, api_urls: Callable[[], dict[str, str]]) -> None:
        self.cp = cp
        self.api_urls = api_urls  # node id -> API URL, this node's included

    def _write(
        self, command: Any, body: dict[str, Any], shape: Callable[[Any], Any] = lambda value: value
    ) -> Any:
        """Propose `command`; the answer is ``shape(value)``. With a pipelined ControlPlane
        (`propose_async`) this returns a future at once, which the server awaits on its event
        loop, so a write in flight holds no pool thread; otherwise it blocks until applied."""
        propose_async = getattr(self.cp, "propose_async", None)
        if propose_async is None:
            return shape(self.cp.call_command(command, timeout_s=_timeout_s(body)))
        return propose_async(
            command, timeout_s=_timeout_s(body), transform=lambda applied: shape(applied.unwrap())
        )

    # -- kv ------------------------------------------------------------------------------

    def kv_get(self, b: dict[str, Any]) -> Any:
        """With a ControlPlane that reads without blocking (`read_async`), this runs on the
        server's loop: a `stale_ok` read or a leader's read under its lease is answered at
        once (a short read under the state lock), any other read is a future completed on
        the Raft thread once its read index is applied here; no pool thread either way."""
        if callable(getattr(self.cp, "read_async", None)):
            future = self.cp.kv.get_async(b["key"], stale_ok=b["stale_ok"], timeout_s=_timeout_s(b))
            if future.done():
                return _got(future.result())
            return _then(future, _got)
        return _got(self.cp.kv.get(b["key"], stale_ok=b["stale_ok"], timeout_s=_timeout_s(b)))

    def kv_range(self, b: dict[str, Any]) -> Any:
        if b["limit"] > _RANGE_LIMIT_MAX:
            raise InvalidArgument("limit", f"at most {_RANGE_LIMIT_MAX}")
        items = self.cp.kv.range(
            b["prefix"],
            limit=b["limit"] or _RANGE_LIMIT_MAX,
            stale_ok=b["stale_ok"],
            timeout_s=_timeout_s(b),
        )
        return {"items": [{"key": k, "value": v, "mod_revision": r} for k, v, r in items]}

    def kv_put(self, b: dict[str, Any]) -> Any:
        put = C.Put(key=b["key"], value=b["value"], lease_id=b["lease_id"], **_session(b))
        return self._write(put, b, lambda v: {"revision": v})

    def kv_cas(self, b: dict[str, Any]) -> Any:
        cas = C.Cas(
            key=b["key"],
            expected_mod_revision=b["expected_mod_revision"],
            value=b["value"],
            lease_id=b["lease_id"],
            **_session(b),
        )
        return self._write(cas, b, lambda v: {"revision": v})

    def kv_delete(self, b: dict[str, Any]) -> Any:
        return self._write(C.Delete(key=b["key"], **_session(b)), b, lambda v: {"deleted": v})

    def kv_watch(self, b: dict[str, Any]) -> Any:
        """One look at the local replica's history; the server long-polls it."""
        if not 1 <= b["limit"] <= _WATCH_LIMIT_MAX:
            raise InvalidArgument("limit", f"must be in [1, {_WATCH_LIMIT_MAX}]")
        if b["start_revision"] < 1:
            raise InvalidArgument("start_revision", "must be >= 1")

        def look(view: Any) -> Any:
            events, next_revision = view.kv.events(b["start_revision"], b["prefix"], b["limit"])
            return {
                "events": [
                    {"revision": rev, "type": kind, "key": key, "value": value}
                    for rev, kind, key, value, _mod in events
                ],
                "next_revision": next_revision,
                "revision": view.kv.revision,
            }

        return self.cp.read(look, stale_ok=True)

    # -- leases --------------------------------------------------------------------------

    def lease_grant(self, b: dict[str, Any]) -> Any:
        grant = C.LeaseGrant(ttl_ms=b["ttl_ms"], lease_id=b["lease_id"], **_session(b))
        return self._write(grant, b, lambda v: {"lease_id": v})

    def lease_keepalive(self, b: dict[str, Any]) -> Any:
        keep = C.LeaseKeepAlive(lease_id=b["lease_id"], **_session(b))
        return self._write(keep, b, lambda v: {"expires_ms": v})

    def lease_revoke(self, b: dict[str, Any]) -> Any:
        revoke = C.LeaseRevoke(lease_id=b["lease_id"], **_session(b))
        return self._write(revoke, b, lambda v: {"deleted_keys": v})

    # -- locks ---------------------------------------------------------------------------

    def lock_session(self, b: dict[str, Any]) -> Any:
        grant = C.LockSessionGrant(ttl_ms=b["ttl_ms"], session_id=b["session_id"], **_session(b))
        return self._write(grant, b, lambda v: {"session_id": v})

    def lock_keepalive(self, b: dict[str, Any]) -> Any:
        keep = C.LockSessionKeepAlive(session_id=b["session_id"], **_session(b))
        return self._write(keep, b, lambda v: {"expires_ms": v})

    def lock_close(self, b: dict[str, Any]) -> Any:
        close = C.LockSessionClose(session_id=b["session_id"], **_session(b))
        return self._write(close, b, lambda v: {"released": v})

    def lock_acquire(self, b: dict[str, Any]) -> Any:
        """Queue for a lock; with ``release`` (a lock name of the same session, and its own
        ``release_seq``), release that one first, in the same request: the SDK's deferred
        release rides on its next acquire (coreplane/sdk/lock.py), one round trip less per
        lock cycle. The pair is one `LockReleaseAcquire`, one log entry (a grant's token is
        that entry's index), applied exactly as the release then the acquire; the answer is
        the acquire's. The session's (client_id, seq) applies each part once: a retry of the
        request, or a release already applied on its own, is answered from the session. A
        refused release (not held any more) is no error: the acquire's answer says where the
        session is."""
        if not b["release"]:
            acquire = C.LockAcquire(name=b["name"], session_id=b["session_id"], **_session(b))
            return self._write(acquire, b)
        if not b["client_id"] or not b["release_seq"] or b["release_seq"] == b["seq"]:
            raise InvalidArgument("release_seq", "a release needs a client_id and its own seq")
        both = C.LockReleaseAcquire(
            release=b["release"],
            name=b["name"],
            session_id=b["session_id"],
            release_seq=b["release_seq"],
            **_session(b),
        )
        return self._write(both, b)

    def lock_release(self, b: dict[str, Any]) -> Any:
        return self._write(
            C.LockRelease(name=b["name"], session_id=b["session_id"], **_session(b)), b
        )

    def lock_describe(self, b: dict[str, Any]) -> Any:
        name, sid = b["name"], b["session_id"]

        def look(view: Any) -> Any:
            return {
                **view.locks.describe(name, sid),
                "session": view.locks.session(sid) if sid else None,
                "tick_ms": view.tick_ms,
            }

        return self.cp.read(look, stale_ok=b["stale_ok"], timeout_s=_timeout_s(b))

    # -- cluster -------------------------------------------------------------------------

    def status(self, _b: dict[str, Any]) -> Any:
        st = self.cp.status()
        return st.to_dict() if hasattr(st, "to_dict") else st  # NodeStatus -> plain

    def members(self, _b: dict[str, Any]) -> Any:
        cp = self.cp
        return {
            "node_id": cp.node_id,
            "leader": cp.leader_id or "",
            "members": cp.members(),
            "api": self.api_urls(),
        }

    def health(self, _b: dict[str, Any]) -> Any:
        cp = self.cp
        return {"node_id": cp.node_id, "leader": cp.leader_id or "", "is_leader": cp.is_leader()}

    def add_voter(self, b: dict[str, Any]) -> Any:
        self.cp.add_voter(b["node_id"], b["address"], timeout_s=_timeout_s(b))
        return {"members": self.cp.members()}

    def remove_voter(self, b: dict[str, Any]) -> Any:
        self.cp.remove_voter(b["node_id"], timeout_s=_timeout_s(b))
        return {"members": self.cp.members()}


def _got(got: tuple[bytes, int] | None) -> dict[str, Any]:
    if got is None:
        return {"found": False, "value": b"", "mod_revision": 0}
    return {"found": True, "value": got[0], "mod_revision": got[1]}


def _then(
    future: concurrent.futures.Future[Any], shape: Callable[[Any], Any]
) -> concurrent.futures.Future[Any]:
    """A future of ``shape(future's result)``, or of its exception."""
    out: concurrent.futures.Future[Any] = concurrent.futures.Future()
    out.set_running_or_notify_cancel()

    def done(f: concurrent.futures.Future[Any]) -> None:
        exc = f.exception()
        if exc is not None:
            out.set_exception(exc)
            return
        try:
            out.set_result(shape(f.result()))
        except BaseException as err:  # noqa: BLE001 - the future carries it
            out.set_exception(err)

    future.add_done_callback(done)
    return out


def _cluster_routes(h: Handlers) -> list[Route]:
    node = F("str", None, 128, True)
    return [
        Route("GET", "/v1/health", EVERYONE, {}, h.health),
        Route("GET", "/v1/status", EVERYONE, {}, h.status),
        Route("GET", "/v1/members", EVERYONE, {}, h.members),
        Route(
            "POST",
            "/v1/members/add",
            ADMIN,
            {"node_id": node, "address": F("str", None, 256, True), **_TIMEOUT},
            h.add_voter,
        ),
        Route("POST", "/v1/members/remove", ADMIN, {"node_id": node, **_TIMEOUT}, h.remove_voter),
    ]


def _kv_routes(h: Handlers) -> list[Route]:
    return [
        Route("POST", "/v1/kv/get", USERS, {"key": _KEY, **_READ}, h.kv_get),
        Route(
            "POST",
            "/v1/kv/range",
            USERS,
            {"prefix": F("str", None, _KEY_BYTES_MAX), "limit": F("int", 0), **_READ},
            h.kv_range,
        ),
        Route(
            "POST",
            "/v1/kv/put",
            USERS,
            {"key": _KEY, **_VALUE, **_LEASE, **_WRITE},
            h.kv_put,
            _BYTES,
        ),
        Route(
            "POST",
            "/v1/kv/cas",
            USERS,
            {"key": _KEY, "expected_mod_revision": F("int", None), **_VALUE, **_LEASE, **_WRITE},
            h.kv_cas,
            _BYTES,
        ),
        Route("POST", "/v1/kv/delete", USERS, {"key": _KEY, **_WRITE}, h.kv_delete),
        Route(
            "POST",
            "/v1/kv/watch",
            USERS,
            {
                "prefix": F("str", "", _KEY_BYTES_MAX),
                "start_revision": F("int", None),
                "limit": F("int", 1000),
                "wait_ms": F("int", 10_000),
            },
            h.kv_watch,
            long_poll=True,
        ),
    ]


def _lease_and_lock_routes(h: Handlers) -> list[Route]:
    session = {"session_id": F("int", None)}
    return [
        Route(
            "POST",
            "/v1/leases/grant",
            USERS,
            {"ttl_ms": F("int", None), **_LEASE, **_WRITE},
            h.lease_grant,
        ),
        Route(
            "POST",
            "/v1/leases/keepalive",
            USERS,
            {"lease_id": F("int", None), **_WRITE},
            h.lease_keepalive,
        ),
        Route(
            "POST",
            "/v1/leases/revoke",
            USERS,
            {"lease_id": F("int", None), **_WRITE},
            h.lease_revoke,
        ),
        Route(
            "POST",
            "/v1/locks/session",
            USERS,
            {"ttl_ms": F("int", None), "session_id": F("int", 0), **_WRITE},
            h.lock_session,
        ),
        Route("POST", "/v1/locks/keepalive", USERS, {**session, **_WRITE}, h.lock_keepalive),
        Route("POST", "/v1/locks/close", USERS, {**session, **_WRITE}, h.lock_close),
        Route(
            "POST",
            "/v1/locks/acquire",
            USERS,
            {
                "name": _NAME,
                **session,
                **_WRITE,
                "release": F("str", "", _NAME_BYTES_MAX),
                "release_seq": F("int", 0),
            },
            h.lock_acquire,
        ),
        Route(
            "POST", "/v1/locks/release", USERS, {"name": _NAME, **session, **_WRITE}, h.lock_release
        ),
        Route(
            "POST",
            "/v1/locks/describe",
            USERS,
            {"name": _NAME, "session_id": F("int", 0), **_READ},
            h.lock_describe,
        ),
    ]


def default_routes(h: Handlers) -> list[Route]:
    """The built-in routes (tests/api/test_api_fuzz.py throws bad input at every one)."""
    on_loop = {  # never block: writes are proposed, their futures awaited on the loop
        h.kv_put,
        h.kv_cas,
        h.kv_delete,
        h.lease_grant,
        h.lease_keepalive,
        h.lease_revoke,
        h.lock_session,
        h.lock_keepalive,
        h.lock_close,
        h.lock_acquire,
        h.lock_release,
    }
    if callable(getattr(h.cp, "read_async", None)):  # reads that never block (kv_get)
        on_loop.add(h.kv_get)
    routes = [*_cluster_routes(h), *_kv_routes(h), *_lease_and_lock_routes(h)]
    return [dataclasses.replace(r, inline=True) if r.handler in on_loop else r for r in routes]
