"""What the journal says of an unexpected error: where it happened, never what it carried.

An exception raised while handling a request can carry the request's own values in its
message (a `KeyError` names the key, a `ValueError` quotes the text): a prompt's PHI or a
header. The gateway and the keyguard log only the exception's type and the frames it came
through, so a bug report can find the line without the journal holding a client's data.

Example::

    >>> try:
    ...     {}["SSN 123-45-6789"]
    ... except KeyError as exc:
    ...     text = where(exc)
    >>> text.startswith("KeyError at ") and "123-45" not in text
    True
"""

from __future__ import annotations

import traceback
from pathlib import PurePath

FRAMES = 8  # the innermost ones: where it failed, and how it got there


def where(exc: BaseException) -> str:
    """``Type at file.py:LINE in function <- ...``, innermost frame first, without the message."""
    frames = traceback.extract_tb(exc.__traceback__)[-FRAMES:]
    path = " <- ".join(f"{PurePath(f.filename).name}:{f.lineno} in {f.name}" for f in reversed(frames))
    return f"{type(exc).__name__} at {path or 'an unknown place'}"
