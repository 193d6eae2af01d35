"""Check kinds of the logging controls (``hardening/controls/logging.py``)."""

from __future__ import annotations

KINDS: list = []
