"""A local WebSocket endpoint that speaks Slack's Socket Mode: ``hello`` on connect, envelopes
pushed to the app, and the app's acknowledgements (``envelope_id``) collected.

Pair it with ``FakeSlack(socket_url=...)``, whose ``apps.connections.open`` hands the URL out.
"""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import struct
import threading
import uuid
from typing import Any

_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class FakeSocketMode:
    def __init__(self) -> None:
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen()
        self.url = f"ws://127.0.0.1:{self._listener.getsockname()[1]}/link"
        self.connected = threading.Event()
        self.acks: list[dict[str, Any]] = []
        self._client: socket.socket | None = None
        self._lock = threading.Lock()
        self._stopping = False
        threading.Thread(target=self._accept, daemon=True).start()

    # --- what tests do ------------------------------------------------------------------

    def push(self, kind: str, payload: dict[str, Any]) -> str:
        """Send an envelope (``slash_commands``, ``interactive``, ``events_api``)."""
        envelope_id = uuid.uuid4().hex
        self._send(json.dumps({"envelope_id": envelope_id, "type": kind, "payload": payload,
                               "accepts_response_payload": kind != "events_api"}))
        return envelope_id

    def acked(self, envelope_id: str) -> bool:
        with self._lock:
            return any(a.get("envelope_id") == envelope_id for a in self.acks)

    def stop(self) -> None:
        self._stopping = True
        self._listener.close()
        if self._client is not None:
            self._client.close()

    # --- the protocol -------------------------------------------------------------------

    def _accept(self) -> None:
        while not self._stopping:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            request = b""
            while b"\r\n\r\n" not in request:
                chunk = client.recv(4096)
                if not chunk:
                    break
                request += chunk
            key = next((line.split(":", 1)[1].strip() for line in
                        request.decode(errors="replace").split("\r\n")
                        if line.lower().startswith("sec-websocket-key:")), "")
            accept = base64.b64encode(hashlib.sha1((key + _GUID).encode()).digest()).decode()
            client.sendall((
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n").encode())
            with self._lock:
                self._client = client
            self._send(json.dumps({"type": "hello", "num_connections": 1,
                                   "connection_info": {"app_id": "A0FAKE"}}))
            self.connected.set()
            threading.Thread(target=self._read, args=(client,), daemon=True).start()

    def _send(self, text: str, opcode: int = 0x1) -> None:
        data = text.encode()
        header = bytes([0x80 | opcode])
        if len(data) < 126:
            header += bytes([len(data)])
        elif len(data) < 1 << 16:
            header += bytes([126]) + struct.pack("!H", len(data))
        else:
            header += bytes([127]) + struct.pack("!Q", len(data))
        with self._lock:
            assert self._client is not None, "no app is connected"
            self._client.sendall(header + data)

    def _read(self, client: socket.socket) -> None:
        def exactly(count: int) -> bytes:
            data = b""
            while len(data) < count:
                chunk = client.recv(count - len(data))
                if not chunk:
                    raise ConnectionError
                data += chunk
            return data

        try:
            while True:
                first, second = exactly(2)
                opcode, length = first & 0x0F, second & 0x7F
                if length == 126:
                    length = struct.unpack("!H", exactly(2))[0]
                elif length == 127:
                    length = struct.unpack("!Q", exactly(8))[0]
                mask = exactly(4) if second & 0x80 else b"\0\0\0\0"
                payload = bytes(b ^ mask[i % 4] for i, b in enumerate(exactly(length)))
                if opcode == 0x9:  # ping
                    self._send(payload.decode(errors="replace"), opcode=0xA)
                elif opcode == 0x8:  # close
                    return
                elif opcode == 0x1:
                    with self._lock:
                        self.acks.append(json.loads(payload))
        except (ConnectionError, OSError, ValueError):
            return
