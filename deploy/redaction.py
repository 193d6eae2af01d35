"""Keep secret values out of everything Citadel prints or logs.

pyinfra prints through two sinks: the ``pyinfra`` logger (operation names, commands at
``-vv``, errors) and ``pyinfra.api.output.echo`` (command output at ``-vvv``). Its own
masking (``HiddenValue``) only covers values an operation author remembered to wrap, and
exception text and command output are never masked. So every value wrapped in
:class:`Secret` is registered here, and both sinks plus Citadel's own messages pass
through :func:`redact` before anything reaches a terminal, a log file or a report.

Example::

    >>> token = Secret("s3cr3t-value")
    >>> str(token)
    '***'
    >>> redact("connecting with s3cr3t-value")
    'connecting with ***'
"""

from __future__ import annotations

import logging
import threading
from typing import Any

MASK = "***"
# Very short values would turn ordinary words into asterisks and prove nothing.
MIN_SECRET_LENGTH = 6

_lock = threading.Lock()
_secrets: set[str] = set()


class Secret:
    """A secret value: masked in str/repr/format, registered for redaction everywhere.

    Call :meth:`reveal` only at the last moment, where the value is handed to something
    that will not print it (an upload over SFTP, an HTTP body to Vault).
    """

    __slots__ = ("_value",)

    def __init__(self, value: str):
        if not isinstance(value, str) or not value:
            raise ValueError("a secret must be a non-empty string")
        self._value = value
        register(value)

    def reveal(self) -> str:
        return self._value

    def __str__(self) -> str:
        return MASK

    def __repr__(self) -> str:
        return f"Secret({MASK})"

    def __format__(self, spec: str) -> str:
        return MASK

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("citadel-secret", self._value))

    def __reduce__(self):  # never pickled into a cache or a fact
        raise TypeError("Secret values cannot be pickled")


def register(value: str) -> None:
    """Redact `value` from all output from now on (and its lines, if it has several)."""
    with _lock:
        for candidate in {value, *value.splitlines()}:
            candidate = candidate.strip()
            if len(candidate) >= MIN_SECRET_LENGTH:
                _secrets.add(candidate)


def redact(text: Any) -> str:
    """`text` as a string with every registered secret replaced by ``***``."""
    text = str(text)
    with _lock:
        # Longest first, so a secret that contains another is masked whole.
        for secret in sorted(_secrets, key=len, reverse=True):
            if secret in text:
                text = text.replace(secret, MASK)
    return text


class RedactingFilter(logging.Filter):
    """A logging filter that redacts the fully formatted message of every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info:
            # Exception text is where secrets hide most often (a failed command's argv).
            message = f"{message}\n{logging.Formatter().formatException(record.exc_info)}"
            record.exc_info = None
            record.exc_text = None
        record.msg = redact(message)
        record.args = None
        return True
