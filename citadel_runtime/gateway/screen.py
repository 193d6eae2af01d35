"""What the gateway decides about an admitted request's body, in one pure step.

In this order: the body parses as JSON within its depth bound, its fields have their types
(400 with the field named), it names a model the client may use (403), its outputs are
within the client's caps (400, or clamped where the policy says so), and the PHI guard
counts, redacts or refuses (422 in block mode) what it finds. The answer (`Screened`) is
small: the verdict, what goes into the record, and the body to forward only when it
changed (a length set or clamped, identifiers redacted).

Pure and picklable both ways, so the server runs it on its event loop for small bodies and
in a worker process for large ones (``offload``): a 1 MiB prompt never stalls other clients.

Example::

    >>> from citadel_runtime.gateway.clients import Policy
    >>> policy = Policy(models=["tiny"], max_tokens=16, phi="redact")
    >>> s = screen("/v1/completions", b'{"model": "tiny", "prompt": "SSN 123-45-6789"}', policy)
    >>> s.status, s.phi, json.loads(s.body)["prompt"], json.loads(s.body)["max_tokens"]
    (200, {'ssn': 1}, 'SSN [SSN]', 16)
    >>> screen("/v1/chat/completions", b'{"model": "tiny", "messages": 1}', policy).status
    400
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from citadel_runtime.gateway import phi
from citadel_runtime.gateway.bodycheck import LENGTH_FIELDS, cap_outputs, check_types, parse_json
from citadel_runtime.gateway.clients import Policy

GENERATING = ("/v1/chat/completions", "/v1/completions")  # the routes whose outputs are capped


@dataclass
class Screened:
    status: int  # 200: forward it; else the refusal's status
    reason: str
    sha256: str  # of the body as the client sent it
    model: str | None = None
    stream: bool = False
    phi: dict[str, int] = field(default_factory=dict)
    clamped: list[str] = field(default_factory=list)  # output fields lowered to the client's caps
    output_tokens: int | None = None  # the most tokens the request may now generate in all
    body: bytes | None = None  # the body to forward, when it differs from the one sent
    body_sha256: str | None = None  # ... and its digest (hashed here: off the event loop for large bodies)


def screen(route: str, raw: bytes, policy: Policy) -> Screened:
    """The verdict on one request body for this client (see the module's docstring)."""
    out = Screened(200, "allowed", hashlib.sha256(raw).hexdigest())
    try:
        body = parse_json(raw)
    except ValueError as exc:
        return _refused(out, 400, str(exc))
    refusal = check_types(route, body)
    if refusal:
        return _refused(out, 400, refusal)
    out.model = body["model"]
    if out.model not in policy.models:
        return _refused(out, 403, "model not allowed for this client")
    out.stream = body.get("stream") is True
    changed, unnamed = False, not any(name in body for name in LENGTH_FIELDS)
    if route in GENERATING:
        caps = cap_outputs(body, policy.max_tokens, max_choices=policy.max_choices, clamp=policy.clamp_outputs)
        if caps.refusal:
            return _refused(out, 400, caps.refusal)
        out.clamped, out.output_tokens, changed = caps.clamped, caps.total_tokens, caps.changed
    try:
        out.phi, redacted = phi.guard(body, policy.phi)
    except ValueError as exc:  # phi.BodyTooComplex: more strings or depth than the guard reads
        return _refused(out, 400, str(exc))
    if out.phi and policy.phi == "block":
        return _refused(out, 422, "protected health information in the request: " + ", ".join(sorted(out.phi)))
    if changed and unnamed and not (redacted or out.clamped):
        # Only the length fields were set (the body named neither): cheaper than serialising it all again.
        out.body = with_fields(raw, body, LENGTH_FIELDS)
    elif changed or redacted:
        out.body = json.dumps(body).encode()
    if out.body is not None:
        out.body_sha256 = hashlib.sha256(out.body).hexdigest()
    return out


def with_fields(raw: bytes, body: dict, names: tuple[str, ...]) -> bytes:
    """The JSON object `raw` with the fields `names` (absent from it) added as `body` has them.

    Cheaper than serialising a large body again; used only for fields the raw body did not
    name at all (not even as null), so no field is ever given twice.
    """
    start = raw.index(b"{") + 1
    added = b"".join(json.dumps(name).encode() + b":" + json.dumps(body[name]).encode() + b"," for name in names)
    return raw[:start] + added + raw[start:]


def _refused(out: Screened, status: int, reason: str) -> Screened:
    out.status, out.reason = status, reason
    return out
