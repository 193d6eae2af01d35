"""Errors raised by the lab. Messages are clear, actionable sentences."""


class LabError(Exception):
    """Something about the local lab failed; the message says what to do."""
