"""The load generator: signed Slack requests sent as Slack sends them, timed from outside.

It shares the two cores with the servers it times, where Slack would not: it signs every
request before the clock starts and speaks HTTP on a bare socket, to take as little CPU from
them as it can.
"""

from __future__ import annotations

import gc
import json
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

from bot.fakes.slack import signed_headers


@dataclass(frozen=True)
class Sent:
    started: float
    """``time.monotonic()`` as the request left: one clock for every process of the machine."""
    seconds: float
    """Until the acknowledgement had arrived whole."""


def command(user: str, text: str, response_url: str) -> tuple[str, str]:
    """A signed-to-be ``/k8s-access`` body and its ``trigger_id``."""
    trigger = f"T{uuid.uuid4().hex}"
    return urlencode({"user_id": user, "command": "/k8s-access", "text": text,
                      "response_url": response_url, "trigger_id": trigger,
                      "team_id": "T"}), trigger


def click(user: str, action: str, value: str, response_url: str) -> tuple[str, str]:
    """A button click's body (in the approvers channel) and its ``trigger_id``."""
    trigger = f"T{uuid.uuid4().hex}"
    payload = {"type": "block_actions", "user": {"id": user}, "team": {"id": "T"},
               "trigger_id": trigger, "response_url": response_url,
               "channel": {"id": "C0REVIEW"},
               "actions": [{"type": "button", "action_id": action, "block_id": "b",
                            "value": value}]}
    return urlencode({"payload": json.dumps(payload)}), trigger


def send_all(endpoint: str | list[str], bodies: list[str], concurrency: int,
             keep_alive: bool = False) -> list[Sent]:
    """Send ``bodies`` ``concurrency`` at a time, each on a new connection or each client
    keeping its connection open (as an ingress proxy in front of the bot does). With several
    endpoints, the requests take turns among them, as a load balancer sends them."""
    endpoints = [endpoint] if isinstance(endpoint, str) else endpoint
    targets = []
    for n, body in enumerate(bodies):
        address = urlsplit(endpoints[n % len(endpoints)])
        targets.append(((address.hostname or "127.0.0.1", address.port or 80),
                        _raw_request(address.path, body, keep_alive)))
    clients = threading.local()
    opened: list[socket.socket] = []

    def send(target: tuple[tuple[str, int], bytes]) -> Sent:
        server, request = target
        started = time.monotonic()
        connections: dict[tuple[str, int], socket.socket] = getattr(clients, "connections", {})
        connection = connections.get(server)
        if connection is None:
            connection = socket.create_connection(server, timeout=30)
            if keep_alive:
                clients.connections = {**connections, server: connection}
                opened.append(connection)
        connection.sendall(request)
        status = _read_response(connection)
        if not keep_alive:
            connection.close()
        elapsed = time.monotonic() - started
        assert status == 200, status
        return Sent(started, elapsed)

    # The load generator's own full collections (its heap may hold the whole bot) would stall
    # whichever server it happens to be timing.
    gc.collect()
    gc.disable()
    try:
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            return list(pool.map(send, targets))
    finally:
        gc.enable()
        for connection in opened:
            connection.close()


def _raw_request(path: str, body: str, keep_alive: bool) -> bytes:
    payload = body.encode()
    headers = {**signed_headers(body), "host": "127.0.0.1", "content-length": str(len(payload)),
               "connection": "keep-alive" if keep_alive else "close"}
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    return f"POST {path} HTTP/1.1\r\n{head}\r\n".encode() + payload


def _read_response(connection: socket.socket) -> int:
    """Read one response whole; its status."""
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = connection.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection mid-response")
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    length = next((int(line.split(":", 1)[1]) for line in lines[1:]
                   if line.lower().startswith("content-length:")), 0)
    while len(body) < length:
        chunk = connection.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection mid-body")
        body += chunk
    return int(lines[0].split()[1])
