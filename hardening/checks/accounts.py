"""Check kinds of the accounts controls (``hardening/controls/accounts.py``)."""

from __future__ import annotations

KINDS: list = []
