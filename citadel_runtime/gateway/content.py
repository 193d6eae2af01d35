"""Full content in the record, for the clients the inventory names, and then only encrypted.

A record normally holds digests of the bodies. For a client with ``record_content: true``
the request and response bodies (each up to ``LIMIT`` bytes; longer ones are cut and
marked) go into the record's ``content`` field, sealed with AES-256-GCM under the content
key from Vault (``gateway/content-key``, rendered by the agent; not the audit-log HMAC key,
so who can verify the log cannot read what patients said). The record's ``request_id`` is the
associated data, so a sealed body cannot be moved to another record. The chain's MAC covers
the ciphertext like every other field. ``citadel audit-log show --decrypt`` opens it.

Uses python3-cryptography (Debian's package), imported only when a client records content.

Example::

    >>> key = bytes(32)
    >>> sealed = seal(key, "req-1", b'{"prompt": "x"}', b'{"ok": 1}')
    >>> open_sealed(key, "req-1", sealed)["request"]
    '{"prompt": "x"}'
"""

from __future__ import annotations

import base64
import json
import os

LIMIT = 256 * 1024


def _clip(data: bytes) -> tuple[str, bool]:
    return data[:LIMIT].decode("utf-8", errors="replace"), len(data) > LIMIT


def seal(key: bytes, request_id: str, request: bytes, response: bytes) -> dict:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    req, req_cut = _clip(request)
    resp, resp_cut = _clip(response)
    plain = json.dumps({"request": req, "response": resp, "truncated": req_cut or resp_cut}).encode()
    nonce = os.urandom(12)
    sealed = AESGCM(key).encrypt(nonce, plain, request_id.encode())
    return {"alg": "AES-256-GCM", "nonce": base64.b64encode(nonce).decode(), "data": base64.b64encode(sealed).decode()}


def open_sealed(key: bytes, request_id: str, content: dict) -> dict:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    nonce, data = base64.b64decode(content["nonce"]), base64.b64decode(content["data"])
    return json.loads(AESGCM(key).decrypt(nonce, data, request_id.encode()))


def read_key(path: str) -> bytes:
    with open(path, encoding="utf-8") as handle:
        value = json.load(handle).get("value") or ""
    key = bytes.fromhex(value)
    if len(key) != 32:
        raise ValueError(f"{path}: the content key must be 32 bytes (64 hex digits)")
    return key
