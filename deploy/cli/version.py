"""Which Citadel this is: the installed package's version, and the commit when run from a checkout.

Shown by ``citadel --version`` and written into every audit report, so that a report says which
code produced its evidence.

Example::

    >>> from deploy.cli.version import citadel_version
    >>> citadel_version()  # doctest: +SKIP
    '0.1.0 (git 318c2939ab12)'
"""

from __future__ import annotations

import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

# The checkout this module would sit in (an editable install, or `python -m deploy.cli`); an
# installed wheel has no .git beside its packages.
CHECKOUT = Path(__file__).resolve().parents[2]


def citadel_version() -> str:
    """The package version, plus the short commit when this code runs from a git checkout."""
    try:
        text = version("citadel")
    except PackageNotFoundError:  # a checkout run without installing it
        text = "unknown"
    commit = _checkout_commit()
    return f"{text} (git {commit})" if commit else text


def _checkout_commit() -> str | None:
    if not (CHECKOUT / ".git").exists():
        return None
    try:
        done = subprocess.run(
            ["git", "-C", str(CHECKOUT), "rev-parse", "--short=12", "HEAD"],
            capture_output=True, text=True, timeout=5, check=True,
        )
    except (OSError, subprocess.SubprocessError):  # no git, or git refuses the checkout (owner): version alone
        return None
    return done.stdout.strip() or None
