"""Check kinds of the kernel controls (``hardening/controls/kernel.py``)."""

from __future__ import annotations

KINDS: list = []
