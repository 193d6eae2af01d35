"""Which requests may reach the model server: an exact allowlist, checked on the raw target.

Only the OpenAI-compatible routes a clinical application needs are let through, and only
in their one canonical spelling. The target is never decoded or normalised first: a
target that would mean something else after decoding (``%2e``, ``%2F``), after collapsing
slashes, resolving dots, or folding case is refused as a path trick (403), so vLLM's
unauthenticated routes (/invocations, /tokenize, /metrics, /docs, ...) cannot be reached
by any spelling. Anything else is unknown (404); a known route with the wrong method
is 405.

Example::

    >>> classify("POST", "/v1/chat/completions")
    Decision(status=200, route='/v1/chat/completions', reason='allowed')
    >>> classify("POST", "/v1/%2e%2e/invocations").status
    403
    >>> classify("GET", "/metrics").status
    404
"""

from __future__ import annotations

import re
from typing import NamedTuple

# route -> the one method it takes
ALLOWED = {
    "/v1/chat/completions": "POST",
    "/v1/completions": "POST",
    "/v1/embeddings": "POST",
    "/v1/models": "GET",
}
# Printable ASCII path characters that need no decoding: letters, digits, / - _ .
# Always matched whole (fullmatch): `$` would also match before a trailing newline.
CANONICAL = re.compile(r"/[A-Za-z0-9/_.-]*")
QUERY = re.compile(r"[A-Za-z0-9=&_.-]*")


class Decision(NamedTuple):
    status: int  # 200: allowed; else the refusal's status
    route: str | None  # the allowed route, when it is one
    reason: str  # short, for the record and the metrics


def trick(path: str) -> str | None:
    """Why `path` is not in canonical form (a path trick), or None."""
    if not CANONICAL.fullmatch(path):
        return "encoded or unexpected characters"
    if "//" in path:
        return "double slash"
    segments = path.split("/")
    if any(s in (".", "..") for s in segments):
        return "dot segment"
    if path != "/" and path.endswith("/"):
        return "trailing slash"
    if path.lower() in ALLOWED and path not in ALLOWED:
        return "case variant of an allowed route"
    return None


def classify(method: str, target: str) -> Decision:
    """Allow or refuse a request line's method and raw target."""
    path, _, query = target.partition("?")
    why = trick(path)
    if why is not None:
        return Decision(403, None, f"path trick: {why}")
    if query and not QUERY.fullmatch(query):
        return Decision(403, None, "path trick: encoded query")
    expected = ALLOWED.get(path)
    if expected is None:
        return Decision(404, None, "route not allowed")
    if method != expected:
        return Decision(405, path, f"method {method[:16]} not allowed on {path}")
    return Decision(200, path, "allowed")
