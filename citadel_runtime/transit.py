"""Unwrap a key through Vault's transit ``decrypt`` with the host's own token, waiting while Vault is away.

Used at boot by ``citadel_runtime.unseal`` (a model's data key) and
``citadel_runtime.store_unlock`` (the store volume's key). The token is the one the host's
Vault agent keeps in its sink (settings ``token_file``), read again at every try; Vault is
``vault_address``, verified with the CA in ``vault_ca``. The key is returned, never written.

Waited out, one journal line per wait (:func:`citadel_runtime.waits.wait_for`), because the
host fixes them itself or Vault comes back:

- no token yet: the sink file is absent or empty (the agent has not logged in since boot);
- Vault unreachable: connection refused or reset, a timeout, a name that does not resolve
  yet, no route yet, a TLS handshake cut short, a certificate not valid *yet* or *any more*
  (at boot the clock may not be set yet);
- Vault there but unable to answer now: HTTP 5xx (503: sealed or standby), 429, 412;
- a stale token: HTTP 403, and Vault no longer accepts the token at all (``auth/token/
  lookup-self`` is refused too: it expired or was revoked while the agent was cut off);
  the agent logs in again and writes a new one, which the next try reads.

Refused at once (:class:`TransitError`), because retrying changes nothing until someone
changes something:

- HTTP 403 with a token Vault still accepts: the host's policy does not allow this
  decrypt (another mount, another key);
- any other 4xx: 400 (not a ciphertext of this key, no such key), 404 (no such mount);
- a certificate that does not verify for another reason (another CA, another name), a CA
  file that cannot be read, a token file that cannot be read (permissions, a directory);
- an answer that holds no 32-byte key.

The stale-token test needs ``auth/token/lookup-self``, which Vault's ``default`` policy
allows; Citadel's host tokens carry it (their roles do not set ``token_no_default_policy``).
No message carries the token or the key.

Example::

    from citadel_runtime.transit import unwrap

    key = unwrap(settings, manifest.wrapped_key, "model-data", key_name="the data key")
"""

from __future__ import annotations

import base64
import http.client
import json
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from citadel_runtime.layout import AGENT_RUN_ROOT
from citadel_runtime.waits import NotYet, WaitExpired, journal, wait_for

REQUEST_TIMEOUT = 15  # seconds; Vault answers a decrypt in milliseconds, a dropped packet should not stall a boot
# Longest pause between tries, seconds. After an outage the agent logs in again (its own
# backoff), then this wait notices its token, then the model server loads: all within 2 min
# of Vault's return. A try costs Vault one request at most (none while there is no token).
RETRY_CAP = 15.0
KEY_BYTES = 32
# Vault is there but cannot answer now: 412 (a standby not caught up), 429 (rate limit or standby).
RETRY_STATUSES = frozenset({412, 429})
# OpenSSL's verify codes for a certificate outside its validity period: the clock may be wrong at boot.
CLOCK_VERIFY_CODES = frozenset({9, 10})  # X509_V_ERR_CERT_NOT_YET_VALID, X509_V_ERR_CERT_HAS_EXPIRED


class TransitError(Exception):
    """A refusal that waiting will not fix, worded for the journal; never carries a secret."""


class Refused(Exception):
    """Vault answered with an HTTP error that is not worth waiting out (its status and messages)."""

    def __init__(self, status: int, errors: str):
        super().__init__(f"HTTP {status}{': ' + errors if errors else ''}")
        self.status = status


def agent_unit(token_file: str) -> str:
    """The agent that writes `token_file`: ``citadel-agent@GROUP`` for its sink, else a generic name."""
    path = Path(token_file)
    if path.parent.parent == Path(AGENT_RUN_ROOT):
        return f"citadel-agent@{path.parent.name}"
    return "the Vault agent"


def read_token(token_file: str) -> str:
    """The agent's current token; :class:`NotYet` while there is none (absent or empty file)."""
    awaited = f"{agent_unit(token_file)}'s token in {token_file}"
    try:
        token = Path(token_file).read_text().strip()
    except FileNotFoundError:
        raise NotYet("no file yet (the agent has not logged in since it started)", what=awaited) from None
    except OSError as exc:
        raise TransitError(f"cannot read the Vault token in {token_file} ({exc.strerror})") from None
    if not token:
        raise NotYet("the file is empty (the agent has not logged in yet)", what=awaited)
    return token


def tls_context(settings: dict) -> ssl.SSLContext:
    try:
        return ssl.create_default_context(cafile=settings["vault_ca"])
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise TransitError(f"cannot read Vault's CA certificate {settings['vault_ca']} ({reason})") from None


def _errors(exc: urllib.error.HTTPError) -> str:
    try:
        # Vault's messages span lines ("1 error occurred:\n\t* ..."): one journal line.
        return " ".join("; ".join(json.loads(exc.read()).get("errors") or []).split())
    except (ValueError, AttributeError, OSError, http.client.HTTPException):
        return ""


def _unreachable(exc: BaseException, settings: dict) -> Exception:
    """What a failure to get any answer means: NotYet, or TransitError for a certificate that will never verify."""
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, ssl.SSLCertVerificationError) and reason.verify_code not in CLOCK_VERIFY_CODES:
        return TransitError(f"Vault at {settings['vault_address']} does not verify with the CA in "
                            f"{settings['vault_ca']}: {reason.verify_message}")
    if isinstance(reason, ssl.SSLCertVerificationError):
        text = f"its certificate is {reason.verify_message} (is this host's clock set?)"
    elif isinstance(reason, OSError) and reason.strerror:
        text = reason.strerror[:1].lower() + reason.strerror[1:]
    else:
        text = str(reason) or type(reason).__name__
    return NotYet(text)


def request(settings: dict, context: ssl.SSLContext, token: str, path: str, body: dict | None = None) -> dict:
    """Vault's JSON answer to one call on ``/v1/PATH`` (POST when `body` is given, else GET).

    Raises :class:`NotYet` when Vault cannot answer now, :class:`Refused` for any other HTTP
    error, :class:`TransitError` for a certificate that does not verify.
    """
    url = f"{settings['vault_address'].rstrip('/')}/v1/{path}"
    data = None if body is None else json.dumps(body).encode()
    headers = {"X-Vault-Token": token, **({"Content-Type": "application/json"} if data else {})}
    call = urllib.request.Request(url, data=data, method="POST" if data else "GET", headers=headers)
    try:
        with urllib.request.urlopen(call, context=context, timeout=REQUEST_TIMEOUT) as response:
            raw = response.read()
    except urllib.error.HTTPError as exc:
        errors = _errors(exc)
        if exc.code >= 500 or exc.code in RETRY_STATUSES:
            raise NotYet(f"HTTP {exc.code}{': ' + errors if errors else ''}") from None
        raise Refused(exc.code, errors) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise _unreachable(exc, settings) from None
    try:
        return json.loads(raw)
    except ValueError:
        return {}


def decrypt(settings: dict, context: ssl.SSLContext, wrapped: str, transit_key: str, key_name: str) -> bytes:
    """One try at the transit decrypt of `wrapped`: the key, or NotYet / TransitError (see the module's lists)."""
    token_file = settings["token_file"]
    token = read_token(token_file)
    path = f"{settings['transit_mount']}/decrypt/{transit_key}"
    try:
        answer = request(settings, context, token, path, {"ciphertext": wrapped})
    except Refused as refused:
        if refused.status == 403 and _stale(settings, context, token):
            raise NotYet(f"Vault no longer accepts the token in {token_file} (expired or revoked)",
                         what=f"{agent_unit(token_file)} to log in again") from None
        raise TransitError(f"Vault refused to unwrap {key_name} ({refused})") from None
    try:
        key = base64.b64decode(answer["data"]["plaintext"])
    except (KeyError, TypeError, ValueError):
        raise TransitError(f"Vault's answer to the unwrap held no {key_name.removeprefix('the ')}") from None
    if len(key) != KEY_BYTES:
        raise TransitError(f"the unwrapped {key_name.removeprefix('the ')} is not {KEY_BYTES} bytes")
    return key


def _stale(settings: dict, context: ssl.SSLContext, token: str) -> bool:
    """Whether Vault refuses `token` itself (expired, revoked), not just this decrypt."""
    try:
        request(settings, context, token, "auth/token/lookup-self")
    except Refused as refused:
        return refused.status == 403
    return False


def unwrap(settings: dict, wrapped: str, transit_key: str, *, key_name: str = "the data key",
           wait_seconds: float | None = None, log: Callable[[str], None] = journal, **waiting) -> bytes:
    """The key `wrapped` holds, from transit ``decrypt`` on `transit_key`; waits while that cannot happen yet.

    Tries are at most RETRY_CAP apart. `wait_seconds` (else the settings' ``wait_seconds``;
    neither: no limit) bounds the wait; `log` gets one line per wait; `waiting` goes to
    :func:`~citadel_runtime.waits.wait_for` (``sleep``, ``clock``: for tests). Raises
    :class:`TransitError`.
    """
    limit = settings.get("wait_seconds") if wait_seconds is None else wait_seconds
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, float)) or limit < 0):
        raise TransitError(f"wait_seconds is {limit!r}, not a number of seconds (0 or more)")
    context = tls_context(settings)
    try:
        return wait_for(f"Vault at {settings['vault_address']} (transit decrypt)",
                        lambda: decrypt(settings, context, wrapped, transit_key, key_name),
                        transient=(NotYet,), cap=RETRY_CAP, deadline=limit, log=log, **waiting)
    except WaitExpired as exc:
        raise TransitError(str(exc)) from None
