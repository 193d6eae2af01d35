"""Operations that put secret material on a host without exposing it on the way.

``files.put`` is not safe for secrets: it stages the upload in the SSH user's temporary
directory (world-readable /tmp, umask 022) before ``sudo mv``, and with ``config.DIFF`` it
logs the new content. ``secret_file`` uploads into a 0700 directory in the SSH user's home,
moves the file into place already owned and moded, and compares digests, never contents.
"""

from __future__ import annotations

import hashlib
import io
import posixpath
import shlex

from pyinfra import host
from pyinfra.api import FileUploadCommand, StringCommand, operation
from pyinfra.facts.files import File as FileFact
from pyinfra.facts.files import Sha256File
from pyinfra.facts.server import Home

from deploy.redaction import Secret

UPLOAD_DIR = ".citadel-upload"


@operation()
def secret_file(path: str, secret: Secret, user: str = "root", group: str = "root", mode: str = "0600"):
    """
    Write a secret to ``path``, readable only by ``user``/``group`` as ``mode`` allows.

    + path: absolute path of the file on the host
    + secret: the value, wrapped in ``deploy.redaction.Secret`` (never a plain string)
    + user, group, mode: ownership and permissions the file must have

    No-op when the file already holds the value with the right owner and mode. The value
    never appears in a command line, a log line or a diff.

    **Example:**

    .. code:: python

        secret_file(
            name="Model server API key",
            path="/etc/citadel/vllm/api-key",
            secret=Secret(api_key),
            user="citadel-vllm", group="citadel-vllm", mode="0400",
        )
    """
    if not isinstance(secret, Secret):
        raise TypeError("secret_file needs a deploy.redaction.Secret, not a plain value")
    if not posixpath.isabs(path):
        raise ValueError(f"secret_file path must be absolute, got {path!r}")
    data = secret.reveal().encode()
    wanted = hashlib.sha256(data).hexdigest()
    current = host.get_fact(FileFact, path=path)
    digest = host.get_fact(Sha256File, path=path) if current else None
    # pyinfra's File fact gives the mode as the octal digits read as a decimal int (600).
    mode_ok = bool(current) and int(str(current["mode"]), 8) == int(mode, 8)
    owner_ok = bool(current) and current["user"] == user and current["group"] == group
    if digest == wanted and mode_ok and owner_ok:
        host.noop(f"secret file {path} is up to date")
        return

    # The SSH user's home, not root's: the upload itself runs as the SSH user.
    home = host.get_fact(Home, _sudo=False) or "/tmp"
    staging = posixpath.join(home, UPLOAD_DIR)
    temp = posixpath.join(staging, hashlib.sha256(path.encode()).hexdigest()[:16])
    yield StringCommand(f"umask 077 && mkdir -p {shlex.quote(staging)} && chmod 0700 {shlex.quote(staging)}", _sudo=False)
    # Upload straight to the staging path (remote_temp_filename=None: no /tmp detour).
    yield FileUploadCommand(io.BytesIO(data), temp, _sudo=False)
    parent = posixpath.dirname(path)
    q = shlex.quote
    yield StringCommand(
        f"{{ test -d {q(parent)} || install -d -o root -g root -m 0755 {q(parent)}; }} && "
        f"chown {q(user)}:{q(group)} {q(temp)} && chmod {q(mode)} {q(temp)} && mv -f {q(temp)} {q(path)}"
    )
