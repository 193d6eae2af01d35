"""A test client for the gateway: plain requests and a concurrent load run (asyncio, keep-alive).

Talks real HTTPS to the gateway on a lab host, verified against Citadel's PKI CA. The load
run counts what each request got: an answer (its status) or none (the connection broke
without a complete response), and keeps each answer's X-Request-Id to match the record.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import ssl
from collections import Counter

from citadel_runtime.layout import GATEWAY_PORT


def context(ca_pem: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cadata=ca_pem)
    return ctx


def request(address: str, ca_pem: str, method: str, path: str, key: str | None = None, body=None,
            raw_body: bytes | None = None, timeout: float = 60) -> tuple[int, dict, bytes]:
    """One request on its own connection: (status, headers, body)."""
    connection = http.client.HTTPSConnection(address, GATEWAY_PORT, context=context(ca_pem), timeout=timeout)
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    data = raw_body if raw_body is not None else (json.dumps(body).encode() if body is not None else None)
    try:
        connection.putrequest(method, path, skip_accept_encoding=True)  # the path exactly as given
        for name, value in headers.items():
            connection.putheader(name, value)
        if data is not None:
            connection.putheader("Content-Length", str(len(data)))
        connection.endheaders(data)
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, dict, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name:
            headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    else:
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                break
            parts.append((await reader.readexactly(size + 2))[:-2])
        body = b"".join(parts)
    return status, headers, body


async def _load(address: str, ca_pem: str, key: str, total: int, concurrency: int, bodies, on_progress,
                rate: float | None) -> dict:
    ctx = context(ca_pem)
    statuses: Counter = Counter()
    ids: list[str] = []
    broken: list[str] = []
    next_index = 0
    lock = asyncio.Lock()

    async def worker():
        nonlocal next_index
        conn = None
        while True:
            async with lock:
                if next_index >= total:
                    break
                index = next_index
                next_index += 1
            method, path, body = bodies(index)
            data = json.dumps(body).encode() if body is not None else b""
            head = (f"{method} {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {key}\r\n"
                    f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n").encode()
            try:
                if conn is None:
                    conn = await asyncio.wait_for(asyncio.open_connection(address, GATEWAY_PORT, ssl=ctx), 30)
                reader, writer = conn
                writer.write(head + data)
                await writer.drain()
                status, headers, _ = await asyncio.wait_for(_read_response(reader), 180)
                statuses[status] += 1
                ids.append(headers.get("x-request-id", ""))
                if headers.get("connection", "").lower() == "close":
                    writer.close()
                    conn = None
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError, ssl.SSLError) as exc:
                broken.append(f"request {index}: {type(exc).__name__}: {exc}"[:200])
                if conn:
                    conn[1].close()
                conn = None
            on_progress(len(ids) + len(broken))
            if rate:
                await asyncio.sleep(concurrency / rate)  # paced, so the run spans the restarts
        if conn:
            conn[1].close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return {"statuses": dict(statuses), "ids": ids, "broken": broken}


def load(address: str, ca_pem: str, key: str, total: int, concurrency: int, bodies, on_progress=lambda n: None,
         rate: float | None = None) -> dict:
    """`total` requests over `concurrency` keep-alive connections; `bodies(i)` -> (method, path, body).

    `rate`: about that many requests a second in all (None: as fast as answers come)."""
    return asyncio.run(_load(address, ca_pem, key, total, concurrency, bodies, on_progress, rate))
