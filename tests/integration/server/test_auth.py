"""API keys with per-service grants, TLS, and two worker processes."""

from __future__ import annotations

import ssl
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.server.client import (
    Answer,
    call,
    expect_error,
    fast_server,
    lookup,
)
from tests.integration.server.conftest import USERS, Served, entities_of

KEYS = {
    "k-recsys-000001": ["recommender_v1"],
    "k-analyst-00001": ["features"],
    "k-pii-000000001": ["pii"],
    "k-admin-0000001": "*",
}


@pytest.fixture(scope="module")
def secured(served: Served) -> Iterator[tuple[str, ssl.SSLContext]]:
    key, cert = served.tmp / "key.pem", served.tmp / "cert.pem"
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
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    server, base = fast_server(
        served.tmp,
        served.repo,
        served.stack.online_redis_url,
        workers=2,
        api_keys=KEYS,
        key=str(key),
        cert=str(cert),
    )
    try:
        server.wait_http(f"{base}/ready")
        yield base, ssl.create_default_context(cafile=str(cert))
    finally:
        server.stop()


def test_api_keys_grant_services_features_and_pii(
    served: Served, secured: tuple[str, ssl.SSLContext]
) -> None:
    base, tls = secured

    def ask(body: Any, **headers: str) -> Answer:
        return lookup(base, body, headers=headers, context=tls)

    service = {"feature_service": "recommender_v1", "entities": entities_of(served)}
    fraud = {**service, "feature_service": "fraud_v1"}
    plain = {
        "features": ["user_click_stats:clicks_last_1h", "ctr_1h:ctr_1h"],
        "entities": {"user_id": USERS},
    }
    pii = {"features": ["user_profile:country"], "entities": {"user_id": USERS}}

    answer = ask(service)
    expect_error(answer, 401, "unauthenticated", "Authorization: Bearer")
    assert answer.headers["www-authenticate"].startswith("Bearer")
    expect_error(
        ask(service, Authorization="Bearer k-recsys-000002"), 401, "unauthenticated", "not valid"
    )

    assert ask(service, Authorization="Bearer k-recsys-000001").status == 200
    expect_error(ask(fraud, Authorization="Bearer k-recsys-000001"), 403, "forbidden", "'fraud_v1'")
    expect_error(
        ask(plain, Authorization="Bearer k-recsys-000001"), 403, "forbidden", "raw feature lists"
    )

    assert ask(plain, **{"X-API-Key": "k-analyst-00001"}).status == 200
    expect_error(
        ask(pii, **{"X-API-Key": "k-analyst-00001"}), 403, "forbidden", "user_profile (tagged pii)"
    )
    assert ask(pii, **{"X-API-Key": "k-pii-000000001"}).status == 200
    assert ask(fraud, Authorization="Bearer k-admin-0000001").status == 200

    # served over TLS only; the listing needs a key, the probes do not
    with pytest.raises(urllib.error.URLError):
        call(base, "/health", context=ssl.create_default_context())  # unknown CA
    assert call(base, "/health", context=tls).status == 200
    assert call(base, "/features", context=tls).status == 401
    assert (
        call(base, "/features", headers={"X-API-Key": "k-analyst-00001"}, context=tls).status == 200
    )
