"""The controller's side of the model server: the offline wheelhouse vLLM is installed from."""

from __future__ import annotations


class VllmError(Exception):
    """A problem with the model server's install; the message says what to do."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code
