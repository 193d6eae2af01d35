"""The gateway: clinical applications' only door to the model (standard library only).

An asyncio HTTPS server on the gateway host. It knows each caller by a per-client API key
(hashes rendered by the Vault agent), lets through only the OpenAI-compatible routes a
clinical client needs, enforces that client's limits, guards against protected health
information in prompts, forwards to the model server (a GPU host's keyguard, or vLLM on
this host) and streams the answer back as it comes. Every interaction, refused ones
included, becomes one HMAC-chained JSON line in the audit log (``citadel audit-log
verify`` checks the chain), also sent to the journal for a SIEM. Prometheus metrics are
served on a separate listener bound to loopback.

Modules: ``http1`` (a strict HTTP/1.1 parser with size and time bounds), ``connections``
(connection caps and deadlines), ``routes`` (the allowlist), ``clients`` (keys and limits),
``bodycheck`` (JSON types and output caps), ``phi`` (the linear-time PHI guard), ``screen``
(a body's checks in one call, run by ``offload``'s worker processes so that no request's CPU
work stalls the event loop), ``budget`` (per-source audit volume), ``auditlog`` (the chained,
durable record), ``upstream`` (the model server), ``content`` (optional sealed content),
``metrics``, ``inspect`` (the audit's view of a running gateway), and ``server`` (the
service itself: ``python3 -m citadel_runtime.gateway.server --config FILE``). The keyguard
on each GPU host reuses ``http1``, ``connections``, ``routes`` and ``upstream``.

Threats (docs/threat-model.md): unauthorised access and inference attacks
(keys, route allowlist, limits), data leakage of PHI (the guard, digests instead of content
in the record), lack of monitoring and accountability (the chained record, metrics).
"""
