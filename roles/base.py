"""The ``base`` role: what every Citadel host has before any other role runs.

It makes Citadel's configuration directory, records which site and groups the host belongs
to (so an auditor on the host can see what it was deployed as), and installs the few tools
later roles rely on (rsync, for resumable model pushes) from the host's own apt sources:
hosts in a hospital network have no internet.

Example::

    citadel deploy -i inventory/lab.yaml --role base
"""

from __future__ import annotations

import io
import json

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import apt, files

from roles import Role

CONFIG_DIR = "/etc/citadel"
HOST_RECORD = f"{CONFIG_DIR}/host.json"
BASE_PACKAGES = ["rsync"]


def host_record(site_name: str, host_name: str, groups: list[str]) -> str:
    """The JSON that says what this host was deployed as. Stable, so reruns are no-ops."""
    record = {"site": site_name, "host": host_name, "groups": sorted(groups), "managed_by": "citadel"}
    return json.dumps(record, indent=2, sort_keys=True) + "\n"


@deploy("Citadel base")
def apply() -> None:
    site = host.data.citadel_site
    entry = site.hosts[host.name]
    files.directory(
        name="Citadel configuration directory",
        path=CONFIG_DIR,
        user="root",
        group="root",
        mode="0755",
    )
    files.put(
        name="Record of what this host is",
        src=io.StringIO(host_record(site.site, host.name, list(entry.groups))),
        dest=HOST_RECORD,
        user="root",
        group="root",
        mode="0644",
    )
    apt.packages(
        name="Base tools from the site's apt repository",
        packages=BASE_PACKAGES,
        no_recommends=True,
        # Refresh the index at most daily, so a rerun the same day is a no-op.
        update=True,
        cache_time=86400,
    )


ROLE = Role(name="base", summary="Citadel's configuration directory and base tools", groups=(), apply=apply)
