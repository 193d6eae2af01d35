"""Check kinds of the services controls (``hardening/controls/services.py``)."""

from __future__ import annotations

KINDS: list = []
