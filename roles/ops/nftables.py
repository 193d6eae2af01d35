"""Operations for nftables: load a ruleset file, and notice when the live rules drift.

A file-only comparison misses the dangerous case: someone runs ``nft flush ruleset`` or
deletes one rule, and the file on disk still looks right. So after loading, the hash of the
live ruleset (``nft -s list ruleset``: no counters) is recorded, and the operation no-ops
only when both the file and the live rules are what Citadel left.
"""

from __future__ import annotations

import hashlib
import io
import shlex

from pyinfra import host
from pyinfra.api import StringCommand, operation
from pyinfra.facts.files import Sha256File
from pyinfra.operations import files

from roles.facts import LIVE_RULESET_HASH, NftablesHashes
from roles.ops.pyinfra_private import inner

STATE = "/var/lib/citadel/nftables.applied"


@operation()
def ruleset(config: str, path: str = "/etc/nftables.conf"):
    """
    Install ``config`` as the host's nftables ruleset file and load it, checked first.

    + config: the complete ruleset (it should start with ``flush ruleset``)
    + path: where nftables.service reads it at boot

    **Example:**

    .. code:: python

        nftables.ruleset(name="Default-deny firewall", config=render_ruleset(site, host_name))
    """
    wanted = hashlib.sha256(config.encode()).hexdigest()
    on_disk = host.get_fact(Sha256File, path=path)
    hashes = host.get_fact(NftablesHashes, record=STATE)
    if on_disk == wanted and hashes.live and hashes.live == hashes.recorded:
        host.noop("nftables ruleset is loaded and unchanged")
        return
    yield from inner(files.put)(src=io.StringIO(config), dest=path, user="root", group="root", mode="0700")
    q = shlex.quote
    # Check before loading: a syntax error must not leave the host with no firewall at all.
    yield StringCommand(
        f"nft -c -f {q(path)} && nft -f {q(path)} && {{ [ -d /var/lib/citadel ] || install -d -m 0750 /var/lib/citadel; }} && "
        f"{LIVE_RULESET_HASH} > {q(STATE)}"
    )
