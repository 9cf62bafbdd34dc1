"""Node addresses: the one parser for ``host:port`` that configuration and the wire share.

Two spellings of one endpoint ("127.0.0.1:05000", "localhost:5000", a port in Unicode digits)
once passed a duplicate-address check as two strings, so parsing is strict (ASCII digits, no
leading zero, a literal or a DNS name) and `endpoint_key` gives the one canonical form that
duplicate checks compare. Pure: no DNS lookups, no sockets.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re

from coreplane.errors import InvalidArgument

__all__ = ["endpoint_key", "parse_address"]

_PORT = re.compile(r"^(0|[1-9][0-9]{0,4})$")
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}"
    r"[A-Za-z0-9])?)*$"
)
_LOOPBACK_NAMES = {"localhost": "127.0.0.1", "localhost.localdomain": "127.0.0.1"}


def parse_address(value: object, field: str, *, port_zero_ok: bool = False) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` -> (host, port), host without brackets.

    The host is an IPv4 or IPv6 literal or a DNS name; the port is ASCII digits without a
    leading zero, in 1..65535 (0 too with `port_zero_ok`, for "any free port").
    `InvalidArgument` names `field` and says what is wrong.
    """
    if not isinstance(value, str) or ":" not in value:
        raise InvalidArgument(field, f"{value!r} is not 'host:port'")
    host, _, port_text = value.rpartition(":")
    if not _PORT.match(port_text) or not (0 if port_zero_ok else 1) <= int(port_text) <= 65535:
        raise InvalidArgument(
            field,
            f"{value!r}: the port must be an integer in "
            f"{0 if port_zero_ok else 1}..65535 in ASCII digits, "
            "without a leading zero",
        )
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise InvalidArgument(field, f"{value!r}: bad IPv6 address {host!r}") from None
        return host[1:-1], int(port_text)
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        if not host.isascii() or not _HOSTNAME.match(host) or host.replace(".", "").isdigit():
            raise InvalidArgument(
                field,
                f"{value!r}: bad host {host!r} (an IPv4 literal, [an IPv6 literal] or a DNS name)",
            ) from None
    return host, int(port_text)


def endpoint_key(value: str) -> tuple[str, int]:
    """The canonical (host, port) of a parsed address, for telling endpoints apart: names
    lower-cased, localhost as 127.0.0.1, IPv6 compressed."""
    host, port = parse_address(value, "address", port_zero_ok=True)
    host = host.lower()
    host = _LOOPBACK_NAMES.get(host, host)
    with contextlib.suppress(ValueError):
        host = str(ipaddress.ip_address(host))
    return host, port
