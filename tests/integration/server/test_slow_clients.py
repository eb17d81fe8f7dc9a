"""Slow clients do not take the fast server down (issue 14 case 8): hundreds of
connections that send part of a request's headers or body, with a valid (narrow) API
key, while real lookups are served; the read deadlines then close them.

The real server (``run_server``: uvicorn, two workers, real TCP) on the package's
served repository and Redis. The negative control runs the same attack against the
same server with the protections off: a lookup's in-flight slot held while its body
arrives (the accounting before the fix) and deadlines of an hour.
"""

from __future__ import annotations

import json
import resource
import socket
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from featurestream_app.stack import free_port
from tests.integration.server.client import Answer, call, columns, lookup, metric
from tests.integration.server.conftest import Served, entities_of
from tests.support import Background, wait_until

WORKERS = 2
MAX_IN_FLIGHT = 100
# One byte of a 1,000-byte lookup body, as in the issue, on every worker more connections
# than it has slots. Nothing spreads connections evenly over the workers (they accept
# from one socket), so the attack opens them until each worker holds its share.
SLOW_BODIES_PER_WORKER = 150
MOST_SLOW_BODIES = 3_000
SLOW_HEADERS = 100  # the request line and one header, never the end of the headers
UNREAD_BODIES = 50  # a GET /health with a body it never finishes: answered, then left open
DEADLINE_S = 10.0  # the protected server's header and body timeouts
REAL_LOOKUPS = 30
SLOW_KEY = "k-slow-but-valid"  # a key granted one feature service only
REAL_KEY = "k-real-recommender"
AUTH_SLOW = f"Authorization: Bearer {SLOW_KEY}\r\n".encode()

# The server of these tests, run as a script: its workers (uvicorn spawns them) import
# it again as __mp_main__, so the negative control's patch applies in every worker.
SERVER = """
import json, sys
from pathlib import Path

from featurestream.errors import Overloaded
from serving import ServerSettings, parse_api_keys, run_server
from serving.app import FeatureServer

cfg = json.loads(sys.argv[1])
if cfg["slot_while_reading"]:
    # The accounting before the fix: a lookup holds its in-flight slot while its body
    # arrives.
    read_body = FeatureServer._read_body

    async def read_body_in_a_slot(self, headers, receive, watch):
        if self._in_flight >= self.settings.max_in_flight:
            raise Overloaded(f"{self._in_flight} lookups in flight")
        self._in_flight += 1
        try:
            return await read_body(self, headers, receive, watch)
        finally:
            self._in_flight -= 1

    FeatureServer._read_body = read_body_in_a_slot

if __name__ == "__main__":
    run_server(
        Path(cfg["repo"]), cfg["redis_url"], host="127.0.0.1", port=cfg["port"],
        workers=cfg["workers"],
        settings=ServerSettings(
            **cfg["settings"], api_keys=parse_api_keys(json.dumps(cfg["api_keys"]))
        ),
        log_level="warning",
    )
"""


@dataclass
class SlowClient:
    kind: str
    sock: socket.socket
    received: bytearray = field(default_factory=bytearray)
    closed: bool = False

    def poll(self) -> None:
        """Read what the server sent; note when it closed the connection."""
        while not self.closed:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return
            except OSError:  # reset by the server
                self.closed = True
                return
            if not data:
                self.closed = True
            self.received += data

    def answer(self) -> tuple[int, dict[str, Any] | None]:
        """The status and JSON body the server answered (0 and None: nothing)."""
        if not self.received:
            return 0, None
        head, _, body = bytes(self.received).partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        return status, json.loads(body) if body else None


def enough_file_descriptors(count: int) -> None:
    """Raise this process's (and its children's) open-file limit to fit ``count`` sockets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = count + 1024
    if soft < want:
        if hard != resource.RLIM_INFINITY and hard < want:
            pytest.fail(f"the open-file limit is {hard}; these tests need {want} (ulimit -n)")
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def worker_of(sock: socket.socket) -> str:
    """Which worker serves this connection: a GET /health on it, the worker's pid being
    the first part of the request id it answers (kept alive for what follows)."""
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        assert chunk, "the server closed the connection instead of answering /health"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    fields = dict(line.split(b": ", 1) for line in head.split(b"\r\n")[1:] if b": " in line)
    while len(body) < int(fields[b"content-length"]):
        body += sock.recv(4096)
    return fields[b"x-request-id"].decode().split("-")[0]


def open_slow_clients(port: int) -> list[SlowClient]:
    """The attack: every kind of slow connection, each sent what it will ever send."""
    slow_body = (
        b"POST /get-online-features HTTP/1.1\r\nHost: x\r\n"
        + AUTH_SLOW
        + b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"
    )
    sends = {
        "headers": b"POST /get-online-features HTTP/1.1\r\nHost: x\r\n" + AUTH_SLOW,
        "unread": b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{",
    }
    clients = []
    per_worker: Counter[str] = Counter()
    while len(per_worker) < WORKERS or min(per_worker.values()) < SLOW_BODIES_PER_WORKER:
        assert len(clients) < MOST_SLOW_BODIES, f"connections per worker: {per_worker}"
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        per_worker[worker_of(sock)] += 1
        sock.sendall(slow_body)
        sock.setblocking(False)
        clients.append(SlowClient("body", sock))
    for kind, count in (("headers", SLOW_HEADERS), ("unread", UNREAD_BODIES)):
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.sendall(sends[kind])
            sock.setblocking(False)
            clients.append(SlowClient(kind, sock))
    return clients


@contextmanager
def slow_clients(port: int) -> Iterator[list[SlowClient]]:
    clients = open_slow_clients(port)
    try:
        yield clients
    finally:
        for client in clients:
            client.sock.close()


def still_open(clients: list[SlowClient]) -> int:
    for client in clients:
        client.poll()
    return sum(not c.closed for c in clients)


def start_server(
    served: Served, tmp: Path, *, deadline_s: float, slot_while_reading: bool
) -> tuple[Background, str, int]:
    port = free_port()
    script = tmp / "slow_clients_server.py"
    script.write_text(SERVER)
    cfg = {
        "repo": str(served.repo),
        "redis_url": served.stack.online_redis_url,
        "port": port,
        "workers": WORKERS,
        "slot_while_reading": slot_while_reading,
        "settings": {
            "max_in_flight": MAX_IN_FLIGHT,
            "redis_timeout_ms": 5_000,  # not what this test tests
            "header_timeout_s": deadline_s,
            "body_timeout_s": deadline_s,
        },
        "api_keys": {SLOW_KEY: ["fraud_v1"], REAL_KEY: ["recommender_v1"]},
    }
    server = Background([sys.executable, str(script), json.dumps(cfg)], tmp / "server.log")
    base = f"http://127.0.0.1:{port}"
    seen: set[str] = set()

    def every_worker_answers() -> bool:  # /ready answers once the first one does
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            seen.add(worker_of(sock))
        return len(seen) == WORKERS

    try:
        server.wait_http(f"{base}/ready")
        wait_until(every_worker_answers, 120, f"{WORKERS} workers (log: {server.log})")
    except BaseException:
        server.stop()
        raise
    return server, base, port


def real_lookups(served: Served, base: str) -> list[Answer | None]:
    """Lookups of a real client, each on a new connection (None: no answer in 10 s)."""
    body = {"feature_service": "recommender_v1", "entities": entities_of(served)}
    answers: list[Answer | None] = []
    for _ in range(REAL_LOOKUPS):
        try:
            answers.append(
                lookup(base, body, headers={"Authorization": f"Bearer {REAL_KEY}"}, timeout=10)
            )
        except OSError:
            answers.append(None)
    return answers


@pytest.fixture()
def fds() -> None:
    enough_file_descriptors(MOST_SLOW_BODIES + SLOW_HEADERS + UNREAD_BODIES)


@pytest.mark.usefixtures("fds")
def test_slow_clients_neither_starve_lookups_nor_stay_connected(
    served: Served, tmp_path: Path
) -> None:
    server, base, port = start_server(
        served, tmp_path, deadline_s=DEADLINE_S, slot_while_reading=False
    )
    try:
        with slow_clients(port) as clients:
            answers = real_lookups(served, base)
            # the lookups were served while every slow connection was open
            assert still_open(clients) == len(clients)
            assert [a.status if a else None for a in answers] == [200] * REAL_LOOKUPS
            undisturbed = lookup(
                served.fast, {"feature_service": "recommender_v1", "entities": entities_of(served)}
            )
            assert answers[0] is not None
            assert columns(answers[0].body) == columns(undisturbed.body)

            # then the deadlines close every slow connection
            wait_until(lambda: still_open(clients) == 0, DEADLINE_S + 60, "slow clients closed")
            by_kind: dict[str, list[tuple[int, str | None]]] = {}
            for client in clients:
                status, body = client.answer()
                code = body["error"]["code"] if body and "error" in body else None
                by_kind.setdefault(client.kind, []).append((status, code))
            assert set(by_kind["body"]) == {(408, "body_timeout")}
            assert set(by_kind["headers"]) == {(408, "header_timeout")}
            assert set(by_kind["unread"]) == {(200, None)}  # answered, then closed
            # counted by whichever worker answers the scrape (each had its share)
            text = call(base, "/metrics").body
            timed_out = metric(text, "featurestream_serving_errors_total", code="body_timeout")
            assert timed_out >= SLOW_BODIES_PER_WORKER
        assert [a.status if a else None for a in real_lookups(served, base)] == [200] * REAL_LOOKUPS
    finally:
        server.stop()


@pytest.mark.usefixtures("fds")
def test_negative_control_slots_held_while_reading_and_no_deadlines(
    served: Served, tmp_path: Path
) -> None:
    server, base, port = start_server(served, tmp_path, deadline_s=3_600, slot_while_reading=True)
    try:
        with slow_clients(port) as clients:
            answers = real_lookups(served, base)
            assert still_open(clients) == len(clients)
            # starved: every lookup refused (503) or unanswered
            assert all(a is None or a.status == 503 for a in answers), [
                a.status if a else None for a in answers
            ]
            # for as long as they stay open: twice the protected server's deadlines later
            # (nothing to poll for: the point is that nothing happens)
            time.sleep(2 * DEADLINE_S)
            assert still_open(clients) == len(clients)
            later = [a.status if a else None for a in real_lookups(served, base)]
            assert all(status in (None, 503) for status in later), later
        # closed by the clients themselves: served again
        wait_until(
            lambda: all(a is not None and a.status == 200 for a in real_lookups(served, base)),
            60,
            "lookups served once the slow clients left",
        )
    finally:
        server.stop()
