"""A client of the feature servers under test: HTTP calls, answers, the servers' processes.

Shared by the server test modules of this package (no fixtures here: ``conftest.py``
holds them).
"""

from __future__ import annotations

import json
import re
import ssl
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from featurestream_app.stack import free_port
from tests.support import Background

__all__ = [
    "FAST_SERVER",
    "INSECURE",
    "Answer",
    "call",
    "columns",
    "expect_error",
    "fast_server",
    "lookup",
    "metric",
]

FAST_SERVER = """
import json, sys
from pathlib import Path
from serving import ServerSettings, parse_api_keys, run_server
cfg = json.loads(sys.argv[1])
settings = dict(cfg.get("settings", {}))
if "api_keys" in cfg:
    settings["api_keys"] = parse_api_keys(json.dumps(cfg["api_keys"]))
run_server(
    Path(cfg["repo"]), cfg["redis_url"], host="127.0.0.1", port=cfg["port"],
    workers=cfg.get("workers", 1), settings=ServerSettings(**settings),
    ssl_keyfile=Path(cfg["key"]) if cfg.get("key") else None,
    ssl_certfile=Path(cfg["cert"]) if cfg.get("cert") else None,
    log_level="warning",
)
"""


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: Any
    seconds: float


def call(
    base: str,
    path: str,
    body: Any = None,
    *,
    headers: dict[str, str] | None = None,
    method: str | None = None,
    context: ssl.SSLContext | None = None,
    timeout: float = 10,
) -> Answer:
    data = None
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(
        base + path,
        data=data,
        headers={"Content-Type": "application/json", **(headers or {})},
        method=method or ("POST" if data is not None else "GET"),
    )
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            status, raw, got = response.status, response.read(), response.headers
    except urllib.error.HTTPError as err:
        status, raw, got = err.code, err.read(), err.headers
    seconds = time.monotonic() - started
    lowered = {k.lower(): v for k, v in got.items()}
    parsed = json.loads(raw) if "json" in lowered.get("content-type", "") else raw.decode()
    return Answer(int(status), lowered, parsed, seconds)


def lookup(base: str, body: Any, **kw: Any) -> Answer:
    return call(base, "/get-online-features", body, **kw)


INSECURE = ssl.create_default_context()
INSECURE.check_hostname = False
INSECURE.verify_mode = ssl.CERT_NONE


def fast_server(
    tmp: Path, repo: Path, redis_url: str, *, port: int | None = None, **config: Any
) -> tuple[Background, str]:
    port = port or free_port()
    # A generous online-store deadline unless a test sets its own: the server's 50 ms
    # default can be missed on a loaded machine, which is not what these tests test.
    config.setdefault("settings", {"redis_timeout_ms": 5_000})
    cfg = {"repo": str(repo), "redis_url": redis_url, "port": port, **config}
    server = Background(
        [sys.executable, "-c", FAST_SERVER, json.dumps(cfg)], tmp / f"fast-{port}.log"
    )
    scheme = "https" if cfg.get("cert") else "http"
    return server, f"{scheme}://127.0.0.1:{port}"


def columns(answer: dict[str, Any]) -> dict[str, Any]:
    names = answer["metadata"]["feature_names"]
    assert len(names) == len(set(names)) == len(answer["results"])
    return dict(zip(names, answer["results"], strict=True))


def metric(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = re.escape(name) + (r"\{" + re.escape(want) + r"\}" if want else "") + r" (\S+)"
    match = re.search(r"^" + pattern + r"$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def expect_error(answer: Answer, status: int, code: str, *needles: str) -> None:
    assert answer.status == status, answer.body
    error = answer.body["error"]
    assert error["code"] == code
    assert error["request_id"] == answer.headers["x-request-id"]
    for needle in needles:
        assert needle in error["message"], error["message"]
    assert "Traceback" not in json.dumps(answer.body)
