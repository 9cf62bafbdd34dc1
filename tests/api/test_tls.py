"""TLS: an ApiServer given an ssl context serves https only, and the SDK verifies it."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from pathlib import Path

import httpx
import pytest

from coreplane.api.server import ApiServer
from coreplane.errors import PermissionDenied
from coreplane.sdk import Client, LongRunningConfig
from tests.api.local import CLIENT, TOKENS, LocalControlPlane

FAST = LongRunningConfig(max_attempts=1, health_check_interval_ms=0)


@pytest.fixture
def cert(tmp_path: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    key, crt = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(crt),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return key, crt


def test_https_with_a_verified_certificate(cert: tuple[Path, Path]) -> None:
    key, crt = cert
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(crt, key)
    with ApiServer(
        LocalControlPlane(), "127.0.0.1:0", tokens=TOKENS, ssl_context=context
    ) as server:
        assert server.url.startswith("https://")
        trusted = ssl.create_default_context(cafile=str(crt))
        with Client([server.url], CLIENT, FAST, verify=trusted) as c:
            assert c.get("k", stale_ok=True) is None
            assert c.put("k", b"v") > 0
        config = FAST.with_(max_attempts=3)
        with Client([server.url], CLIENT, config) as untrusted:
            with pytest.raises(PermissionDenied, match="not trusted"):
                untrusted.get("k")  # the system CAs do not know it: not retried, no breaker
            assert untrusted.endpoints.breakers[server.url].failures == 0
        with pytest.raises(httpx.HTTPError):  # no plain http on the TLS port
            httpx.get(server.url.replace("https://", "http://") + "/v1/health", timeout=5)
